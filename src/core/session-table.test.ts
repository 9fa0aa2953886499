// SessionTable: the learned-stickiness table (SPEC §4). Times are passed explicitly; nothing
// here waits or measures speed (bench/persist/session-table.bench.ts does).

import { describe, expect, test } from "bun:test";
import { Packr } from "msgpackr";
import { hashKey } from "./balance.ts";
import { MAX_SERVER, PROBE, SessionTable } from "./session-table.ts";

const enc = new TextEncoder();
const b = (s: string) => enc.encode(s);

function table(capacity = 1024, maxKeyLen = 64, timeoutSec = 3600): SessionTable {
  return new SessionTable({ capacity, maxKeyLen, timeoutSec });
}

function look(t: SessionTable, key: string, now: number): number {
  const k = b(key);
  return t.lookup(k, 0, k.length, now);
}

function put(t: SessionTable, key: string, server: number, now: number): void {
  const k = b(key);
  t.store(k, 0, k.length, server, now);
}

/** The slot a key hashes to (same formula as the table). */
function homeOf(t: SessionTable, key: Uint8Array): number {
  return (hashKey(key, 0, key.length) * (t.slots / 4294967296)) >>> 0;
}

/** `count` distinct keys that all hash to the same home slot. */
function collidingKeys(t: SessionTable, count: number): Uint8Array[] {
  const byHome = new Map<number, Uint8Array[]>();
  for (let i = 0; ; i++) {
    const k = b(`sess-${i}`);
    const h = homeOf(t, k);
    let list = byHome.get(h);
    if (list === undefined) byHome.set(h, (list = []));
    list.push(k);
    if (list.length === count) return list;
  }
}

/** A 32-byte key from an index (distinct for distinct i < 2^32). */
function key32(i: number, out = new Uint8Array(32)): Uint8Array {
  for (let j = 0; j < 32; j += 4) {
    const v = Math.imul(i ^ (j * 0x01000193), 0x9e3779b1) ^ i;
    out[j] = v;
    out[j + 1] = v >>> 8;
    out[j + 2] = v >>> 16;
    out[j + 3] = v >>> 24;
  }
  out[0] = i;
  out[1] = i >>> 8;
  out[2] = i >>> 16;
  out[3] = i >>> 24;
  return out;
}

describe("session-table: store and lookup", () => {
  test("store, lookup, rebind, delete, with exact counters", () => {
    const t = table();
    expect(look(t, "abc", 100)).toBe(-1);
    put(t, "abc", 2, 100);
    put(t, "def", 0, 100);
    expect(look(t, "abc", 101)).toBe(2);
    expect(look(t, "def", 101)).toBe(0);
    expect(look(t, "ab", 101)).toBe(-1);
    expect(look(t, "abcd", 101)).toBe(-1);

    put(t, "abc", 2, 102); // same server: a refresh, not a rebind
    put(t, "abc", 3, 103); // Pound: a re-issued cookie re-binds
    expect(look(t, "abc", 104)).toBe(3);

    const k = b("abc");
    expect(t.delete(k, 0, k.length)).toBe(true);
    expect(t.delete(k, 0, k.length)).toBe(false);
    expect(look(t, "abc", 105)).toBe(-1);
    expect(t.deleteString("def")).toBe(true);

    expect(t.stats).toEqual({
      size: 0,
      hits: 3,
      misses: 4,
      inserts: 2,
      evictions: 0,
      expirations: 0,
      rebinds: 1,
      refused: 0,
    });
  });

  test("keys are byte ranges inside a larger buffer", () => {
    const t = table();
    const head = b("Cookie: PHPSESSID=0123456789abcdef; lang=en\r\n");
    const s = 18;
    const e = s + 16;
    t.store(head, s, e, 5, 10);
    expect(t.lookupString("0123456789abcdef", 11)).toBe(5);
    expect(t.lookup(b("xx0123456789abcdefyy"), 2, 18, 12)).toBe(5);
  });

  test("string keys are latin1 bytes, so they meet keys read from a head", () => {
    const t = table();
    const bytes = new Uint8Array([0x61, 0xe9, 0xff, 0x80, 0x7a]);
    t.store(bytes, 0, bytes.length, 7, 1);
    expect(t.lookupString(Buffer.from(bytes).latin1Slice(0, bytes.length), 2)).toBe(7);
    t.storeString("client-10.0.0.1", 1, 3);
    const k = b("client-10.0.0.1");
    expect(t.lookup(k, 0, k.length, 4)).toBe(1);
    // Beyond latin1: UTF-8 bytes.
    t.storeString("clé-☃", 4, 5);
    const u = b("clé-☃");
    expect(t.lookup(u, 0, u.length, 6)).toBe(4);
    expect(t.lookupString("clé-☃", 6)).toBe(4);
  });

  test("an empty key is a key like any other", () => {
    const t = table();
    t.store(new Uint8Array(0), 0, 0, 1, 1);
    expect(t.lookupString("", 2)).toBe(1);
    expect(look(t, "x", 2)).toBe(-1);
  });

  test("keys are truncated to maxKeyLen, as HAProxy appsession len", () => {
    const t = table(64, 8);
    put(t, "ABCDEFGH-first-session", 1, 10);
    expect(look(t, "ABCDEFGH", 11)).toBe(1);
    expect(look(t, "ABCDEFGH-anything-else", 11)).toBe(1);
    expect(t.lookupString("ABCDEFGHxyz", 11)).toBe(1);
    expect(look(t, "ABCDEFG", 11)).toBe(-1);
    put(t, "ABCDEFGH-second", 2, 12); // same first 8 bytes: a rebind of the same entry
    expect(t.stats.size).toBe(1);
    expect(t.stats.rebinds).toBe(1);
    const [[key]] = [...t.entries()];
    expect(Buffer.from(key).toString()).toBe("ABCDEFGH");
  });

  test("server indexes out of range are ignored and counted, never thrown", () => {
    const t = table();
    for (const s of [-1, MAX_SERVER + 1, 0x10000, 1.5, NaN, Infinity]) {
      expect(() => put(t, "k", s, 1)).not.toThrow();
    }
    expect(t.stats.refused).toBe(6);
    expect(t.stats.size).toBe(0);
    put(t, "k", MAX_SERVER, 1);
    expect(look(t, "k", 2)).toBe(MAX_SERVER);
  });

  test("constructor rejects nonsense options", () => {
    expect(() => table(0)).toThrow(RangeError);
    expect(() => table(1.5)).toThrow(RangeError);
    expect(() => table(10, 0)).toThrow(RangeError);
    expect(() => table(10, 64, -1)).toThrow(RangeError);
  });
});

describe("session-table: idle expiry", () => {
  test("an entry idle for more than timeoutSec counts as absent (never early); hits keep it alive", () => {
    const t = table(1024, 64, 10);
    put(t, "s1", 1, 100);
    put(t, "s2", 2, 100);
    expect(look(t, "s1", 110)).toBe(1); // 10 whole seconds may be 9.x s: still there; refreshed to 110
    expect(look(t, "s1", 120)).toBe(1); // refreshed to 120
    expect(look(t, "s2", 111)).toBe(-1); // 11 s idle: gone
    expect(t.stats.expirations).toBe(1);
    expect(t.stats.size).toBe(1);
    expect(look(t, "s1", 131)).toBe(-1);
    expect(t.stats).toMatchObject({ size: 0, hits: 2, misses: 2, expirations: 2 });
  });

  test("storing over an expired entry is a new insert, not a rebind", () => {
    const t = table(1024, 64, 10);
    put(t, "s", 1, 100);
    put(t, "s", 2, 200);
    expect(t.stats).toMatchObject({ inserts: 2, rebinds: 0, expirations: 1, size: 1 });
    expect(look(t, "s", 201)).toBe(2);
  });

  test("timeoutSec 0 never expires", () => {
    const t = table(16, 64, 0);
    put(t, "s", 1, 0);
    expect(look(t, "s", 4e9)).toBe(1);
    expect(t.sweep(4e9, 1000)).toBe(0);
  });

  test("an expired entry's slot is reused by the next insert in its window", () => {
    const t = table(1000, 64, 10);
    const keys = collidingKeys(t, PROBE + 1);
    for (let i = 0; i < PROBE; i++) t.store(keys[i]!, 0, keys[i]!.length, 1, i === 5 ? 50 : 100);
    const k = keys[PROBE]!;
    t.store(k, 0, k.length, 2, 105); // window full, but keys[5] (seen at 50) is expired
    expect(t.stats).toMatchObject({ evictions: 0, expirations: 1, size: PROBE, inserts: PROBE + 1 });
    expect(t.lookup(k, 0, k.length, 106)).toBe(2);
    expect(t.lookup(keys[5]!, 0, keys[5]!.length, 106)).toBe(-1);
    expect(t.lookup(keys[6]!, 0, keys[6]!.length, 106)).toBe(1);
  });

  test("sweep removes expired entries incrementally and leaves live ones reachable", () => {
    const t = table(1000, 32, 60);
    for (let i = 0; i < 300; i++) put(t, `old-${i}`, 1, 0);
    for (let i = 0; i < 300; i++) put(t, `new-${i}`, 2, 50);
    let removed = 0;
    let calls = 0;
    while (calls * 100 < t.slots + 100) {
      removed += t.sweep(100, 100);
      calls++;
    }
    expect(removed).toBe(300);
    expect(t.stats.expirations).toBe(300);
    expect(t.stats.size).toBe(300);
    for (let i = 0; i < 300; i++) expect(look(t, `new-${i}`, 101)).toBe(2);
    expect(t.sweep(101, t.slots)).toBe(0);
  });
});

describe("session-table: capacity and eviction", () => {
  test("a full probe window evicts its stalest entry", () => {
    const t = table(1000, 64, 3600);
    const keys = collidingKeys(t, PROBE + 1);
    // Times 100..131, except keys[7] which is the stalest.
    for (let i = 0; i < PROBE; i++) t.store(keys[i]!, 0, keys[i]!.length, 1, i === 7 ? 90 : 100 + i);
    expect(t.stats.size).toBe(PROBE);
    const k = keys[PROBE]!;
    t.store(k, 0, k.length, 3, 200);
    expect(t.stats).toMatchObject({ size: PROBE, evictions: 1, inserts: PROBE + 1, expirations: 0 });
    expect(t.lookup(k, 0, k.length, 201)).toBe(3);
    expect(t.lookup(keys[7]!, 0, keys[7]!.length, 201)).toBe(-1);
    for (let i = 0; i < PROBE; i++) if (i !== 7) expect(t.lookup(keys[i]!, 0, keys[i]!.length, 201)).toBe(1);
  });

  test("a full tiny table evicts the least recently seen entry", () => {
    const t = table(8, 16, 3600); // 11 slots: every window covers the whole table
    expect(t.slots).toBeLessThanOrEqual(PROBE);
    for (let i = 0; i < 8; i++) put(t, `k${i}`, i, 100 + i);
    expect(look(t, "k0", 120)).toBe(0); // k0 is now the freshest; k1 the stalest
    put(t, "k8", 8, 121);
    expect(t.stats).toMatchObject({ size: 8, evictions: 1 });
    expect(look(t, "k1", 122)).toBe(-1);
    for (const i of [0, 2, 3, 4, 5, 6, 7, 8]) expect(look(t, `k${i}`, 122)).toBe(i);
  });

  test("size never exceeds capacity; every insert is either held or counted as evicted", () => {
    const t = table(100, 16, 3600);
    for (let i = 0; i < 10_000; i++) {
      put(t, `key-${i}`, i % 7, 1000 + (i >> 4));
      expect(t.stats.size).toBeLessThanOrEqual(100);
    }
    expect(t.stats.size).toBe(100);
    expect(t.stats.inserts).toBe(10_000);
    expect(t.stats.size + t.stats.evictions).toBe(t.stats.inserts);
    let held = 0;
    for (let i = 0; i < 10_000; i++) if (look(t, `key-${i}`, 2000) === i % 7) held++;
    expect(held).toBe(100);
  });

  test("1,000,000 entries of 32 bytes: all found unless counted as evicted", () => {
    const n = 1_000_000;
    const t = new SessionTable({ capacity: n, maxKeyLen: 32, timeoutSec: 3600 });
    const k = new Uint8Array(32);
    for (let i = 0; i < n; i++) t.store(key32(i, k), 0, 32, i & 15, 1000);
    const { size, evictions, inserts } = t.stats;
    expect(inserts).toBe(n);
    expect(size + evictions).toBe(n);
    expect(evictions).toBeLessThan(n / 100); // window-full evictions: ~0.3% at 3/4 load
    let found = 0;
    let wrong = 0;
    for (let i = 0; i < n; i++) {
      const s = t.lookup(key32(i, k), 0, 32, 1001);
      if (s === (i & 15)) found++;
      else if (s !== -1) wrong++;
    }
    expect(wrong).toBe(0);
    expect(found).toBe(size);
    expect(found + evictions).toBe(n);
  });

  test("memory for 1,000,000 entries of 32-byte keys is at most 64 MB", () => {
    const t = new SessionTable({ capacity: 1_000_000, maxKeyLen: 32, timeoutSec: 60 });
    expect(t.memoryBytes()).toBeLessThanOrEqual(64_000_000);
    expect(t.slots).toBeGreaterThanOrEqual(1_000_000 / 0.75);
  });

  test("entries are not JS objects: the heap does not grow with them", () => {
    const t = new SessionTable({ capacity: 200_000, maxKeyLen: 32, timeoutSec: 60 });
    const k = new Uint8Array(32);
    t.store(key32(0, k), 0, 32, 0, 1); // warm up (JIT, lazy state)
    Bun.gc(true);
    const before = process.memoryUsage().heapUsed;
    for (let i = 1; i < 200_000; i++) t.store(key32(i, k), 0, 32, i & 3, 1);
    Bun.gc(true);
    const grown = process.memoryUsage().heapUsed - before;
    // 200,000 entries as objects would be >= 10 MB; typed-array storage stays outside.
    expect(grown).toBeLessThan(2_000_000);
  });
});

describe("session-table: agrees with a Map model", () => {
  test("random store / lookup / delete / time steps", () => {
    const timeout = 30;
    const t = new SessionTable({ capacity: 4096, maxKeyLen: 12, timeoutSec: timeout });
    const model = new Map<string, { server: number; last: number }>();
    let seed = 12345;
    const rnd = (m: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % m;
    };
    let now = 1_700_000_000;
    for (let step = 0; step < 60_000; step++) {
      const key = `k${rnd(1500)}-session`.slice(0, 12 + rnd(3));
      const mk = key.slice(0, 12);
      const op = rnd(10);
      if (op < 4) {
        const s = rnd(8);
        t.storeString(key, s, now);
        model.set(mk, { server: s, last: now });
      } else if (op < 9) {
        const m = model.get(mk);
        let want = -1;
        if (m !== undefined) {
          if (now - m.last > timeout) model.delete(mk);
          else {
            want = m.server;
            m.last = now;
          }
        }
        expect(t.lookupString(key, now)).toBe(want);
      } else {
        const bytes = b(key);
        t.delete(bytes, 0, bytes.length);
        model.delete(mk);
      }
      if (rnd(50) === 0) now += rnd(20);
      if (rnd(500) === 0) t.sweep(now, 256);
    }
    expect(t.stats.evictions).toBe(0);
    for (const [k, m] of model) expect(t.lookupString(k, now)).toBe(now - m.last > timeout ? -1 : m.server);
  });
});

describe("session-table: snapshots", () => {
  test("snapshot -> restore round trip keeps keys, servers and last-seen times", () => {
    const a = table(5000, 32, 600);
    for (let i = 0; i < 3000; i++) put(a, `session-${i}-${"x".repeat(i % 40)}`, i % 5, 1_700_000_000 + (i % 300));
    const snap = a.snapshot(1_700_000_300);
    expect(snap).toBeInstanceOf(Uint8Array);

    const c = table(5000, 32, 600);
    expect(c.restore(snap, 1_700_000_310)).toEqual({ loaded: 3000, dropped: 0 });
    expect(c.stats.size).toBe(3000);
    for (let i = 0; i < 3000; i++) expect(look(c, `session-${i}-${"x".repeat(i % 40)}`, 1_700_000_310)).toBe(i % 5);
    const times = new Map<string, number>();
    for (const [k, s, last] of a.entries()) times.set(Buffer.from(k).toString("latin1") + s, last);
    const d = table(5000, 32, 600);
    d.restore(snap, 1_700_000_310);
    let same = 0;
    for (const [k, s, last] of d.entries()) if (times.get(Buffer.from(k).toString("latin1") + s) === last) same++;
    expect(same).toBe(3000);
  });

  test("snapshot holds live entries only; restore drops expired and unwanted ones", () => {
    const a = table(100, 16, 60);
    put(a, "dead", 1, 0);
    put(a, "old", 1, 50);
    put(a, "young", 2, 100);
    put(a, "gone-server", 3, 100);
    const snap = a.snapshot(100); // "dead" (100 s idle) is left out
    const doc = new Packr({ useRecords: false }).unpack(snap) as { v: number; kind: string; entries: unknown[] };
    expect(doc.v).toBe(1);
    expect(doc.kind).toBe("latch-session-table");
    expect(doc.entries.length).toBe(3);

    const c = table(100, 16, 60);
    // At 115, "old" (seen at 50) has been idle 65 s; server 3 no longer exists.
    expect(c.restore(snap, 115, (i) => i < 3)).toEqual({ loaded: 1, dropped: 2 });
    expect(look(c, "young", 116)).toBe(2);
    expect(look(c, "old", 116)).toBe(-1);
    expect(look(c, "gone-server", 116)).toBe(-1);
  });

  test("restore merges: a fresher entry already in the table wins", () => {
    const a = table();
    put(a, "s", 1, 100);
    const snap = a.snapshot(100);
    const c = table();
    put(c, "s", 2, 150);
    c.restore(snap, 160);
    expect(look(c, "s", 161)).toBe(2);
    const d = table();
    put(d, "s", 2, 50);
    d.restore(snap, 160);
    expect(look(d, "s", 161)).toBe(1);
  });

  test("restore into a smaller maxKeyLen truncates keys", () => {
    const a = table(100, 64);
    put(a, "0123456789abcdef-long-tail", 4, 10);
    const c = table(100, 10);
    c.restore(a.snapshot(10), 11);
    expect(look(c, "0123456789", 12)).toBe(4);
  });

  test("a corrupt or foreign snapshot throws a clear error and loads nothing", () => {
    const a = table();
    for (let i = 0; i < 50; i++) put(a, `s${i}`, 1, 10);
    const good = a.snapshot(10);
    const p = new Packr({ useRecords: false });
    const cases: [Uint8Array, RegExp][] = [
      [good.subarray(0, good.length >> 1), /corrupt/],
      [new Uint8Array(0), /corrupt/],
      [new Uint8Array([0xc1, 0xc1, 0xc1]), /corrupt/],
      [b("PK\x03\x04 this is a zip file"), /foreign|corrupt/],
      [p.pack([1, 2, 3]), /foreign: not a map/],
      [p.pack({ v: 1, kind: "haproxy-stick-table", entries: [] }), /foreign: kind "haproxy-stick-table"/],
      [p.pack({ v: 2, kind: "latch-session-table", maxKeyLen: 64, entries: [] }), /version 2/],
      [p.pack({ v: 1, kind: "latch-session-table", maxKeyLen: 64 }), /corrupt: maxKeyLen or entries/],
      [
        p.pack({ v: 1, kind: "latch-session-table", maxKeyLen: 64, entries: [[b("ok"), 1, 10], ["str", 1, 10]] }),
        /corrupt: entry 1/,
      ],
      [p.pack({ v: 1, kind: "latch-session-table", maxKeyLen: 64, entries: [[b("ok"), 1.5, 10]] }), /corrupt: entry 0/],
    ];
    for (const [data, msg] of cases) {
      const c = table();
      expect(() => c.restore(data, 11)).toThrow(msg);
      expect(c.stats.size).toBe(0);
    }
  });

  test("an empty table snapshots and restores to an empty table", () => {
    const c = table();
    expect(c.restore(table().snapshot(5), 6)).toEqual({ loaded: 0, dropped: 0 });
    expect(c.stats.size).toBe(0);
  });

  test("clear empties the table and keeps it usable", () => {
    const t = table(16);
    for (let i = 0; i < 16; i++) put(t, `k${i}`, 1, 1);
    t.clear();
    expect(t.stats.size).toBe(0);
    expect(look(t, "k3", 2)).toBe(-1);
    put(t, "k3", 2, 3);
    expect(look(t, "k3", 4)).toBe(2);
    expect([...t.entries()].length).toBe(1);
  });
});

describe("replication hook (global.workers > 1)", () => {
  function hooked(timeoutSec = 100): { t: SessionTable; calls: [string, number, number][]; keys: Uint8Array[] } {
    const t = table(1024, 64, timeoutSec);
    const calls: [string, number, number][] = [];
    const keys: Uint8Array[] = [];
    t.onLearn = (key, server, now) => {
      keys.push(key);
      calls.push([new TextDecoder().decode(key), server, now]);
    };
    return { t, calls, keys };
  }

  test("store: a new key and a re-bind call onLearn, the same server again does not", () => {
    const { t, calls, keys } = hooked();
    const k = b("xxSESSIONyy");
    t.store(k, 2, 9, 1, 1000); // "SESSION"
    expect(calls).toEqual([["SESSION", 1, 1000]]);
    t.store(k, 2, 9, 1, 1001);
    t.storeString("SESSION", 1, 1010);
    expect(calls.length).toBe(1);
    t.storeString("SESSION", 3, 1011); // re-bind
    expect(calls).toEqual([["SESSION", 1, 1000], ["SESSION", 3, 1011]]);
    // the key handed over is a copy: changing the request buffer does not change it
    k.fill(0);
    expect(new TextDecoder().decode(keys[0])).toBe("SESSION");
    // the same server after more than half the timeout: a refresh
    t.storeString("SESSION", 3, 1062);
    expect(calls.length).toBe(3);
    // an expired entry stored again counts as new
    t.storeString("SESSION", 3, 1200);
    expect(calls.length).toBe(4);
  });

  test("lookup: a hit within half the timeout does not call, one after it does (refresh)", () => {
    const { t, calls } = hooked(100);
    t.storeString("s1", 4, 1000);
    expect(calls.length).toBe(1);
    expect(t.lookupString("s1", 1050)).toBe(4); // 50 s: not more than half
    expect(calls.length).toBe(1);
    expect(t.lookupString("s1", 1101)).toBe(4); // 51 s after the last hit
    expect(calls).toEqual([["s1", 4, 1000], ["s1", 4, 1101]]);
    expect(t.lookupString("s1", 1102)).toBe(4);
    expect(t.lookupString("nope", 1102)).toBe(-1);
    expect(calls.length).toBe(2);
    // no timeout: no refreshes
    const never = hooked(0);
    never.t.storeString("s", 1, 1);
    expect(never.t.lookupString("s", 10_000_000)).toBe(1);
    expect(never.calls.length).toBe(1);
  });

  test("applyRemote stores without calling the hook; a fresher local entry wins", () => {
    const { t, calls } = hooked(100);
    t.applyRemote(b("r1"), 2, 1000);
    expect(t.lookupString("r1", 1001)).toBe(2);
    t.applyRemote(b("r1"), 5, 1002); // re-bind from elsewhere
    expect(t.lookupString("r1", 1003)).toBe(5);
    t.applyRemote(b("r1"), 1, 990); // older than what is here: ignored
    expect(t.lookupString("r1", 1004)).toBe(5);
    t.applyRemote(b("r2"), MAX_SERVER + 1, 1000);
    expect(t.stats.refused).toBe(1);
    expect(calls).toEqual([]);
    // a remote refresh keeps the copy here alive past the original timeout
    t.applyRemote(b("r1"), 5, 1080);
    t.onLearn = null;
    expect(t.lookupString("r1", 1150)).toBe(5);
  });
});
