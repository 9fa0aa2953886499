// The learned-stickiness table (SPEC §4 modes learn / source / header / param): session key
// bytes -> server index, with idle expiry, fixed capacity and no per-entry JS objects.
// Hot path (lookup, store, their string forms, delete): synchronous, no allocation, no
// closures, never throws.
//
// Layout. One preallocated Int32Array, one record of `stride` words per slot, so a probe
// touches one or two cache lines instead of one per field array:
//   word 0   xxHash32 of the (truncated) key, | 0   compared first
//   word 1   last seen, seconds since `epoch`        idle expiry and staleness
//   word 2   (server + 1) | (keyLength << 16)          0 = empty slot
//   word 3.. key bytes (a Uint8Array view of the same buffer), maxKeyLen rounded up to 4
// Slots = ceil(capacity / LOAD); the home slot is the hash's high bits scaled to the slot
// count (multiply-shift, so the count need not be a power of two: at 1M entries with 32-byte
// keys a power of two would cost 92 MB instead of 59 MB).
//
// Probing is linear and bounded: an entry always sits within PROBE slots of its home, so a
// lookup reads at most PROBE records and stops early at an empty slot. Deletion shifts the
// following entries of the cluster back (no tombstones), which keeps "stop at the first empty
// slot" correct and clusters short.
//
// Eviction. A new key whose window of PROBE slots is full takes the place of the stalest
// entry in that window (counted in stats.evictions). `size` never exceeds `capacity`: when the
// table holds `capacity` entries, a new key takes the place of the stalest entry in its window
// (an approximate LRU by sampling, as Redis does; an exact one would need a list per entry).
//
// Expiry without a timer per entry: an entry idle for more than timeoutSec whole seconds counts
// as absent on
// lookup (never early: the clock has one-second steps, so it lasts timeoutSec to timeoutSec+1 s;
// it is removed then), its slot is reused by the next insert that probes it, and
// sweep() walks a bounded number of slots per call for the rest (called from a coarse timer by
// whoever owns the table). Each removal of an expired entry counts once in stats.expirations.
// stats.size counts occupied slots, including expired entries nobody has touched yet.
//
// Time. Callers pass whole seconds in any clock they like (clock.sec in the proxy); they are
// stored relative to `epoch`, fixed at the first store as nowSec - 2^30, so 31 bits cover
// 34 years either side of it (and every stored time is a small int for the JIT). Fractions
// are truncated (pass whole seconds).
//
// Keys. Keys longer than maxKeyLen are truncated to their first maxKeyLen bytes, as HAProxy
// appsession's `len` does. String keys are taken as latin1 (each UTF-16 code unit <= 0xff is
// one byte), so a key from `buf.latin1Slice(a, b)` and the bytes buf[a, b) are the same entry;
// a string with a code unit > 0xff among its first maxKeyLen units is UTF-8 encoded instead
// (allocates: such strings never come out of a head).
//
// Replication (global.workers > 1, src/state/table-replication.ts): `onLearn`, when set, is
// called by store() for a key that is new or bound to another server, or whose last-seen was
// more than timeoutSec / 2 old, and by lookup() on a hit whose last-seen was more than
// timeoutSec / 2 old (a refresh, so that copies in other processes do not expire while the
// session is active here: at most ~2 calls per timeout period per active key). The key is a
// copy. applyRemote() stores what another process learned without calling it (no echo).
// Unset (null), it costs one comparison per hit and per store.
//
// Server indexes are 0..65534. Anything else (negative, fractional, too large) is ignored by
// store() and counted in stats.refused: the hot path never throws.

import { Packr } from "msgpackr";
import { hashKey } from "./balance.ts";

/** Entries per slot at most. Filling to capacity with PROBE 32 evicts ~0.3% of keys early
 * (windows that filled up); the table's bytes stay under SPEC §9's 64 MB for 1M x 32 bytes. */
const LOAD = 0.75;
/** Longest probe: records read by a lookup, and the window searched on insert. */
export const PROBE = 32;
/** Largest server index a table can hold (0xffff + 1 would not fit the 16-bit field). */
export const MAX_SERVER = 0xfffe;
/** Longest maxKeyLen accepted (the length field has 16 bits; nothing real needs more). */
export const MAX_KEY_LEN = 4096;
const HEADROOM = 2 ** 30;
const T_MAX = 0x7fffffff;
/** put(): a new key or a re-bind; the entry was left alone (keepNewer). */
const CHANGED = -1;
const KEPT = -2;

export const SNAPSHOT_KIND = "latch-session-table";
export const SNAPSHOT_VERSION = 1;

export interface SessionTableOptions {
  /** Most entries held at once (size never exceeds it). */
  capacity: number;
  /** Bytes of key kept (HAProxy appsession `len`); longer keys are truncated. */
  maxKeyLen: number;
  /** Idle seconds after which an entry counts as absent; 0 or Infinity: never. */
  timeoutSec: number;
}

export interface SessionTableStats {
  /** Occupied slots (live entries plus expired ones not yet removed). */
  size: number;
  hits: number;
  misses: number;
  /** New keys stored (including a key whose old entry had expired). */
  inserts: number;
  /** Live entries removed to make room. */
  evictions: number;
  /** Expired entries removed (by lookup, insert, sweep). */
  expirations: number;
  /** Existing live key stored again with a different server. */
  rebinds: number;
  /** store() calls ignored because the server index was out of range. */
  refused: number;
}

const packr = new Packr({ useRecords: false, moreTypes: false });

/**
 * buf[start, start + len) equals the key stored from word `at` of `w` (bytes: `bytes`). Four
 * bytes per step against the table's aligned words (little-endian, as the Uint8Array view of a
 * Int32Array is on every platform Bun runs on), then the tail byte by byte.
 */
function keyEq(w: Int32Array, bytes: Uint8Array, at: number, buf: Uint8Array, start: number, len: number): boolean {
  const whole = start + (len & ~3);
  let p = start;
  let q = at;
  for (; p < whole; p += 4, q++) {
    if ((buf[p]! | (buf[p + 1]! << 8) | (buf[p + 2]! << 16) | (buf[p + 3]! << 24)) !== w[q]) return false;
  }
  const end = start + len;
  let o = q * 4;
  for (; p < end; p++, o++) {
    if (buf[p] !== bytes[o]) return false;
  }
  return true;
}

export class SessionTable {
  readonly capacity: number;
  readonly maxKeyLen: number;
  readonly timeoutSec: number;
  /** Number of slots (> capacity). */
  readonly slots: number;
  readonly stats: SessionTableStats = {
    size: 0,
    hits: 0,
    misses: 0,
    inserts: 0,
    evictions: 0,
    expirations: 0,
    rebinds: 0,
    refused: 0,
  };

  /** Records: `stride` words per slot (see the top of the file); int32 so that every read
   * stays a small integer in the JIT (hashes are stored as `h | 0`, times below 2^31). */
  private readonly words: Int32Array;
  /** Byte view of `words`, for the keys. */
  private readonly bytes: Uint8Array;
  private readonly stride: number;
  private readonly scale: number;
  private readonly probe: number;
  /** timeoutSec, with "never" as Infinity so the expiry test needs no branch. */
  private readonly timeout: number;
  /** Seconds that stored times are relative to; NaN until the first store. */
  private epoch = NaN;
  /** Where sweep() resumes. */
  private sweepAt = 0;
  /** Where the rare fallback eviction resumes (see victimFromHand). */
  private hand = 0;
  /** String keys are copied here, and `keyBuf` points at it (or at a UTF-8 copy). */
  private readonly scratch: Uint8Array;
  private keyBuf: Uint8Array;
  /** Half the timeout (Infinity: never): a hit or store older than this calls onLearn. */
  private readonly half: number;
  /** Replication hook (see the top of the file); null: no replication. */
  onLearn: ((key: Uint8Array, server: number, nowSec: number) => void) | null = null;

  constructor(opts: SessionTableOptions) {
    const { capacity, maxKeyLen, timeoutSec } = opts;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 2 ** 28) {
      throw new RangeError(`SessionTable: capacity must be an integer in 1..${2 ** 28}, got ${capacity}`);
    }
    if (!Number.isInteger(maxKeyLen) || maxKeyLen < 1 || maxKeyLen > MAX_KEY_LEN) {
      throw new RangeError(`SessionTable: maxKeyLen must be an integer in 1..${MAX_KEY_LEN}, got ${maxKeyLen}`);
    }
    if (!(timeoutSec >= 0)) {
      throw new RangeError(`SessionTable: timeoutSec must be >= 0 (0 = never), got ${timeoutSec}`);
    }
    this.capacity = capacity;
    this.maxKeyLen = maxKeyLen;
    this.timeoutSec = timeoutSec;
    this.timeout = timeoutSec === 0 ? Infinity : timeoutSec;
    this.half = this.timeout / 2;
    const slots = Math.max(Math.ceil(capacity / LOAD), capacity + 1);
    this.slots = slots;
    this.stride = 3 + ((maxKeyLen + 3) >>> 2);
    const byteLen = slots * this.stride * 4;
    if (byteLen > 2 ** 32) {
      throw new RangeError(`SessionTable: ${capacity} entries of ${maxKeyLen} bytes need ${byteLen} bytes, over 4 GiB`);
    }
    this.words = new Int32Array(slots * this.stride);
    this.bytes = new Uint8Array(this.words.buffer);
    this.scale = slots / 4294967296;
    this.probe = Math.min(PROBE, slots);
    this.scratch = new Uint8Array(maxKeyLen);
    this.keyBuf = this.scratch;
  }

  /** Bytes held by the table's typed arrays. */
  memoryBytes(): number {
    return this.words.byteLength + this.scratch.byteLength;
  }

  // -------------------------------------------------------------------------------------------
  // Hot path

  /** Server bound to buf[start, end) (truncated to maxKeyLen), or -1. A hit refreshes last-seen. */
  lookup(buf: Uint8Array, start: number, end: number, nowSec: number): number {
    if (end - start > this.maxKeyLen) end = start + this.maxKeyLen;
    const len = end - start;
    const h = hashKey(buf, start, end) | 0;
    const w = this.words;
    const S = this.stride;
    const n = this.slots;
    let i = ((h >>> 0) * this.scale) >>> 0;
    for (let d = this.probe; d > 0; d--) {
      const b = i * S;
      const meta = w[b + 2]!;
      if (meta === 0) break;
      if (w[b] === h && meta >>> 16 === len && keyEq(w, this.bytes, b + 3, buf, start, len)) {
        const now = nowSec - this.epoch;
        if (now - w[b + 1]! > this.timeout) {
          this.stats.expirations++;
          this.stats.misses++;
          this.removeAt(i);
          return -1;
        }
        const last = w[b + 1]!;
        // Written only when it changes: most hits fall in the same second, and a clean cache
        // line costs nothing to evict.
        if (now !== last) w[b + 1] = now < 0 ? 0 : now > T_MAX ? T_MAX : now;
        this.stats.hits++;
        if (this.onLearn !== null && now - last > this.half) this.onLearn(buf.slice(start, end), (meta & 0xffff) - 1, nowSec);
        return (meta & 0xffff) - 1;
      }
      if (++i === n) i = 0;
    }
    this.stats.misses++;
    return -1;
  }

  lookupString(key: string, nowSec: number): number {
    const len = this.keyFromString(key);
    return this.lookup(this.keyBuf, 0, len, nowSec);
  }

  /**
   * Binds buf[start, end) (truncated to maxKeyLen) to `server`, refreshing last-seen. A new key
   * may evict the stalest entry of its probe window (stats.evictions). An out-of-range server
   * is ignored (stats.refused).
   */
  store(buf: Uint8Array, start: number, end: number, server: number, nowSec: number): void {
    if (!(server >= 0 && server <= MAX_SERVER) || (server | 0) !== server) {
      this.stats.refused++;
      return;
    }
    if (this.epoch !== this.epoch) this.epoch = Math.floor(nowSec) - HEADROOM;
    if (end - start > this.maxKeyLen) end = start + this.maxKeyLen;
    let now = nowSec - this.epoch;
    now = now < 0 ? 0 : now > T_MAX ? T_MAX : now;
    const prev = this.put(buf, start, end - start, hashKey(buf, start, end) | 0, server, now, false);
    if (this.onLearn !== null && (prev === CHANGED || now - prev > this.half)) this.onLearn(buf.slice(start, end), server, nowSec);
  }

  /**
   * What another process learned (replication): binds key (truncated to maxKeyLen) to
   * `server` as seen at `nowSec`, unless the entry here was seen later. Never calls onLearn.
   * An out-of-range server is ignored (stats.refused).
   */
  applyRemote(key: Uint8Array, server: number, nowSec: number): void {
    if (!(server >= 0 && server <= MAX_SERVER) || (server | 0) !== server || !Number.isFinite(nowSec)) {
      this.stats.refused++;
      return;
    }
    if (this.epoch !== this.epoch) this.epoch = Math.floor(nowSec) - HEADROOM;
    const len = key.length > this.maxKeyLen ? this.maxKeyLen : key.length;
    const t = nowSec - this.epoch;
    this.put(key, 0, len, hashKey(key, 0, len) | 0, server, t < 0 ? 0 : t > T_MAX ? T_MAX : t, true);
  }

  storeString(key: string, server: number, nowSec: number): void {
    const len = this.keyFromString(key);
    this.store(this.keyBuf, 0, len, server, nowSec);
  }

  /** Removes buf[start, end) (truncated to maxKeyLen); true if it was in the table (even expired). */
  delete(buf: Uint8Array, start: number, end: number): boolean {
    if (end - start > this.maxKeyLen) end = start + this.maxKeyLen;
    const len = end - start;
    const h = hashKey(buf, start, end) | 0;
    const w = this.words;
    const S = this.stride;
    const n = this.slots;
    let i = ((h >>> 0) * this.scale) >>> 0;
    for (let d = this.probe; d > 0; d--) {
      const b = i * S;
      const meta = w[b + 2]!;
      if (meta === 0) return false;
      if (w[b] === h && meta >>> 16 === len && keyEq(w, this.bytes, b + 3, buf, start, len)) {
        this.removeAt(i);
        return true;
      }
      if (++i === n) i = 0;
    }
    return false;
  }

  deleteString(key: string): boolean {
    const len = this.keyFromString(key);
    return this.delete(this.keyBuf, 0, len);
  }

  // -------------------------------------------------------------------------------------------
  // Housekeeping

  /** Empties the table. Counters other than size are kept (they are cumulative). */
  clear(): void {
    this.words.fill(0);
    this.stats.size = 0;
    this.sweepAt = 0;
    this.hand = 0;
  }

  /**
   * Walks maxSlots slots from where the previous call stopped and removes the expired entries
   * found; returns how many. sweep(now, table.slots) covers the whole table. Call it from a coarse timer, e.g. slots/60 every second
   * to cover the table each minute.
   */
  sweep(nowSec: number, maxSlots: number): number {
    if (this.stats.size === 0 || this.timeout === Infinity) return 0;
    const w = this.words;
    const S = this.stride;
    const n = this.slots;
    const now = nowSec - this.epoch;
    const timeout = this.timeout;
    let i = this.sweepAt;
    let expired = 0;
    for (let k = 0; k < maxSlots; ) {
      const b = i * S;
      if (w[b + 2] !== 0 && now - w[b + 1]! > timeout) {
        // The shift may move a later entry into slot i: look at i again (bounded: each
        // removal shrinks the table).
        this.removeAt(i);
        expired++;
      } else {
        if (++i === n) i = 0;
        k++;
      }
    }
    this.sweepAt = i;
    this.stats.expirations += expired;
    return expired;
  }

  /**
   * Every occupied slot as [key copy, server, last seen (caller's seconds)]; with nowSec, only
   * live entries. Not for the hot path (allocates per entry); the table must not be changed
   * while iterating.
   */
  *entries(nowSec?: number): IterableIterator<[key: Uint8Array, server: number, lastSeenSec: number]> {
    const w = this.words;
    const S = this.stride;
    const now = nowSec === undefined ? NaN : nowSec - this.epoch;
    for (let i = 0; i < this.slots; i++) {
      const b = i * S;
      const meta = w[b + 2]!;
      if (meta === 0) continue;
      if (now - w[b + 1]! > this.timeout) continue; // false when now is NaN
      const off = (b + 3) * 4;
      yield [this.bytes.slice(off, off + (meta >>> 16)), (meta & 0xffff) - 1, this.epoch + w[b + 1]!];
    }
  }

  // -------------------------------------------------------------------------------------------
  // Snapshots (surviving a restart)

  /**
   * msgpack of { v: 1, kind: "latch-session-table", maxKeyLen, savedAt, entries } where
   * entries are [keyBytes, server, lastSeenSec] for the live entries only.
   */
  snapshot(nowSec: number): Uint8Array {
    const w = this.words;
    const S = this.stride;
    const now = nowSec - this.epoch;
    const list: [Uint8Array, number, number][] = [];
    if (this.stats.size > 0) {
      for (let i = 0; i < this.slots; i++) {
        const b = i * S;
        const meta = w[b + 2]!;
        if (meta === 0 || now - w[b + 1]! > this.timeout) continue;
        const off = (b + 3) * 4;
        list.push([this.bytes.subarray(off, off + (meta >>> 16)), (meta & 0xffff) - 1, this.epoch + w[b + 1]!]);
      }
    }
    return packr.pack({
      v: SNAPSHOT_VERSION,
      kind: SNAPSHOT_KIND,
      maxKeyLen: this.maxKeyLen,
      savedAt: nowSec,
      entries: list,
    });
  }

  /**
   * Loads a snapshot into this table, merging with what is there (an entry already in the
   * table with a later last-seen wins; call clear() first to replace). Entries idle past the
   * timeout, with a server index out of range, or refused by serverOk are dropped. Keys longer
   * than this table's maxKeyLen are truncated. Throws an Error naming the problem when the data
   * is not a snapshot this version wrote; nothing is loaded then.
   */
  restore(data: Uint8Array, nowSec: number, serverOk?: (i: number) => boolean): { loaded: number; dropped: number } {
    let doc: unknown;
    try {
      doc = packr.unpack(data);
    } catch (e) {
      throw new Error(`session table snapshot is corrupt: not msgpack (${(e as Error).message})`);
    }
    if (doc === null || typeof doc !== "object" || Array.isArray(doc)) {
      throw new Error("session table snapshot is foreign: not a map");
    }
    const o = doc as Record<string, unknown>;
    if (o.kind !== SNAPSHOT_KIND) {
      throw new Error(`session table snapshot is foreign: kind ${JSON.stringify(o.kind)}, expected "${SNAPSHOT_KIND}"`);
    }
    if (o.v !== SNAPSHOT_VERSION) {
      throw new Error(`session table snapshot has version ${JSON.stringify(o.v)}; this Latch reads version ${SNAPSHOT_VERSION}`);
    }
    if (!Number.isInteger(o.maxKeyLen) || !Array.isArray(o.entries)) {
      throw new Error("session table snapshot is corrupt: maxKeyLen or entries missing");
    }
    const list = o.entries as unknown[];
    for (let k = 0; k < list.length; k++) {
      const e = list[k];
      if (
        !Array.isArray(e) ||
        e.length !== 3 ||
        !(e[0] instanceof Uint8Array) ||
        !Number.isInteger(e[1]) ||
        typeof e[2] !== "number" ||
        !Number.isFinite(e[2])
      ) {
        throw new Error(`session table snapshot is corrupt: entry ${k} is not [bytes, server, lastSeen]`);
      }
    }

    if (this.epoch !== this.epoch) this.epoch = Math.floor(nowSec) - HEADROOM;
    let loaded = 0;
    let dropped = 0;
    for (let k = 0; k < list.length; k++) {
      const [key, server, lastSeen] = list[k] as [Uint8Array, number, number];
      const seen = lastSeen > nowSec ? nowSec : lastSeen; // a clock that went back
      if (
        nowSec - seen > this.timeout ||
        server < 0 ||
        server > MAX_SERVER ||
        (serverOk !== undefined && !serverOk(server))
      ) {
        dropped++;
        continue;
      }
      const len = key.length > this.maxKeyLen ? this.maxKeyLen : key.length;
      const t = seen - this.epoch;
      this.put(key, 0, len, hashKey(key, 0, len) | 0, server, t < 0 ? 0 : t > T_MAX ? T_MAX : t, true);
      loaded++;
    }
    return { loaded, dropped };
  }

  // -------------------------------------------------------------------------------------------
  // Internals

  /**
   * Insert or re-bind. `now` is relative to epoch and clamped. With keepNewer (restore), an
   * entry already present with a later last-seen is left alone. Returns CHANGED for a new key
   * or a re-bind, KEPT when keepNewer left the entry alone, else the entry's previous
   * last-seen (same server, refreshed).
   */
  private put(buf: Uint8Array, start: number, len: number, h: number, server: number, now: number, keepNewer: boolean): number {
    const w = this.words;
    const S = this.stride;
    const n = this.slots;
    const probe = this.probe;
    const timeout = this.timeout;
    const stats = this.stats;
    const metaNew = (server + 1) | (len << 16);
    const home = ((h >>> 0) * this.scale) >>> 0;
    let i = home;
    let d = 0;
    let empty = -1;
    let expired = -1;
    let stalest = -1;
    let stalestT = Infinity;
    for (; d < probe; d++) {
      const b = i * S;
      const meta = w[b + 2]!;
      if (meta === 0) {
        empty = i;
        break;
      }
      const last = w[b + 1]!;
      if (w[b] === h && meta >>> 16 === len && keyEq(w, this.bytes, b + 3, buf, start, len)) {
        let r = last;
        if (now - last > timeout) {
          stats.expirations++;
          stats.inserts++;
          r = CHANGED;
        } else if (keepNewer && last > now) {
          return KEPT;
        } else if ((meta & 0xffff) - 1 !== server) {
          stats.rebinds++;
          r = CHANGED;
        }
        w[b + 1] = now;
        w[b + 2] = metaNew;
        return r;
      }
      if (expired < 0 && now - last > timeout) expired = i;
      if (last < stalestT) {
        stalestT = last;
        stalest = i;
      }
      if (++i === n) i = 0;
    }

    // A new key.
    stats.inserts++;
    if (expired >= 0) {
      stats.expirations++;
      this.write(expired, buf, start, len, h, metaNew, now);
      return CHANGED;
    }
    if (empty < 0) {
      // The whole window is one cluster: the stalest in it makes room.
      stats.evictions++;
      this.write(stalest, buf, start, len, h, metaNew, now);
      return CHANGED;
    }
    if (stats.size < this.capacity) {
      stats.size++;
      this.write(empty, buf, start, len, h, metaNew, now);
      return CHANGED;
    }

    // Full: someone in the window must go. Candidates before `empty` were seen above; look at
    // the rest of the window too (other clusters), preferring an expired entry.
    let victim = stalest;
    let victimExpired = false;
    let victimAfter = false;
    if (++i === n) i = 0;
    for (d++; d < probe; d++) {
      const b = i * S;
      if (w[b + 2] !== 0) {
        const last = w[b + 1]!;
        if (now - last > timeout) {
          victim = i;
          victimExpired = true;
          victimAfter = true;
          break;
        }
        if (last < stalestT) {
          stalestT = last;
          victim = i;
          victimAfter = true;
        }
      }
      if (++i === n) i = 0;
    }
    if (victim < 0) {
      // The window holds nothing at all (a few empty stretches in a full table): anyone.
      victim = this.victimFromHand();
      victimAfter = true;
      victimExpired = now - w[victim * S + 1]! > timeout;
    }
    if (victimExpired) stats.expirations++;
    else stats.evictions++;
    if (!victimAfter) {
      // In the key's own cluster, before `empty`: take its place.
      this.write(victim, buf, start, len, h, metaNew, now);
      return CHANGED;
    }
    // In another cluster: remove it (its shift cannot reach `empty`, which is not in that
    // cluster), then use `empty`.
    this.removeAt(victim);
    stats.size++;
    this.write(empty, buf, start, len, h, metaNew, now);
    return CHANGED;
  }

  private write(i: number, buf: Uint8Array, start: number, len: number, h: number, meta: number, now: number): void {
    const w = this.words;
    const b = i * this.stride;
    w[b] = h;
    w[b + 1] = now;
    w[b + 2] = meta;
    const bytes = this.bytes;
    const off = (b + 3) * 4;
    for (let k = 0; k < len; k++) bytes[off + k] = buf[start + k]!;
  }

  /** Empties slot i and shifts the rest of its cluster back (no tombstones). size--. */
  private removeAt(i: number): void {
    const w = this.words;
    const S = this.stride;
    const n = this.slots;
    const scale = this.scale;
    let j = i;
    for (;;) {
      if (++j === n) j = 0;
      const bj = j * S;
      if (w[bj + 2] === 0) break;
      const home = ((w[bj]! >>> 0) * scale) >>> 0;
      // The entry at j may move to the hole at i when its home is not in (i, j] (cyclically).
      if (i <= j ? home <= i || home > j : home <= i && home > j) {
        w.copyWithin(i * S, bj, bj + S);
        i = j;
      }
    }
    w[i * S + 2] = 0;
    this.stats.size--;
  }

  /** Next occupied slot from a rotating hand; only when a full table left a window empty. */
  private victimFromHand(): number {
    const w = this.words;
    const S = this.stride;
    const n = this.slots;
    let i = this.hand;
    for (let k = 0; k < n; k++) {
      if (w[i * S + 2] !== 0) {
        this.hand = i + 1 === n ? 0 : i + 1;
        return i;
      }
      if (++i === n) i = 0;
    }
    return 0; // unreachable: called only when size == capacity >= 1
  }

  /** Puts the bytes of `key` (see the top of the file) in keyBuf; returns their length. */
  private keyFromString(key: string): number {
    const max = this.maxKeyLen;
    const len = key.length < max ? key.length : max;
    const s = this.scratch;
    for (let k = 0; k < len; k++) {
      const c = key.charCodeAt(k);
      if (c > 0xff) {
        const utf8 = Buffer.from(key, "utf8");
        this.keyBuf = utf8;
        return utf8.length < max ? utf8.length : max;
      }
      s[k] = c;
    }
    this.keyBuf = s;
    return len;
  }
}
