// Proxy-managed sessions (SPEC §5): how much a session costs per request.
//   node_modules/.bin/bun bench/session/seal.bench.ts
//
// The session is ~200 bytes in mod_session encoding (a user, a role, a cart, a CSRF token, a
// name in Japanese), as a shop would keep it. Measured with tinybench, INNER operations per
// task so that timer resolution does not count; figures are operations per second of one
// thread, wall time, from the median sample.
//   seal / open              the sealed cookie alone (AES-256-GCM via node:crypto)
//   open: tampered / old key the bad-cookie path, and the rotation path (two keys tried)
//   runtime cookie           open + commit through SessionRuntime, as the core will call them:
//                            an unchanged session (no Set-Cookie), and a changed one (re-seal)
//   runtime sqlite           the same with store = "sqlite" on a real WAL file holding
//                            10,000 sessions: lookup, touch, update, create
// Key derivation (scrypt N=2^15, r=8, p=1) is measured once: it happens at config compile.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Bench } from "tinybench";
import { encode } from "../../src/session/codec.ts";
import { deriveKey, Sealer } from "../../src/session/seal.ts";
import { SessionManager, type SessionOptions } from "../../src/session/session.ts";
import type { SessionState } from "../../src/session/types.ts";

const INNER = 100;
const NOW = Date.now();
const SEC = Math.floor(NOW / 1000);

const DATA = encode(
  new Map([
    ["user", "alice@example.com"],
    ["role", "admin"],
    ["cart", "sku-1001:2,sku-1002:1,sku-2040:7,sku-3310:1"],
    ["lang", "ja-JP"],
    ["csrf", "q8TzJ0n5yK3mVb7RcX1wLf9Hs2Dg4Ap6"],
    ["name", "アリス"],
  ]),
);

let t = performance.now();
const KEY = deriveKey("bench", "the current passphrase, long enough");
const scryptMs = performance.now() - t;
const OLD = deriveKey("bench", "last year's passphrase, long enough");

const sealer = new Sealer("session", [KEY, OLD], { maxAge: 8 * 3600_000, idle: 30 * 60_000 });
const cookie = sealer.seal(DATA, SEC, SEC);
const oldCookie = new Sealer("session", [OLD], { maxAge: 0, idle: 0 }).seal(DATA, SEC, SEC);
const tampered = (() => {
  const raw = Buffer.from(cookie, "base64url");
  raw[40]! ^= 1;
  return raw.toString("base64url");
})();

const base: SessionOptions = {
  name: "bench",
  store: "cookie",
  cookie: "session",
  passphrases: ["the current passphrase, long enough"],
  maxAge: 8 * 3600_000,
  idle: 30 * 60_000,
  updateInterval: 60_000,
  header: "X-Session",
  updateHeader: "X-Replace-Session",
  renewHeader: "X-Session-Renew",
  path: "/",
  domain: null,
  httponly: true,
  secure: null,
  samesite: "Lax",
  file: "",
  redis: "",
  sweepEvery: 0,
};
const cookieRt = new SessionManager(base).runtime(false);

const dir = mkdtempSync(join(tmpdir(), "latch-session-bench-"));
const sqliteMgr = new SessionManager({ ...base, store: "sqlite", passphrases: [], file: join(dir, "sessions-bench.sqlite") });
const sqliteRt = sqliteMgr.runtime(false);
const ids: string[] = [];
{
  const none = sqliteRt.open(null, NOW) as SessionState;
  for (let i = 0; i < 10_000; i++) {
    const line = Buffer.from(sqliteRt.commit(none, `${DATA}&n=${i}`, false, NOW) as Uint8Array).toString("latin1");
    ids.push(/session=([^;]+)/.exec(line)![1]!);
  }
}
const cookieSeen = cookieRt.open(cookie, NOW) as SessionState;

let sink = 0;
let k = 0;
const bench = new Bench({ time: 800, warmup: true, warmupTime: 200 });

bench.add(`seal (${DATA.length} B session -> ${cookie.length} B cookie)`, () => {
  for (let i = 0; i < INNER; i++) sink += sealer.seal(DATA, SEC, SEC).length;
});
bench.add("open", () => {
  for (let i = 0; i < INNER; i++) sink += sealer.open(cookie, SEC).data.length;
});
bench.add("open: tampered (all keys tried, invalid)", () => {
  for (let i = 0; i < INNER; i++) sink += sealer.open(tampered, SEC).data.length;
});
bench.add("open: old passphrase (rotation, 2 keys)", () => {
  for (let i = 0; i < INNER; i++) sink += sealer.open(oldCookie, SEC).data.length;
});
bench.add("runtime cookie: open + requestHeader + commit, unchanged", () => {
  for (let i = 0; i < INNER; i++) {
    const s = cookieRt.open(cookie, NOW) as SessionState;
    sink += cookieRt.requestHeader(s)!.length;
    if (cookieRt.commit(s, null, false, NOW) !== null) sink++;
  }
});
bench.add("runtime cookie: commit, changed (canonicalise + seal + Set-Cookie)", () => {
  for (let i = 0; i < INNER; i++) sink += (cookieRt.commit(cookieSeen, DATA.replace("admin", "user"), false, NOW) as Uint8Array).length;
});
bench.add("runtime sqlite: open (lookup of 10,000)", () => {
  for (let i = 0; i < INNER; i++) sink += (sqliteRt.open(ids[k++ % ids.length]!, NOW) as SessionState).data.length;
});
bench.add("runtime sqlite: open + commit, unchanged", () => {
  for (let i = 0; i < INNER; i++) {
    const s = sqliteRt.open(ids[k++ % ids.length]!, NOW) as SessionState;
    if (sqliteRt.commit(s, null, false, NOW) !== null) sink++;
  }
});
bench.add("runtime sqlite: open + commit, touched (UPDATE last_seen)", () => {
  for (let i = 0; i < INNER; i++) {
    // each pass over the ids is 61 s later: every row is due for its update_interval touch
    const s = sqliteRt.open(ids[k % ids.length]!, NOW) as SessionState;
    sink += (sqliteRt.commit(s, null, false, NOW + 61_000 * (1 + Math.floor(k++ / ids.length))) as Uint8Array).length;
  }
});
bench.add("runtime sqlite: open + commit, changed (UPDATE data)", () => {
  for (let i = 0; i < INNER; i++) {
    const s = sqliteRt.open(ids[k++ % ids.length]!, NOW) as SessionState;
    sink += (sqliteRt.commit(s, `${DATA}&k=${k}`, false, NOW) as Uint8Array).length;
  }
});
bench.add("runtime sqlite: new session (INSERT)", () => {
  const none = sqliteRt.open(null, NOW) as SessionState;
  for (let i = 0; i < INNER; i++) sink += (sqliteRt.commit(none, DATA, false, NOW) as Uint8Array).length;
});

await bench.run();

// the median sample, not the mean: other processes on a shared machine show up as outliers
const rows = bench.tasks.map((task) => {
  const r = task.result as { latency?: { mean: number; p50?: number } } | undefined;
  const median = r?.latency?.p50 ?? NaN; // ms per INNER operations
  const mean = r?.latency?.mean ?? NaN;
  return {
    task: task.name,
    "ops/s": Math.round((INNER * 1000) / median),
    "us/op": Number(((median * 1000) / INNER).toFixed(2)),
    "us/op (mean)": Number(((mean * 1000) / INNER).toFixed(2)),
  };
});
console.log(`key derivation, scrypt N=2^15 r=8 p=1 + HKDF: ${scryptMs.toFixed(0)} ms per passphrase (once, at config compile)`);
console.table(rows);
console.log(`sqlite rows at the end: ${sqliteMgr.sqlite().count()}`);
sqliteMgr.close();
rmSync(dir, { recursive: true, force: true });
if (sink === 0.5) console.log(sink);
