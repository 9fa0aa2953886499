// chooseServer per algorithm, 4 servers: ns per call.
//   node_modules/.bin/bun bench/h1/balance.bench.ts
// Each task runs INNER calls so the per-call figure is well above timer resolution.

import { Bench } from "tinybench";
import { buildRing, chooseServer, hashKey, hashString } from "../../src/core/balance.ts";
import type { BalanceAlgo, CompiledBackend, CompiledServer } from "../../src/core/types.ts";

const INNER = 1000;
const enc = new TextEncoder();

function backend(kind: BalanceAlgo["kind"], weights: number[], active: number[]): CompiledBackend {
  const servers: CompiledServer[] = weights.map((weight, index) => ({
    index,
    id: `ap0${index + 1}`,
    host: "127.0.0.1",
    port: 9001 + index,
    tls: false,
    authority: `127.0.0.1:${9001 + index}`,
    hostLine: new Uint8Array(0),
    weight,
    backup: false,
    maxconn: 0,
    slowstart: 0,
    cookieValue: `ap0${index + 1}`,
    state: { up: true, admin: "ready", active: active[index]!, total: 0, failures: 0, rrCurrent: 0, upSince: 0, lastChange: 0, checks: 0, checkFailures: 0, lastCheck: "", downs: 0, failStreak: 0 },
  }));
  const ring = buildRing(servers);
  const balance =
    kind === "hdr"
      ? { kind, name: "X-User", nameLower: enc.encode("x-user") }
      : kind === "cookie"
        ? { kind, name: "uid", nameBytes: enc.encode("uid") }
        : ({ kind } as BalanceAlgo);
  return {
    name: "bench",
    balance,
    hashBalance: true,
    failover: "redispatch",
    timeouts: { connect: 5000, server: 30000, tunnel: 3600000, queue: 0, poolIdle: 60000 },
    persist: null,
    ignorePersist: [],
    forcePersist: [],
    servers,
    ringPoints: ring.points,
    ringServers: ring.servers,
    hashBoundFactor: 1.25,
    rr: { next: 0 },
    queue: [],
    health: null,
  };
}

// 1024 distinct client-IP keys, hashed up front (the request path hashes once per request).
const KEYS = new Uint32Array(1024);
for (let i = 0; i < KEYS.length; i++) KEYS[i] = hashString(`10.1.${i >> 8}.${i & 255}`);

const W = [1, 1, 1, 1];
const WW = [5, 1, 2, 1];
const LOAD = [3, 5, 2, 4];

let sink = 0;
const bench = new Bench({ time: 400, warmup: true, warmupTime: 200 });

function addPick(name: string, b: CompiledBackend, keyed: boolean): void {
  let k = 0;
  bench.add(name, () => {
    for (let i = 0; i < INNER; i++) {
      const s = chooseServer(b, keyed ? KEYS[k++ & 1023]! : -1, -1);
      sink += s === null ? 0 : s.index;
    }
  });
}

addPick("roundrobin (w 1,1,1,1)", backend("roundrobin", W, LOAD), false);
addPick("roundrobin (w 5,1,2,1)", backend("roundrobin", WW, LOAD), false);
addPick("leastconn", backend("leastconn", W, LOAD), false);
addPick("random (p2c)", backend("random", WW, LOAD), false);
addPick("first", backend("first", W, LOAD), false);
for (const kind of ["source", "uri", "hdr", "cookie"] as const) addPick(`${kind} (ring 640 pts)`, backend(kind, W, LOAD), true);
addPick("source, no key (-> rr)", backend("source", W, LOAD), false);
{
  const b = backend("source", W, LOAD);
  b.servers[1]!.state.up = false;
  addPick("source, 1 of 4 down", b, true);
}
{
  const b = backend("source", W, [40, 0, 0, 0]);
  addPick("source, 1 of 4 hot (bound)", b, true);
}
{
  const b = backend("roundrobin", W, LOAD);
  for (const s of b.servers) s.state.up = false;
  addPick("all down (-> null)", b, false);
}

// The key hashes themselves, for the budget (per call, not per request: one of these per keyed request).
const head = enc.encode("GET /app/cart?id=42 HTTP/1.1\r\nHost: shop.example.com\r\nX-Forwarded-For: 203.0.113.77\r\n\r\n");
const ip = "203.0.113.77";
bench.add("hashKey, 14-byte range", () => {
  for (let i = 0; i < INNER; i++) sink += hashKey(head, 4, 18);
});
bench.add("Bun.hash.xxHash32(subarray) 14 B", () => {
  for (let i = 0; i < INNER; i++) sink += Bun.hash.xxHash32(head.subarray(4, 18));
});
bench.add("hashString, IPv4 string", () => {
  for (let i = 0; i < INNER; i++) sink += hashString(ip);
});
bench.add("Bun.hash.xxHash32(string) IPv4", () => {
  for (let i = 0; i < INNER; i++) sink += Bun.hash.xxHash32(ip);
});

await bench.run();

const rows = bench.tasks.map((t) => {
  const r = t.result as { latency?: { mean: number; p99?: number } } | undefined;
  const mean = r?.latency?.mean ?? NaN;
  const p99 = r?.latency?.p99 ?? NaN;
  return { task: t.name, "ns/op": Number(((mean * 1e6) / INNER).toFixed(1)), "p99 ns/op": Number(((p99 * 1e6) / INNER).toFixed(1)) };
});
console.table(rows);
if (sink === 0.5) console.log(sink); // keep the results alive
