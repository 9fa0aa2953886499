// The sealed session cookie (`store = "cookie"`): the whole session, encrypted and
// authenticated with AES-256-GCM, so the client can carry it but neither read nor change it.
//
// Keys. Each passphrase is stretched ONCE, when the config is compiled, never per request:
//   master = scrypt(passphrase, salt, 32 bytes, N = 2^15, r = 8, p = 1)   (~32 MiB, ~50-100 ms)
//   salt   = SHA-256("latch session salt v1" 0x00 <session name>)        fixed per session name
//   key    = HKDF-SHA256(master, salt = "", info = "latch session cookie v1", 32 bytes)
//   key id = HKDF-SHA256(master, salt = "", info = "latch session key id v1", 1 byte)
// The salt is fixed so that every Latch process with the same config derives the same key (no
// shared state); it differs per session name, so two [session.NAME] tables sharing a
// passphrase still have different keys. scrypt's cost makes guessing a passphrase from a
// captured cookie expensive; passphrases shorter than 16 characters are refused by config
// compile all the same. Derived keys are cached per (name, passphrase) for the life of the
// process, so a reload with unchanged passphrases does not block the event loop again.
//
// Cookie value = base64url (no padding) of
//   version (1 byte, 0x01) | key id (1 byte) | nonce (12 random bytes) | ciphertext | tag (16 bytes)
// with additional authenticated data = version | key id | "latch session" 0x00 <cookie name>,
// so a cookie copied under another name, or with its header bytes changed, does not open.
// Plaintext = issued (uint32 BE, unix seconds) | last seen (uint32 BE) | the session string
// (mod_session encoding, UTF-8). 38 bytes of overhead: 51 characters plus 4/3 of the data.
// "issued" is when the session was created or last renewed (max_age counts from it); "last
// seen" is when the cookie was last re-issued (idle counts from it).
//
// Random 96-bit nonces: NIST SP 800-38D allows 2^32 seals per key; rotate passphrases long
// before that (a million new cookies a day is 11,000 years).
//
// Rotation: the first passphrase seals; all of them open. open() tries the key whose id byte
// matches first, then the others (ids are one byte and may collide), and reports a cookie
// opened with any key but the first as `resealNeeded`.
//
// open() never throws: anything that is not a cookie we sealed for this name, unchanged, is
// `invalid`, counted in `stats`. Synchronous node:crypto throughout: it is on the request path.

import { createCipheriv, createDecipheriv, createHash, createSecretKey, hkdfSync, type KeyObject, scryptSync } from "node:crypto";

export const SEAL_VERSION = 1;
/** scrypt cost, documented in docs/configuration.md */
export const SCRYPT = Object.freeze({ N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 });
export const MIN_PASSPHRASE_CHARS = 16;

const HEAD = 2; // version, key id
const NONCE = 12;
const TAG = 16;
const TIMES = 8; // issued, last seen
/** smallest sealed value: an empty session */
export const MIN_SEALED_BYTES = HEAD + NONCE + TIMES + TAG;
/** a cookie value longer than this is not ours (browsers keep ~4096 bytes per cookie) */
const MAX_VALUE_CHARS = 8192;

export interface SealKey {
  readonly id: number; // 0..255
  readonly key: KeyObject;
}

const derived = new Map<string, SealKey>();

/** The cookie key for one passphrase of session `sessionName` (slow the first time: scrypt). */
export function deriveKey(sessionName: string, passphrase: string): SealKey {
  const cacheKey = `${sessionName}\u0000${passphrase}`;
  const cached = derived.get(cacheKey);
  if (cached !== undefined) return cached;
  const salt = createHash("sha256").update(`latch session salt v1\u0000${sessionName}`, "utf8").digest();
  const master = scryptSync(passphrase.normalize("NFC"), salt, 32, SCRYPT);
  const key = Buffer.from(hkdfSync("sha256", master, Buffer.alloc(0), "latch session cookie v1", 32));
  const id = Buffer.from(hkdfSync("sha256", master, Buffer.alloc(0), "latch session key id v1", 1))[0]!;
  const out = Object.freeze({ id, key: createSecretKey(key) });
  key.fill(0);
  master.fill(0);
  derived.set(cacheKey, out);
  return out;
}

export type OpenStatus = "ok" | "invalid" | "expired" | "none";

/** open()'s answer; one object per Sealer, overwritten by each call (read it before the next). */
export interface Opened {
  status: OpenStatus;
  /** the session string; "" unless status is "ok" */
  data: string;
  /** unix seconds; 0 unless status is "ok" */
  issued: number;
  lastSeen: number;
  /** opened with a key other than the first: seal it again with the current one */
  resealNeeded: boolean;
}

export interface SealStats {
  sealed: number;
  opened: number; // status ok
  resealNeeded: number; // ok, with an older passphrase
  none: number; // no cookie
  invalid: number; // garbage, tampered, truncated, foreign, wrong name, unknown key
  expired: number;
}

export interface Lifetimes {
  /** absolute lifetime from `issued`, ms; 0 = none */
  readonly maxAge: number;
  /** lifetime from `lastSeen`, ms; 0 = none */
  readonly idle: number;
}

const B64URL = new Uint8Array(128);
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") B64URL[c.charCodeAt(0)] = 1;

/** Only base64url letters, and a length a base64 encoding can have. */
function plausible(value: string): boolean {
  const n = value.length;
  if (n > MAX_VALUE_CHARS || n % 4 === 1) return false;
  for (let i = 0; i < n; i++) {
    const c = value.charCodeAt(i);
    if (c >= 128 || B64URL[c] === 0) return false;
  }
  return true;
}

export class Sealer {
  readonly cookieName: string;
  readonly keys: readonly SealKey[];
  readonly stats: SealStats = { sealed: 0, opened: 0, resealNeeded: 0, none: 0, invalid: 0, expired: 0 };
  private readonly lifetimes: Lifetimes;
  /** AAD = version | key id | "latch session\0" | cookie name; bytes 0 and 1 filled per call */
  private readonly aad: Buffer;
  private readonly result: Opened = { status: "none", data: "", issued: 0, lastSeen: 0, resealNeeded: false };

  /** `keys[0]` seals; all open. Throws only on an empty key list (config compile refuses that first). */
  constructor(cookieName: string, keys: readonly SealKey[], lifetimes: Lifetimes) {
    if (keys.length === 0) throw new Error("a sealed session needs at least one passphrase");
    this.cookieName = cookieName;
    this.keys = keys;
    this.lifetimes = lifetimes;
    this.aad = Buffer.concat([Buffer.alloc(HEAD), Buffer.from(`latch session\u0000${cookieName}`, "utf8")]);
  }

  /** The cookie value for `data` (a session string), issued and last seen at the given unix seconds. */
  seal(data: string, issued: number, lastSeen: number): string {
    const k = this.keys[0]!;
    const plain = Buffer.from(`\0\0\0\0\0\0\0\0${data}`, "utf8");
    plain.writeUInt32BE(clampU32(issued), 0);
    plain.writeUInt32BE(clampU32(lastSeen), 4);
    const nonce = crypto.getRandomValues(Buffer.allocUnsafe(NONCE));
    const aad = this.aad;
    aad[0] = SEAL_VERSION;
    aad[1] = k.id;
    const c = createCipheriv("aes-256-gcm", k.key, nonce, { authTagLength: TAG });
    c.setAAD(aad);
    const body = c.update(plain);
    c.final(); // GCM: nothing buffered
    const out = Buffer.allocUnsafe(HEAD + NONCE + body.length + TAG);
    out[0] = SEAL_VERSION;
    out[1] = k.id;
    out.set(nonce, HEAD);
    out.set(body, HEAD + NONCE);
    out.set(c.getAuthTag(), HEAD + NONCE + body.length);
    this.stats.sealed++;
    return out.toString("base64url");
  }

  /**
   * Opens a cookie value (null: no cookie) at unix time `nowSec`. Never throws. The returned
   * object is reused by the next call.
   */
  open(value: string | null | undefined, nowSec: number): Opened {
    const r = this.result;
    r.status = "invalid";
    r.data = "";
    r.issued = 0;
    r.lastSeen = 0;
    r.resealNeeded = false;
    if (value === null || value === undefined || value.length === 0) {
      r.status = "none";
      this.stats.none++;
      return r;
    }
    let status: OpenStatus;
    try {
      status = this.tryOpen(value, nowSec, r);
    } catch {
      status = "invalid";
    }
    r.status = status;
    if (status === "ok") {
      this.stats.opened++;
      if (r.resealNeeded) this.stats.resealNeeded++;
      return r;
    }
    r.data = "";
    r.resealNeeded = false;
    if (status === "expired") this.stats.expired++;
    else this.stats.invalid++;
    return r;
  }

  private tryOpen(value: string, nowSec: number, r: Opened): OpenStatus {
    if (typeof value !== "string" || !plausible(value)) return "invalid";
    const raw = Buffer.from(value, "base64url");
    if (raw.length < MIN_SEALED_BYTES || raw[0] !== SEAL_VERSION) return "invalid";
    // one spelling only: the decoder ignores stray bits in the last character
    if (raw.toString("base64url") !== value) return "invalid";
    const id = raw[1]!;
    const keys = this.keys;
    let plain: Buffer | null = null;
    let used = -1;
    for (let i = 0; i < keys.length && plain === null; i++) {
      if (keys[i]!.id === id) {
        plain = this.decrypt(keys[i]!, raw);
        used = i;
      }
    }
    for (let i = 0; i < keys.length && plain === null; i++) {
      if (keys[i]!.id !== id) {
        plain = this.decrypt(keys[i]!, raw);
        used = i;
      }
    }
    if (plain === null) return "invalid";
    const issued = plain.readUInt32BE(0);
    const lastSeen = plain.readUInt32BE(4);
    const data = plain.toString("utf8", TIMES);
    r.issued = issued;
    r.lastSeen = lastSeen;
    r.resealNeeded = used !== 0;
    const { maxAge, idle } = this.lifetimes;
    if ((maxAge > 0 && (nowSec - issued) * 1000 >= maxAge) || (idle > 0 && (nowSec - lastSeen) * 1000 >= idle)) {
      return "expired";
    }
    r.data = data;
    return "ok";
  }

  /** plaintext, or null when this key does not authenticate the value */
  private decrypt(k: SealKey, raw: Buffer): Buffer | null {
    const aad = this.aad;
    aad[0] = raw[0]!;
    aad[1] = raw[1]!;
    const end = raw.length - TAG;
    try {
      const d = createDecipheriv("aes-256-gcm", k.key, raw.subarray(HEAD, HEAD + NONCE), { authTagLength: TAG });
      d.setAAD(aad);
      d.setAuthTag(raw.subarray(end));
      const plain = d.update(raw.subarray(HEAD + NONCE, end));
      d.final(); // throws when the tag does not match
      return plain;
    } catch {
      return null;
    }
  }
}

function clampU32(sec: number): number {
  return sec <= 0 ? 0 : sec >= 0xffffffff ? 0xffffffff : Math.floor(sec);
}
