// The sealed cookie: round trip, every bad-cookie shape (bit flips in every bit of every byte,
// truncations at every length, wrong name, foreign keys, garbage), rotation, expiry. Real
// AES-256-GCM and real scrypt; nothing mocked.
import { describe, expect, test } from "bun:test";
import { encode } from "./codec.ts";
import { deriveKey, MIN_SEALED_BYTES, SEAL_VERSION, Sealer } from "./seal.ts";

const OLD = "old passphrase, long enough";
const NEW = "new passphrase, long enough too";
const T0 = 1_700_000_000; // unix seconds
const MIN = 60;

const forever = { maxAge: 0, idle: 0 };
const sealer = (keys: string[], name = "session", lifetimes = forever, sessionName = "main") =>
  new Sealer(name, keys.map((p) => deriveKey(sessionName, p)), lifetimes);

/** ~200 bytes of session, as a shop would keep */
const DATA = encode(
  new Map([
    ["user", "alice@example.com"],
    ["role", "admin"],
    ["cart", "sku-1001:2,sku-1002:1,sku-2040:7"],
    ["lang", "ja-JP"],
    ["csrf", "q8TzJ0n5yK3mVb7RcX1wLf9Hs2Dg4Ap6"],
    ["name", "アリス"],
  ]),
);

describe("seal and open", () => {
  test("round trip", () => {
    const s = sealer([NEW]);
    const v = s.seal(DATA, T0, T0 + 5);
    const o = s.open(v, T0 + 10);
    expect(o).toEqual({ status: "ok", data: DATA, issued: T0, lastSeen: T0 + 5, resealNeeded: false });
    expect(s.stats).toMatchObject({ sealed: 1, opened: 1, invalid: 0 });
  });

  test("format: base64url, version byte, key id, 38 bytes of overhead", () => {
    const s = sealer([NEW]);
    const v = s.seal("a=1", T0, T0);
    expect(v).toMatch(/^[A-Za-z0-9_-]+$/);
    const raw = Buffer.from(v, "base64url");
    expect(raw[0]).toBe(SEAL_VERSION);
    expect(raw[1]).toBe(deriveKey("main", NEW).id);
    expect(raw.length).toBe(MIN_SEALED_BYTES + 3);
    expect(sealer([NEW]).seal("", T0, T0).length).toBe(Math.ceil((MIN_SEALED_BYTES * 4) / 3));
  });

  test("a fresh nonce each time: the same session never seals the same twice", () => {
    const s = sealer([NEW]);
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) seen.add(s.seal(DATA, T0, T0));
    expect(seen.size).toBe(200);
    const nonces = new Set([...seen].map((v) => Buffer.from(v, "base64url").subarray(2, 14).toString("hex")));
    expect(nonces.size).toBe(200);
  });

  test("keys are derived once: a second derivation is the cached one", () => {
    const a = deriveKey("main", NEW);
    const t = performance.now();
    const b = deriveKey("main", NEW);
    expect(performance.now() - t).toBeLessThan(5);
    expect(b).toBe(a);
  });

  test("the same passphrase gives another key under another session name", () => {
    const v = sealer([NEW], "session", forever, "main").seal(DATA, T0, T0);
    expect(sealer([NEW], "session", forever, "other").open(v, T0).status).toBe("invalid");
  });
});

describe("every bad cookie is invalid, never an exception", () => {
  const s = sealer([NEW, OLD]);
  const good = s.seal(DATA, T0, T0);
  const raw = Buffer.from(good, "base64url");

  test(`a flip of each bit of each of the ${raw.length} bytes`, () => {
    let tried = 0;
    for (let i = 0; i < raw.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const bad = Buffer.from(raw);
        bad[i]! ^= 1 << bit;
        const o = s.open(bad.toString("base64url"), T0);
        if (o.status !== "invalid" || o.data !== "") throw new Error(`byte ${i} bit ${bit}: ${o.status}`);
        tried++;
      }
    }
    expect(tried).toBe(raw.length * 8);
    // and the genuine one still opens
    expect(s.open(good, T0).status).toBe("ok");
  });

  test("truncated at every length, in bytes and in characters", () => {
    for (let n = 0; n < raw.length; n++) {
      expect(s.open(raw.subarray(0, n).toString("base64url"), T0).status).toBe(n === 0 ? "none" : "invalid");
    }
    for (let n = 1; n < good.length; n++) expect(s.open(good.slice(0, n), T0).status).toBe("invalid");
    for (let n = 1; n < good.length; n++) expect(s.open(good.slice(n), T0).status).toBe("invalid");
  });

  test("extended, or spelt another way", () => {
    expect(s.open(`${good}A`, T0).status).toBe("invalid");
    expect(s.open(`${good}AA`, T0).status).toBe("invalid");
    expect(s.open(Buffer.concat([raw, Buffer.from([0])]).toString("base64url"), T0).status).toBe("invalid");
    expect(s.open(`${good}=`, T0).status).toBe("invalid");
    expect(s.open(raw.toString("base64"), T0).status).toBe(raw.toString("base64") === good ? "ok" : "invalid");
    expect(s.open(` ${good}`, T0).status).toBe("invalid");
    expect(s.open(`"${good}"`, T0).status).toBe("invalid");
    // the last character's unused low bits: the decoder would ignore them, we do not
    const last = good[good.length - 1]!;
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const twin = alphabet[alphabet.indexOf(last) ^ 1]!;
    const sibling = good.slice(0, -1) + twin;
    expect(Buffer.from(sibling, "base64url").equals(raw)).toBe(raw.length % 3 !== 0); // same bytes, other spelling
    expect(s.open(sibling, T0).status).toBe("invalid");
  });

  test("copied under another cookie name (the name is authenticated)", () => {
    const other = new Sealer("session2", [deriveKey("main", NEW), deriveKey("main", OLD)], forever);
    expect(other.open(good, T0).status).toBe("invalid");
    expect(other.open(other.seal(DATA, T0, T0), T0).status).toBe("ok");
  });

  test("sealed with a passphrase we do not have", () => {
    const foreign = sealer(["somebody else's passphrase"]).seal(DATA, T0, T0);
    expect(s.open(foreign, T0).status).toBe("invalid");
  });

  test("key id or version changed (they are authenticated too)", () => {
    for (let id = 0; id < 256; id++) {
      if (id === raw[1]) continue;
      const bad = Buffer.from(raw);
      bad[1] = id;
      expect(s.open(bad.toString("base64url"), T0).status).toBe("invalid");
    }
    const v2 = Buffer.from(raw);
    v2[0] = 2;
    expect(s.open(v2.toString("base64url"), T0).status).toBe("invalid");
  });

  test("garbage", () => {
    const shapes: unknown[] = [
      "x",
      "deleted",
      "null",
      "%00%01",
      "\u0000".repeat(60),
      "A".repeat(52),
      "_".repeat(200),
      "A".repeat(100_000),
      "é".repeat(60),
      "🍣".repeat(30),
      Buffer.alloc(MIN_SEALED_BYTES).toString("base64url"),
      crypto.getRandomValues(Buffer.alloc(64)).toString("base64url"),
      42,
      {},
    ];
    for (const g of shapes) expect(s.open(g as string, T0).status).toBe("invalid");
    for (let i = 0; i < 500; i++) {
      const r = crypto.getRandomValues(Buffer.alloc(MIN_SEALED_BYTES + (i % 80)));
      r[0] = SEAL_VERSION;
      r[1] = raw[1]!;
      expect(s.open(r.toString("base64url"), T0).status).toBe("invalid");
    }
  });

  test("no cookie is none", () => {
    expect(s.open(null, T0).status).toBe("none");
    expect(s.open("", T0).status).toBe("none");
    expect(s.open(undefined, T0).status).toBe("none");
  });

  test("every outcome is counted", () => {
    const c = sealer([NEW]);
    c.open(null, T0);
    c.open("junk", T0);
    c.open(c.seal("a=1", T0, T0), T0);
    expect(c.stats).toEqual({ sealed: 1, opened: 1, resealNeeded: 0, none: 1, invalid: 1, expired: 0 });
  });
});

describe("rotation: the first passphrase seals, all open", () => {
  test("sealed with [old], opened with [new, old]: ok and resealNeeded; then only [new]", () => {
    const before = sealer([OLD]);
    const during = sealer([NEW, OLD]);
    const after = sealer([NEW]);
    const oldCookie = before.seal(DATA, T0, T0);

    const o = during.open(oldCookie, T0 + 1);
    expect(o.status).toBe("ok");
    expect(o.data).toBe(DATA);
    expect(o.resealNeeded).toBe(true);
    expect(during.stats.resealNeeded).toBe(1);

    const resealed = during.seal(o.data, o.issued, T0 + 1);
    expect(Buffer.from(resealed, "base64url")[1]).toBe(deriveKey("main", NEW).id);
    expect(during.open(resealed, T0 + 2)).toMatchObject({ status: "ok", resealNeeded: false, issued: T0 });

    expect(after.open(resealed, T0 + 3).status).toBe("ok");
    expect(after.open(oldCookie, T0 + 3).status).toBe("invalid");
  });

  test("order does not matter for opening: the key id picks the key, the others are tried after", () => {
    const v = sealer([NEW]).seal(DATA, T0, T0);
    expect(sealer([OLD, NEW]).open(v, T0)).toMatchObject({ status: "ok", resealNeeded: true });
  });
});

describe("expiry from the sealed times", () => {
  test("idle: from the last-seen time", () => {
    const s = sealer([NEW], "session", { maxAge: 0, idle: 30 * MIN * 1000 });
    const v = s.seal(DATA, T0, T0 + 10 * MIN);
    expect(s.open(v, T0 + 39 * MIN).status).toBe("ok");
    expect(s.open(v, T0 + 40 * MIN - 1).status).toBe("ok");
    expect(s.open(v, T0 + 40 * MIN)).toMatchObject({ status: "expired", data: "" });
    expect(s.stats.expired).toBe(1);
  });

  test("max_age: from the issue time, however recently seen", () => {
    const s = sealer([NEW], "session", { maxAge: 60 * MIN * 1000, idle: 30 * MIN * 1000 });
    const v = s.seal(DATA, T0, T0 + 59 * MIN);
    expect(s.open(v, T0 + 59 * MIN + 59).status).toBe("ok");
    expect(s.open(v, T0 + 60 * MIN).status).toBe("expired");
  });

  test("an expired cookie sealed with an old key is expired, not resealable", () => {
    const v = sealer([OLD]).seal(DATA, T0, T0);
    const s = sealer([NEW, OLD], "session", { maxAge: 1000, idle: 0 });
    expect(s.open(v, T0 + 1)).toMatchObject({ status: "expired", resealNeeded: false, data: "" });
  });
});
