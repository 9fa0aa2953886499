// Contract suite for src/core/balance.ts (Hono `common.case.test.ts` style): one list of
// cases that every algorithm must pass, looped per algorithm, then algorithm-specific cases.
// Backends are built by hand here; nothing from src/config is imported.

import { describe, expect, test } from "bun:test";
import { buildRing, chooseServer, eligible, hashKey, hashString, weightOf } from "../../../src/core/balance.ts";
import { clock } from "../../../src/core/clock.ts";
import type { BalanceAlgo, CompiledBackend, CompiledServer, ServerState } from "../../../src/core/types.ts";

// ---------------------------------------------------------------------------------------------
// Local factory

type Kind = BalanceAlgo["kind"];

interface ServerSpec {
  id: string;
  weight?: number;
  backup?: boolean;
  maxconn?: number;
  slowstart?: number;
  up?: boolean;
  admin?: ServerState["admin"];
  active?: number;
}

const enc = new TextEncoder();

function algo(kind: Kind): BalanceAlgo {
  switch (kind) {
    case "hdr":
      return { kind, name: "X-User", nameLower: enc.encode("x-user") };
    case "cookie":
      return { kind, name: "uid", nameBytes: enc.encode("uid") };
    default:
      return { kind } as BalanceAlgo;
  }
}

function makeBackend(kind: Kind, specs: readonly (ServerSpec | string)[], hashBoundFactor = 1.25): CompiledBackend {
  const servers: CompiledServer[] = specs.map((spec0, index) => {
    const spec: ServerSpec = typeof spec0 === "string" ? { id: spec0 } : spec0;
    return {
      index,
      id: spec.id,
      host: "127.0.0.1",
      port: 9000 + index,
      tls: false,
      authority: `127.0.0.1:${9000 + index}`,
      hostLine: new Uint8Array(0),
      weight: spec.weight ?? 1,
      backup: spec.backup ?? false,
      maxconn: spec.maxconn ?? 0,
      slowstart: spec.slowstart ?? 0,
      cookieValue: spec.id,
      state: { up: spec.up ?? true, admin: spec.admin ?? "ready", active: spec.active ?? 0, total: 0, failures: 0, rrCurrent: 0, upSince: 0, lastChange: 0, checks: 0, checkFailures: 0, lastCheck: "", downs: 0, failStreak: 0 },
    };
  });
  const ring = buildRing(servers);
  return {
    name: "test",
    balance: algo(kind),
    hashBalance: true,
    failover: "redispatch",
    timeouts: { connect: 5000, server: 30000, tunnel: 3600000, queue: 0, poolIdle: 60000 },
    persist: null,
    ignorePersist: [],
    forcePersist: [],
    servers,
    ringPoints: ring.points,
    ringServers: ring.servers,
    hashBoundFactor,
    rr: { next: 0 },
    queue: [],
    health: null,
  };
}

const HASH_KINDS: readonly Kind[] = ["source", "uri", "hdr", "cookie"];
const ALL_KINDS: readonly Kind[] = ["roundrobin", "leastconn", "random", "first", ...HASH_KINDS];

function isHash(kind: Kind): boolean {
  return HASH_KINDS.includes(kind);
}

/** Deterministic PRNG (mulberry32) for test scenarios; the balancer's own randomness is Math.random. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The key hash a request would carry: a real key for hash algorithms, -1 (no key) sometimes. */
function keyFor(n: number): number {
  return hashString(`10.0.${(n >> 8) & 255}.${n & 255}`);
}

function pickId(b: CompiledBackend, keyHash: number, exclude = -1): string | null {
  return chooseServer(b, keyHash, exclude)?.id ?? null;
}

function counts(ids: readonly (string | null)[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const id of ids) out[String(id)] = (out[String(id)] ?? 0) + 1;
  return out;
}

/** Picks the algorithm's way n times (keyed for hash algorithms), releasing nothing. */
function pickMany(b: CompiledBackend, n: number, exclude = -1): (string | null)[] {
  const out: (string | null)[] = [];
  for (let i = 0; i < n; i++) out.push(pickId(b, isHash(b.balance.kind) ? keyFor(i) : -1, exclude));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Common cases: every algorithm

interface Case {
  readonly name: string;
  readonly run: (kind: Kind) => void;
}

const commonCases: Case[] = [
  {
    name: "never returns an ineligible server (random states, keyed and unkeyed)",
    run(kind) {
      const rnd = prng(42);
      for (let trial = 0; trial < 300; trial++) {
        const specs: ServerSpec[] = [];
        const n = 1 + Math.floor(rnd() * 6);
        for (let i = 0; i < n; i++) {
          const r = rnd();
          const maxconn = rnd() < 0.3 ? 2 : 0;
          specs.push({
            id: `s${i}`,
            weight: rnd() < 0.15 ? 0 : 1 + Math.floor(rnd() * 3),
            backup: rnd() < 0.25,
            up: r > 0.2,
            admin: r < 0.3 ? "maint" : r < 0.4 ? "drain" : "ready",
            maxconn,
            active: Math.floor(rnd() * 4),
          });
        }
        const b = makeBackend(kind, specs);
        const anyPrimary = b.servers.some((s) => !s.backup && s.weight > 0 && eligible(s));
        // a primary up and ready but at its maxconn: the request queues rather than spill to a backup
        const primaryFull = b.servers.some((s) => !s.backup && s.weight > 0 && s.state.up && s.state.admin === "ready" && s.maxconn > 0 && s.state.active >= s.maxconn);
        for (let k = 0; k < 20; k++) {
          const s = chooseServer(b, k % 5 === 0 ? -1 : keyFor(trial * 20 + k), -1);
          if (s === null) {
            expect(anyPrimary).toBe(false);
            if (!primaryFull) expect(b.servers.some((x) => x.weight > 0 && eligible(x))).toBe(false);
            continue;
          }
          expect(eligible(s)).toBe(true);
          expect(s.weight).toBeGreaterThan(0);
          expect(s.backup).toBe(!anyPrimary);
          if (s.backup) expect(primaryFull).toBe(false);
        }
      }
    },
  },
  {
    name: "respects exclude",
    run(kind) {
      const b = makeBackend(kind, ["a", "b", "c"]);
      for (let ex = 0; ex < 3; ex++) {
        for (let i = 0; i < 300; i++) {
          const s = chooseServer(b, isHash(kind) ? keyFor(i) : -1, ex);
          expect(s).not.toBeNull();
          expect(s!.index).not.toBe(ex);
        }
      }
    },
  },
  {
    name: "exclude of the only eligible primary goes to a backup, else null",
    run(kind) {
      const b = makeBackend(kind, ["a", { id: "b", up: false }, { id: "z", backup: true }]);
      expect(pickId(b, keyFor(1), 0)).toBe("z");
      expect(pickId(b, -1, 0)).toBe("z");
      const c = makeBackend(kind, ["a", { id: "b", admin: "maint" }]);
      expect(pickId(c, keyFor(1), 0)).toBeNull();
      expect(pickId(c, keyFor(1), -1)).toBe("a");
    },
  },
  {
    name: "backup only when every primary is down/maint/drain; a full primary queues instead",
    run(kind) {
      const backups: ServerSpec[] = [{ id: "x", backup: true }, { id: "y", backup: true }];
      // one primary still eligible: backups never used
      const live = makeBackend(kind, [{ id: "a", up: false }, "b", ...backups]);
      expect(new Set(pickMany(live, 200))).toEqual(new Set(["b"]));
      // primaries out, each for another reason
      const out = makeBackend(kind, [
        { id: "a", up: false },
        { id: "b", admin: "maint" },
        { id: "c", admin: "drain" },
        { id: "e", weight: 0 },
        ...backups,
      ]);
      const got = pickMany(out, 200);
      for (const id of got) expect(["x", "y"]).toContain(id!);
      // a primary that is up but at its maxconn: null (the caller queues), not a backup
      const full = makeBackend(kind, [{ id: "a", up: false }, { id: "d", maxconn: 3, active: 3 }, ...backups]);
      expect(chooseServer(full, keyFor(1), -1)).toBeNull();
      expect(chooseServer(full, -1, -1)).toBeNull();
      // it frees a slot: back to it
      full.servers[1]!.state.active = 2;
      expect(new Set(pickMany(full, 50))).toEqual(new Set(["d"]));
    },
  },
  {
    name: "returns null when nothing is eligible",
    run(kind) {
      const b = makeBackend(kind, [
        { id: "a", up: false },
        { id: "b", admin: "maint", backup: true },
        { id: "c", admin: "drain" },
        { id: "d", maxconn: 1, active: 1, backup: true },
        { id: "e", weight: 0 },
      ]);
      for (let i = 0; i < 50; i++) {
        expect(chooseServer(b, keyFor(i), -1)).toBeNull();
        expect(chooseServer(b, -1, -1)).toBeNull();
      }
      expect(chooseServer(makeBackend(kind, []), keyFor(1), -1)).toBeNull();
    },
  },
  {
    name: "weight 0 servers are never chosen",
    run(kind) {
      const b = makeBackend(kind, [{ id: "a", weight: 0 }, "b", { id: "c", weight: 0 }, "d"]);
      const got = pickMany(b, 1000);
      expect(got).not.toContain("a");
      expect(got).not.toContain("c");
      expect(got).not.toContain(null);
    },
  },
  {
    name: "a single server always gets the request",
    run(kind) {
      const b = makeBackend(kind, ["only"]);
      expect(new Set(pickMany(b, 100))).toEqual(new Set(["only"]));
    },
  },
];

for (const kind of ALL_KINDS) {
  describe(`balance contract: ${kind}`, () => {
    for (const c of commonCases) test(c.name, () => c.run(kind));
  });
}

// ---------------------------------------------------------------------------------------------
// Algorithm-specific cases

describe("roundrobin", () => {
  test("smooth weighted sequence for 5,1,1 is a a b a c a a", () => {
    const b = makeBackend("roundrobin", [{ id: "a", weight: 5 }, "b", "c"]);
    const seq = pickMany(b, 14).join(" ");
    expect(seq).toBe("a a b a c a a a a b a c a a");
  });

  test("weights honoured exactly over whole cycles", () => {
    const b = makeBackend("roundrobin", [{ id: "a", weight: 3 }, { id: "b", weight: 2 }, { id: "c", weight: 7 }]);
    expect(counts(pickMany(b, 1200))).toEqual({ a: 300, b: 200, c: 700 });
  });

  test("equal weights rotate a b c", () => {
    const b = makeBackend("roundrobin", ["a", "b", "c"]);
    expect(pickMany(b, 6).join("")).toBe("abcabc");
  });

  test("a server going down drops out; the rest keep their proportions", () => {
    const b = makeBackend("roundrobin", [{ id: "a", weight: 2 }, "b", "c"]);
    b.servers[0]!.state.up = false;
    expect(counts(pickMany(b, 100))).toEqual({ b: 50, c: 50 });
  });
});

/** Closed-loop load: `conc` requests in flight; each step one random in-flight request ends and a new one is placed. */
function simulateLoad(b: CompiledBackend, steps: number, conc: number, seed: number): Record<string, number> {
  const rnd = prng(seed);
  const inflight: CompiledServer[] = [];
  const placed: string[] = [];
  for (let i = 0; i < steps; i++) {
    if (inflight.length >= conc) {
      const j = Math.floor(rnd() * inflight.length);
      inflight[j]!.state.active--;
      inflight[j] = inflight[inflight.length - 1]!;
      inflight.pop();
    }
    const s = chooseServer(b, -1, -1)!;
    s.state.active++;
    inflight.push(s);
    placed.push(s.id);
  }
  return counts(placed);
}

describe("leastconn", () => {
  test("picks the least loaded", () => {
    const b = makeBackend("leastconn", [{ id: "a", active: 5 }, { id: "b", active: 2 }, { id: "c", active: 7 }]);
    for (let i = 0; i < 10; i++) expect(pickId(b, -1)).toBe("b");
  });

  test("load is active/weight", () => {
    // a: 6/4 = 1.5, b: 2/1 = 2
    const b = makeBackend("leastconn", [{ id: "a", weight: 4, active: 6 }, { id: "b", weight: 1, active: 2 }]);
    expect(pickId(b, -1)).toBe("a");
    b.servers[0]!.state.active = 9; // 2.25
    expect(pickId(b, -1)).toBe("b");
  });

  test("ties rotate", () => {
    const b = makeBackend("leastconn", ["a", "b", "c"]);
    expect(pickMany(b, 7).join("")).toBe("abcabca");
  });

  test("placing requests keeps servers level", () => {
    const b = makeBackend("leastconn", ["a", "b", "c"]);
    for (let i = 0; i < 30; i++) chooseServer(b, -1, -1)!.state.active++;
    expect(b.servers.map((s) => s.state.active)).toEqual([10, 10, 10]);
  });

  test("weights honoured under load (5,1,1 within ±3 points)", () => {
    const b = makeBackend("leastconn", [{ id: "a", weight: 5 }, "b", "c"]);
    const c = simulateLoad(b, 70000, 35, 7);
    expect(Math.abs(c.a! / 70000 - 5 / 7)).toBeLessThan(0.03);
    expect(Math.abs(c.b! / 70000 - 1 / 7)).toBeLessThan(0.03);
    expect(Math.abs(c.c! / 70000 - 1 / 7)).toBeLessThan(0.03);
  });
});

describe("random (power of two choices)", () => {
  test("weights honoured when idle (5,1,1 within ±1.5 points over 70k picks)", () => {
    const b = makeBackend("random", [{ id: "a", weight: 5 }, "b", "c"]);
    const c = counts(pickMany(b, 70000));
    expect(Math.abs(c.a! / 70000 - 5 / 7)).toBeLessThan(0.015);
    expect(Math.abs(c.b! / 70000 - 1 / 7)).toBeLessThan(0.015);
    expect(Math.abs(c.c! / 70000 - 1 / 7)).toBeLessThan(0.015);
  });

  test("weights honoured under load (3,1 within ±3 points)", () => {
    const b = makeBackend("random", [{ id: "a", weight: 3 }, "b"]);
    const c = simulateLoad(b, 40000, 24, 9);
    expect(Math.abs(c.a! / 40000 - 0.75)).toBeLessThan(0.03);
  });

  test("avoids the loaded server most of the time", () => {
    const b = makeBackend("random", [{ id: "a", active: 50 }, "b", "c", "d"]);
    const c = counts(pickMany(b, 20000));
    // a wins only when both choices are a: ~1/16
    expect(c.a! / 20000).toBeLessThan(0.1);
  });
});

describe("first", () => {
  test("fills servers in declaration order up to maxconn", () => {
    const b = makeBackend("first", [
      { id: "a", maxconn: 2 },
      { id: "b", maxconn: 2 },
      { id: "c", maxconn: 2 },
    ]);
    const order: (string | null)[] = [];
    for (let i = 0; i < 7; i++) {
      const s = chooseServer(b, -1, -1);
      order.push(s?.id ?? null);
      if (s) s.state.active++;
    }
    expect(order).toEqual(["a", "a", "b", "b", "c", "c", null]);
    b.servers[0]!.state.active--; // a slot frees on a
    expect(pickId(b, -1)).toBe("a");
  });

  test("skips unavailable servers in order", () => {
    const b = makeBackend("first", [{ id: "a", admin: "drain" }, { id: "b", up: false }, "c", "d"]);
    expect(new Set(pickMany(b, 20))).toEqual(new Set(["c"]));
  });
});

// ---------------------------------------------------------------------------------------------
// Consistent hashing with bounded loads

const KEYS = 30000;
function mapKeys(b: CompiledBackend): (string | null)[] {
  const out: (string | null)[] = [];
  for (let i = 0; i < KEYS; i++) out.push(pickId(b, keyFor(i)));
  return out;
}

for (const kind of HASH_KINDS) {
  describe(`hash: ${kind}`, () => {
    test("same key, same server", () => {
      const b = makeBackend(kind, ["a", "b", "c", "d"]);
      const first = mapKeys(b);
      expect(mapKeys(b)).toEqual(first);
      // and the same on a freshly built backend (ring is a pure function of ids and weights)
      expect(mapKeys(makeBackend(kind, ["a", "b", "c", "d"]))).toEqual(first);
    });

    test("30k keys over 3 servers within ±15% of even", () => {
      const c = counts(mapKeys(makeBackend(kind, ["ap01", "ap02", "ap03"])));
      for (const id of ["ap01", "ap02", "ap03"]) {
        expect(c[id]!).toBeGreaterThan(10000 * 0.85);
        expect(c[id]!).toBeLessThan(10000 * 1.15);
      }
    });

    test("removing a server moves exactly its keys", () => {
      const b = makeBackend(kind, ["ap01", "ap02", "ap03"]);
      const before = mapKeys(b);
      const onB = before.filter((id) => id === "ap02").length;
      b.servers[1]!.state.up = false;
      const after = mapKeys(b);
      let moved = 0;
      for (let i = 0; i < KEYS; i++) {
        if (before[i] !== after[i]) {
          moved++;
          expect(before[i]).toBe("ap02");
        }
      }
      expect(moved).toBe(onB);
      expect(after).not.toContain("ap02");
      // and back up: every key returns
      b.servers[1]!.state.up = true;
      expect(mapKeys(b)).toEqual(before);
    });

    test("adding a 4th server moves ~25% of keys, all to the new server", () => {
      const before = mapKeys(makeBackend(kind, ["ap01", "ap02", "ap03"]));
      const after = mapKeys(makeBackend(kind, ["ap01", "ap02", "ap03", "ap04"]));
      let moved = 0;
      for (let i = 0; i < KEYS; i++) {
        if (before[i] !== after[i]) {
          moved++;
          expect(after[i]).toBe("ap04");
        }
      }
      expect(moved / KEYS).toBeGreaterThan(0.15);
      expect(moved / KEYS).toBeLessThan(0.35);
    });

    test("ring weight: a weight-2 server gets about twice the keys", () => {
      const c = counts(mapKeys(makeBackend(kind, [{ id: "ap01", weight: 2 }, "ap02", "ap03"])));
      expect(c.ap01! / KEYS).toBeGreaterThan(0.4);
      expect(c.ap01! / KEYS).toBeLessThan(0.6);
    });

    test("bounded load: keys move off a hot server, and only those", () => {
      const b = makeBackend(kind, ["ap01", "ap02", "ap03"], 1.25);
      const before = mapKeys(b);
      b.servers[0]!.state.active = 100; // bound = ceil(1.25 * 101 / 3) = 43 < 101
      const after = mapKeys(b);
      expect(after).not.toContain("ap01");
      for (let i = 0; i < KEYS; i++) if (before[i] !== "ap01") expect(after[i]).toBe(before[i]);
      // the bound is relative to the total load, so even a small lead moves keys
      b.servers[0]!.state.active = 3; // total 3, bound = ceil(1.25 * 4 / 3) = 2 < 4 -> moves
      expect(mapKeys(b)).not.toContain("ap01");
      b.servers[0]!.state.active = 1; // total 1, bound = ceil(1.25 * 2 / 3) = 1 < 2 -> moves
      expect(mapKeys(b)).not.toContain("ap01");
      b.servers[1]!.state.active = 1;
      b.servers[2]!.state.active = 1; // total 3, bound = 2, 1 + 1 <= 2 -> back home
      expect(mapKeys(b)).toEqual(before);
    });

    test("bounded load: a hot server's keys spill to the next server on the ring", () => {
      const b = makeBackend(kind, ["ap01", "ap02", "ap03", "ap04"], 1.25);
      const before = mapKeys(b);
      b.servers[0]!.state.active = 100;
      const without = makeBackend(kind, ["ap01", "ap02", "ap03", "ap04"]);
      without.servers[0]!.state.up = false;
      // over the bound behaves like "down" for new keys: same clockwise successor
      expect(mapKeys(b)).toEqual(mapKeys(without));
      expect(before).toContain("ap01");
    });

    test("factor 0 disables the bound", () => {
      const b = makeBackend(kind, ["ap01", "ap02", "ap03"], 0);
      const before = mapKeys(b);
      b.servers[0]!.state.active = 1000;
      expect(mapKeys(b)).toEqual(before);
    });

    test("no key falls back to smooth weighted roundrobin", () => {
      const b = makeBackend(kind, [{ id: "a", weight: 5 }, "b", "c"]);
      const seq: (string | null)[] = [];
      for (let i = 0; i < 7; i++) seq.push(pickId(b, -1));
      expect(seq.join(" ")).toBe("a a b a c a a");
    });

    test("backups are hashed among themselves when primaries are out", () => {
      const b = makeBackend(kind, [{ id: "a", up: false }, { id: "x", backup: true }, { id: "y", backup: true }, { id: "z", backup: true }]);
      const first = mapKeys(b);
      expect(first).not.toContain("a");
      expect(first).not.toContain(null);
      expect(mapKeys(b)).toEqual(first);
      const c = counts(first);
      for (const id of ["x", "y", "z"]) expect(c[id]!).toBeGreaterThan(KEYS / 3 * 0.85);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Ring and hash functions

describe("buildRing", () => {
  test("160 points per weight, sorted, each xxHash32(`${id}#${i}`), weight 0 has none", () => {
    const servers = [{ id: "a", weight: 1 }, { id: "b", weight: 3 }, { id: "c", weight: 0 }, { id: "d", weight: 2 }];
    const { points, servers: owners } = buildRing(servers);
    expect(points.length).toBe(160 * 6);
    expect(owners.length).toBe(points.length);
    for (let k = 1; k < points.length; k++) expect(points[k]! >= points[k - 1]!).toBe(true);
    const expected = new Map<number, number[]>();
    for (let si = 0; si < servers.length; si++) {
      for (let i = 0; i < 160 * servers[si]!.weight; i++) {
        const p = Bun.hash.xxHash32(`${servers[si]!.id}#${i}`) >>> 0;
        expected.set(si, [...(expected.get(si) ?? []), p]);
      }
    }
    for (let si = 0; si < servers.length; si++) {
      const got: number[] = [];
      for (let k = 0; k < points.length; k++) if (owners[k] === si) got.push(points[k]!);
      expect(got).toEqual((expected.get(si) ?? []).sort((x, y) => x - y));
    }
    expect(owners.includes(2)).toBe(false);
  });

  test("empty input gives an empty ring", () => {
    const r = buildRing([]);
    expect(r.points.length).toBe(0);
    expect(r.servers.length).toBe(0);
  });
});

describe("hashKey / hashString", () => {
  test("hashKey equals Bun.hash.xxHash32 over the subarray, for every range", () => {
    const buf = new Uint8Array(160);
    for (let i = 0; i < buf.length; i++) buf[i] = (i * 131 + 7) & 255;
    for (let s = 0; s < 40; s++) {
      for (let e = s; e <= buf.length; e++) {
        expect(hashKey(buf, s, e)).toBe(Bun.hash.xxHash32(buf.subarray(s, e)) >>> 0);
      }
    }
  });

  test("hashString equals Bun.hash.xxHash32 of the string (ASCII and not)", () => {
    const samples = ["", "a", "10.0.0.1", "2001:db8::1", "/index.html?x=1", "ap01#159", "x".repeat(33), "héllo", "日本語のキー", "mixed ascii then é at 17ch"];
    for (const s of samples) expect(hashString(s)).toBe(Bun.hash.xxHash32(s) >>> 0);
  });

  test("hashString of ASCII equals hashKey of its bytes", () => {
    const s = "GET /app/cart?id=42 HTTP/1.1";
    const bytes = enc.encode(`xx${s}yy`);
    expect(hashKey(bytes, 2, 2 + s.length)).toBe(hashString(s));
  });

  test("results are unsigned 32-bit numbers", () => {
    for (let i = 0; i < 1000; i++) {
      const h = hashString(`k${i}`);
      expect(Number.isInteger(h) && h >= 0 && h <= 0xffffffff).toBe(true);
    }
  });
});

describe("slowstart", () => {
  // weightOf reads the coarse clock; set it explicitly so the test is about the ramp, not timing
  const at = (now: number) => {
    clock.now = now;
  };

  test("a server back from down ramps from 5% to its full weight over slowstart; never at start-up", () => {
    const b = makeBackend("roundrobin", [{ id: "a", weight: 10, slowstart: 10_000 }, { id: "b", weight: 10 }]);
    const [a] = b.servers;
    at(1_000_000);
    expect(weightOf(a!)).toBe(10); // never been down: full weight from the start
    a!.state.downs = 1;
    a!.state.upSince = 1_000_000;
    expect(weightOf(a!)).toBe(0.5); // just back: 5%
    at(1_005_000);
    expect(weightOf(a!)).toBe(5); // half way
    at(1_010_000);
    expect(weightOf(a!)).toBe(10);
  });

  test("roundrobin gives a slow-starting server its share of the ramp", () => {
    const b = makeBackend("roundrobin", [{ id: "a", weight: 10, slowstart: 10_000 }, { id: "b", weight: 10 }]);
    const [a] = b.servers;
    a!.state.downs = 1;
    a!.state.upSince = 2_000_000;
    at(2_002_500); // 25%: a has weight 2.5 against b's 10
    const picks = { a: 0, b: 0 } as Record<string, number>;
    for (let i = 0; i < 1000; i++) picks[chooseServer(b, -1, -1)!.id]!++;
    expect(picks.a).toBe(200);
    expect(picks.b).toBe(800);
    at(Date.now());
  });
});
