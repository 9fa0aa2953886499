// End-to-end HTTP benchmark: Latch vs HAProxy (SPEC §9, "cookie insert" figures).
//
//   npm run bench:http            (= bun bench/e2e/http-vs-haproxy.ts)
//
// Env: BENCH_SECONDS (10)  seconds per measured round
//      BENCH_ROUNDS  (2)   rounds per proxy per scenario, alternating Latch, HAProxy, ...
//      BENCH_CONNS   (32)  wrk connections (wrk -t1 -c<N>)
//      BENCH_WARMUP  (2)   seconds of unrecorded load per proxy before the first round
//      BENCH_DIRECT  (1)   0 = skip the "direct to backend" reference round
//      BENCH_PIN     (1)   0 = never pin with taskset
//      BENCH_RETRIES (1)   disturbed rounds (other tasks > 10% of a CPU) repeated per run
//
// Starts: one backend process (bench/e2e/backend.ts, two ports), Latch
// (`node_modules/.bin/bun src/cli.ts run <tmp toml>`), HAProxy (`haproxy -db -f <tmp cfg>`,
// nbthread 1). With taskset and >= 2 CPUs the proxies run on CPU 0 and wrk + backends
// on CPU 1. Every child is killed on exit, error, Ctrl-C or SIGTERM.
//
// Scenarios: "insert"   - new clients, the proxy picks a server and inserts Set-Cookie: SRV=...
//            "persisted" - every request carries Cookie: SRV=ap01 (wrk -s <lua>)
// Metrics per round: req/s, p50/p99 (wrk --latency), proxy CPU us/request from
// /proc/<pid>/stat utime+stime (whole process tree, CLK_TCK ticks), plus per-CPU busy %
// and "other" CPU (everything not ours: other processes, ksoftirqd) from /proc/stat.
// Results: table on stdout, JSON in bench/results/http-latest.json.

import { mkdirSync, writeFileSync, existsSync } from "node:fs";
import { cpus, release, loadavg } from "node:os";
import { join } from "node:path";
import {
  ROOT, BUN, envInt, NCPU, CLK_TCK, pinning, type Child, children, makeTmp, start, alive, tail,
  cpuMicros, type CpuJ, procStat, tcpCounters, freePort, waitListening, version, f1, fInt, pad,
  runBench,
} from "./lib.ts";

// ---------------------------------------------------------------------------- settings

const SECONDS = envInt("BENCH_SECONDS", 10, 1);
const ROUNDS = envInt("BENCH_ROUNDS", 2, 1);
const CONNS = envInt("BENCH_CONNS", 32, 1);
const WARMUP = envInt("BENCH_WARMUP", 2, 0);
const DIRECT = envInt("BENCH_DIRECT", 1) !== 0;
const WANT_PIN = envInt("BENCH_PIN", 1) !== 0;
const RETRIES = envInt("BENCH_RETRIES", 1);
const OTHER_LIMIT = 10; // % of one CPU used by foreign tasks above which a round counts as disturbed
const RESULTS = join(ROOT, "bench/results/http-latest.json");

const { PIN, PIN_PROXY, PIN_LOAD, PINNING } = pinning(WANT_PIN, "BENCH_PIN", "wrk + backends");

// ---------------------------------------------------------------------------- helpers

type Probe = { status: number; server: string | null; setCookie: string | null; cacheControl: string | null };
async function probe(port: number, cookie?: string): Promise<Probe> {
  const res = await fetch(`http://127.0.0.1:${port}/`, {
    headers: cookie ? { Cookie: cookie } : {},
    signal: AbortSignal.timeout(2000),
    keepalive: false,
  });
  const body = await res.text();
  return {
    status: res.status,
    server: /server=(\S+)/.exec(body)?.[1] ?? null,
    setCookie: res.headers.get("set-cookie"),
    cacheControl: res.headers.get("cache-control"),
  };
}

/** Checks that a proxy does the work being measured; returns problems (fatal) and notes. */
async function sanity(port: number): Promise<{ fatal: string | null; notes: string[]; sample: unknown }> {
  const notes: string[] = [];
  const fresh: Probe[] = [];
  for (let i = 0; i < 4; i++) fresh.push(await probe(port));
  const bad = fresh.find((p) => p.status !== 200 || !p.server);
  if (bad) return { fatal: `answered status ${bad.status}, body server=${bad.server} (expected 200 from a backend)`, notes, sample: fresh };
  const servers = new Set(fresh.map((p) => p.server));
  if (servers.size < 2) notes.push(`4 new clients all went to ${[...servers].join(",")} (expected round robin over ap01, ap02)`);
  if (!fresh.every((p) => p.setCookie && /SRV=ap0[12]/.test(p.setCookie))) notes.push(`no "Set-Cookie: SRV=..." on a new client (cookie insert not active?)`);
  const pers: Probe[] = [];
  for (let i = 0; i < 3; i++) pers.push(await probe(port, "SRV=ap01"));
  if (!pers.every((p) => p.status === 200 && p.server === "ap01")) notes.push(`Cookie: SRV=ap01 did not stick to ap01 (${pers.map((p) => p.server).join(",")})`);
  if (pers.some((p) => p.setCookie)) notes.push(`Set-Cookie sent to a client that already had SRV=ap01: ${pers.find((p) => p.setCookie)!.setCookie}`);
  return { fatal: null, notes, sample: { fresh: fresh[0], persisted: pers[0] } };
}

// ---------------------------------------------------------------------------- wrk

type WrkResult = {
  requests: number;
  seconds: number;
  rps: number;
  p50ms: number;
  p75ms: number;
  p90ms: number;
  p99ms: number;
  socketErrors: string | null;
  non2xx: number;
  wrkCpuUs: number;
};

function toMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === "us" ? n / 1000 : m[2] === "ms" ? n : m[2] === "s" ? n * 1000 : n * 60000;
}

function parseWrk(text: string): Omit<WrkResult, "wrkCpuUs"> {
  const pct = (p: string) => {
    const m = new RegExp(`^\\s*${p}%\\s+(\\S+)`, "m").exec(text.slice(text.indexOf("Latency Distribution")));
    return m ? toMs(m[1]!) : NaN;
  };
  const req = /^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),/m.exec(text);
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(text);
  if (!req || !rps || !text.includes("Latency Distribution")) throw new Error(`cannot parse wrk output:\n${text}`);
  return {
    requests: Number(req[1]),
    seconds: toMs(req[2]! + req[3]!) / 1000,
    rps: Number(rps[1]),
    p50ms: pct("50"),
    p75ms: pct("75"),
    p90ms: pct("90"),
    p99ms: pct("99"),
    socketErrors: /^\s*Socket errors: (.*)$/m.exec(text)?.[1] ?? null,
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0),
  };
}

async function wrk(port: number, seconds: number, lua: string | null): Promise<WrkResult> {
  const cmd = [...PIN_LOAD, "wrk", "-t1", `-c${CONNS}`, `-d${seconds}s`, "--latency", "--timeout", "5s"];
  if (lua) cmd.push("-s", lua);
  cmd.push(`http://127.0.0.1:${port}/`);
  const c = start("wrk", cmd);
  const killer = setTimeout(() => c.proc.kill("SIGKILL"), (seconds + 20) * 1000);
  await c.proc.exited;
  clearTimeout(killer);
  await Bun.sleep(20); // let the stdout reader finish
  const text = c.out.join("");
  children.splice(children.indexOf(c), 1);
  if (c.proc.exitCode !== 0) throw new Error(`wrk exited with ${c.proc.exitCode ?? c.proc.signalCode}:\n${tail(c)}`);
  const ru = c.proc.resourceUsage();
  return { ...parseWrk(text), wrkCpuUs: ru ? Number(ru.cpuTime.total) : NaN };
}

// ---------------------------------------------------------------------------- rounds

type Round = WrkResult & {
  target: string;
  round: number;
  proxyCpuUs: number; // proxy process tree, utime+stime during the round
  cpuUsPerReq: number | null;
  backendCpuUsPerReq: number;
  cpuBusyPct: number[]; // [cpu0, cpu1, ...] busy (tasks + irq/softirq) during the round
  irqPct: number[]; // [cpu0, cpu1, ...] irq + softirq share
  stealPct: number[]; // [cpu0, cpu1, ...] hypervisor steal share
  proxyCpuSoftirqUsPerReq: number | null; // irq+softirq on the proxy's CPU per request (only when pinned)
  otherCpuPct: number; // % of one CPU used by tasks that are not proxy/backend/wrk (other sessions, daemons)
  disturbed: boolean; // otherCpuPct > OTHER_LIMIT
  idleGaps: boolean; // pinned, closed-loop load, yet neither CPU was full: everyone waited on something
  tcp: Record<string, number>; // deltas of machine-wide TCP counters during the round
};

async function round(target: string, i: number, port: number, proxy: Child | null, backend: Child, lua: string | null): Promise<Round> {
  const p0 = proxy ? cpuMicros(proxy.proc.pid) : 0;
  const b0 = cpuMicros(backend.proc.pid);
  const s0 = procStat();
  const n0 = tcpCounters();
  const t0 = performance.now();
  const w = await wrk(port, SECONDS, lua);
  const wall = (performance.now() - t0) * 1000; // us
  const s1 = procStat();
  const n1 = tcpCounters();
  const tcp: Record<string, number> = {};
  for (const k in n1) if (n1[k]! - (n0[k] ?? 0)) tcp[k] = n1[k]! - (n0[k] ?? 0);
  const p1 = proxy ? cpuMicros(proxy.proc.pid) : 0;
  const b1 = cpuMicros(backend.proc.pid);
  const proxyCpuUs = p1 - p0;
  const backendCpuUs = b1 - b0;
  const jiffyUs = 1e6 / CLK_TCK;
  const share = (f: (c: CpuJ) => number) =>
    s1.slice(1).map((s, k) => (100 * (f(s) - f(s0[k + 1]!))) / Math.max(1, s.total - s0[k + 1]!.total));
  const cpuBusyPct = share((c) => c.task + c.irq);
  const irqPct = share((c) => c.irq);
  const stealPct = share((c) => c.steal);
  const allTaskUs = (s1[0]!.task - s0[0]!.task) * jiffyUs;
  const otherCpuPct = (100 * Math.max(0, allTaskUs - proxyCpuUs - backendCpuUs - w.wrkCpuUs)) / wall;
  const proxyCpuSoftirqUsPerReq = proxy && PIN ? ((s1[1]!.irq - s0[1]!.irq) * jiffyUs) / Math.max(1, w.requests) : null;
  return {
    target,
    round: i,
    ...w,
    proxyCpuUs,
    cpuUsPerReq: proxy ? proxyCpuUs / Math.max(1, w.requests) : null,
    backendCpuUsPerReq: backendCpuUs / Math.max(1, w.requests),
    cpuBusyPct,
    irqPct,
    stealPct,
    proxyCpuSoftirqUsPerReq,
    otherCpuPct,
    disturbed: otherCpuPct > OTHER_LIMIT,
    idleGaps: PIN && cpuBusyPct.every((p) => p < 93),
    tcp,
  };
}

type Agg = {
  rounds: number;
  requests: number;
  rps: number;
  p50ms: number;
  p99ms: number;
  cpuUsPerReq: number | null;
  softirqUsPerReq: number | null;
  loadSideUsPerReq: number; // backend + wrk CPU per request: a control for machine-wide slowdowns
  disturbedRounds: number;
  rpsMin: number;
  rpsMax: number;
  errors: string[];
};
function aggregate(rs: Round[]): Agg {
  const requests = rs.reduce((a, r) => a + r.requests, 0);
  const secs = rs.reduce((a, r) => a + r.seconds, 0);
  const mean = (f: (r: Round) => number) => rs.reduce((a, r) => a + f(r), 0) / rs.length;
  const errors: string[] = [];
  for (const r of rs) {
    if (r.non2xx) errors.push(`round ${r.round}: ${r.non2xx} non-2xx/3xx responses`);
    if (r.socketErrors && !/^connect 0, read 0, write 0, timeout 0$/.test(r.socketErrors)) errors.push(`round ${r.round}: socket errors ${r.socketErrors}`);
  }
  return {
    rounds: rs.length,
    requests,
    rps: requests / secs,
    p50ms: mean((r) => r.p50ms),
    p99ms: mean((r) => r.p99ms),
    cpuUsPerReq: rs[0]?.cpuUsPerReq == null ? null : rs.reduce((a, r) => a + r.proxyCpuUs, 0) / Math.max(1, requests),
    softirqUsPerReq:
      rs[0]?.proxyCpuSoftirqUsPerReq == null ? null : rs.reduce((a, r) => a + r.proxyCpuSoftirqUsPerReq! * r.requests, 0) / Math.max(1, requests),
    loadSideUsPerReq: rs.reduce((a, r) => a + r.backendCpuUsPerReq * r.requests + r.wrkCpuUs, 0) / Math.max(1, requests),
    disturbedRounds: rs.filter((r) => r.disturbed).length,
    rpsMin: Math.min(...rs.map((r) => r.rps)),
    rpsMax: Math.max(...rs.map((r) => r.rps)),
    errors,
  };
}

// ---------------------------------------------------------------------------- output

function printRound(r: Round) {
  console.log(
    `  ${pad(r.target, 8, false)} #${r.round}  ${pad(fInt(r.rps), 9)} req/s  p50 ${pad(f1(r.p50ms, 3), 7)} ms  p99 ${pad(f1(r.p99ms, 3), 7)} ms  ` +
      `proxy ${pad(r.cpuUsPerReq == null ? "-" : f1(r.cpuUsPerReq, 2), 6)} us/req  backend ${f1(r.backendCpuUsPerReq, 2)} wrk ${f1(r.wrkCpuUs / Math.max(1, r.requests), 2)} us/req  ` +
      (r.proxyCpuSoftirqUsPerReq == null ? "" : `softirq@cpu0 ${f1(r.proxyCpuSoftirqUsPerReq, 2)} us/req  `) +
      `busy ${r.cpuBusyPct.map((p) => f1(p, 0) + "%").join("/")} (irq ${r.irqPct.map((p) => f1(p, 0) + "%").join("/")}` +
      (r.stealPct.some((p) => p >= 1) ? `, steal ${r.stealPct.map((p) => f1(p, 0) + "%").join("/")}` : "") +
      `)  other ${f1(r.otherCpuPct, 0)}%` +
      (PIN && r.cpuBusyPct[1]! > 95 ? (r.target !== "direct" && r.cpuBusyPct[0]! > 95 ? "  [both CPUs full]" : "  [CPU 1 full: load-side bound]") : "") +
      (r.disturbed ? "  DISTURBED" : "") +
      (r.idleGaps ? "  IDLE-GAPS" : "") +
      (Object.keys(r.tcp).length ? `  tcp ${Object.entries(r.tcp).map(([k, v]) => `${k.replace(/^TCP/, "")}+${v}`).join(" ")}` : "") +
      (r.non2xx ? `  NON-2xx ${r.non2xx}` : ""),
  );
}

function printTable(title: string, latch: Agg | null, latchErr: string | null, hap: Agg | null, hapErr: string | null, direct: Agg | null) {
  const ratio = (a: number | null | undefined, b: number | null | undefined) => (a == null || b == null || !b ? "-" : (a / b).toFixed(2));
  console.log(`\n${title}`);
  const head =
    `  ${pad("", 12, false)}${pad("req/s", 11)}${pad("p50 ms", 10)}${pad("p99 ms", 10)}${pad("CPU us/req", 12)}` +
    (PIN ? pad("+softirq", 10) : "") + pad("ctl us/req", 12) + pad("disturbed", 11);
  console.log(head);
  console.log("  " + "-".repeat(head.length - 2));
  const row = (name: string, a: Agg | null, err: string | null) =>
    console.log(
      a
        ? `  ${pad(name, 12, false)}${pad(fInt(a.rps), 11)}${pad(f1(a.p50ms, 3), 10)}${pad(f1(a.p99ms, 3), 10)}${pad(a.cpuUsPerReq == null ? "-" : f1(a.cpuUsPerReq, 2), 12)}` +
          (PIN ? pad(a.cpuUsPerReq == null || a.softirqUsPerReq == null ? "-" : f1(a.cpuUsPerReq + a.softirqUsPerReq, 2), 10) : "") +
          pad(f1(a.loadSideUsPerReq, 2), 12) +
          pad(`${a.disturbedRounds}/${a.rounds}`, 11)
        : `  ${pad(name, 12, false)}  not measured: ${(err ?? "").split("\n")[0]}`,
    );
  row("Latch", latch, latchErr);
  row("HAProxy", hap, hapErr);
  console.log(
    `  ${pad("ratio L/H", 12, false)}${pad(ratio(latch?.rps, hap?.rps), 11)}${pad(ratio(latch?.p50ms, hap?.p50ms), 10)}${pad(ratio(latch?.p99ms, hap?.p99ms), 10)}${pad(ratio(latch?.cpuUsPerReq, hap?.cpuUsPerReq), 12)}` +
      (PIN ? pad(ratio(withIrq(latch), withIrq(hap)), 10) : "") +
      pad(ratio(latch?.loadSideUsPerReq, hap?.loadSideUsPerReq), 12),
  );
  if (direct) row("direct*", direct, null);
  for (const [n, a] of [["Latch", latch], ["HAProxy", hap]] as const) for (const e of a?.errors ?? []) console.log(`  ! ${n} ${e}`);
}

const idle = (rs: Round[] | undefined) => (rs ?? []).filter((r) => r.idleGaps).length;
/** proxy CPU / load-side CPU per request, averaged over rounds: cancels machine-wide slowdowns (diagnostic only:
 *  a slower proxy also lowers throughput, which raises the load side's per-request cost through less batching). */
const normCpu = (rs: Round[] | undefined) =>
  rs?.length && rs[0]!.cpuUsPerReq != null
    ? rs.reduce((a, r) => a + r.cpuUsPerReq! / (r.backendCpuUsPerReq + r.wrkCpuUs / Math.max(1, r.requests)), 0) / rs.length
    : null;
const withIrq = (a: Agg | null) => (a?.cpuUsPerReq == null || a.softirqUsPerReq == null ? null : a.cpuUsPerReq + a.softirqUsPerReq);

function targets(latch: Agg | null, hap: Agg | null) {
  if (!latch || !hap) return null;
  return {
    rpsAtLeastHaproxy: latch.rps >= hap.rps,
    cpuPerReqAtMostHaproxy: latch.cpuUsPerReq != null && hap.cpuUsPerReq != null && latch.cpuUsPerReq <= hap.cpuUsPerReq,
    p99AtMost1_2xHaproxy: latch.p99ms <= 1.2 * hap.p99ms,
  };
}

// ---------------------------------------------------------------------------- main

async function main() {
  const startedAt = new Date();
  const wrkBin = Bun.which("wrk");
  const haproxyBin = Bun.which("haproxy") ?? (existsSync("/usr/sbin/haproxy") ? "/usr/sbin/haproxy" : null);
  if (!wrkBin) throw new Error("wrk not found (apt-get install wrk)");

  const tmp = makeTmp("latch-bench-");
  const [pA, pB, pLatch, pHap] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const lua = join(tmp, "persisted.lua");
  writeFileSync(lua, `wrk.headers["Cookie"] = "SRV=ap01"\n`);

  const meta = {
    date: startedAt.toISOString(),
    cpus: NCPU,
    cpuModel: cpus()[0]?.model ?? "?",
    kernel: release(),
    loadavgAtStart: loadavg().map((x) => Number(x.toFixed(2))),
    bun: version([BUN, "--version"]),
    haproxy: haproxyBin ? version([haproxyBin, "-v"]) : "not found",
    wrk: version(["wrk", "--version"]),
    pinning: PINNING,
    clkTck: CLK_TCK,
    seconds: SECONDS,
    rounds: ROUNDS,
    connections: CONNS,
    warmupSeconds: WARMUP,
    wrk_cmd: `wrk -t1 -c${CONNS} -d${SECONDS}s --latency --timeout 5s`,
  };
  console.log(`Latch vs HAProxy, HTTP/1.1 keep-alive, cookie insert — ${meta.date}`);
  console.log(`  ${NCPU} CPUs (${meta.cpuModel}), load average at start ${meta.loadavgAtStart.join(" ")}`);
  console.log(`  pinning: ${PINNING}`);
  console.log(`  ${meta.wrk_cmd}, ${ROUNDS} round(s) per proxy per scenario, alternating; warm-up ${WARMUP}s per proxy`);
  console.log(`  ${meta.bun ? "bun " + meta.bun : ""}; ${meta.haproxy}`);

  // backend (one process, both ports)
  const backend = start("backend", [...PIN_LOAD, BUN, join(ROOT, "bench/e2e/backend.ts"), String(pA), String(pB)]);
  for (const p of [pA, pB]) {
    const e = await waitListening(backend, p, 5000);
    if (e) throw new Error(e);
  }

  // Latch
  let latch: Child | null = null;
  let latchError: string | null = null;
  const latchNotes: string[] = [];
  let latchSample: unknown = null;
  const cli = join(ROOT, "src/cli.ts");
  if (!existsSync(cli)) {
    latchError = `src/cli.ts does not exist yet`;
  } else {
    const toml = join(tmp, "latch.toml");
    writeFileSync(
      toml,
      `# generated by bench/e2e/http-vs-haproxy.ts
[global]
workers = 1
state_dir = "${join(tmp, "state")}"

[[listen]]
name = "bench"
bind = "127.0.0.1:${pLatch}"

  [[listen.route]]
  path = "/"
  backend = "app"

[backend.app]
balance = "roundrobin"

  [backend.app.persist]
  mode = "insert"
  cookie = "SRV"
  indirect = true
  nocache = true

  [[backend.app.server]]
  id = "ap01"
  address = "127.0.0.1:${pA}"

  [[backend.app.server]]
  id = "ap02"
  address = "127.0.0.1:${pB}"
`,
    );
    latch = start("latch", [...PIN_PROXY, BUN, cli, "run", toml]);
    latchError = await waitListening(latch, pLatch, 5000);
    if (!latchError) {
      try {
        const s = await sanity(pLatch);
        latchSample = s.sample;
        if (s.fatal) latchError = `Latch listens but does not proxy: ${s.fatal}`;
        latchNotes.push(...s.notes);
      } catch (e) {
        latchError = `Latch listens but a request through it failed: ${(e as Error).message}\n${tail(latch)}`;
      }
    }
    if (latchError && alive(latch)) latch.proc.kill("SIGTERM");
  }
  if (latchError) console.log(`\n  LATCH NOT MEASURED: ${latchError}`);
  for (const n of latchNotes) console.log(`  ! Latch: ${n}`);

  // HAProxy
  let hap: Child | null = null;
  let hapError: string | null = null;
  const hapNotes: string[] = [];
  if (!haproxyBin) hapError = "haproxy not found (apt-get install haproxy)";
  else {
    const cfg = join(tmp, "haproxy.cfg");
    writeFileSync(
      cfg,
      `# generated by bench/e2e/http-vs-haproxy.ts
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend fe
    bind 127.0.0.1:${pHap}
    default_backend app

backend app
    # the same request rewriting Latch does by default (forwarded_for = true)
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    balance roundrobin
    cookie SRV insert indirect nocache
    server ap01 127.0.0.1:${pA} cookie ap01
    server ap02 127.0.0.1:${pB} cookie ap02
`,
    );
    hap = start("haproxy", [...PIN_PROXY, haproxyBin, "-db", "-f", cfg]);
    hapError = await waitListening(hap, pHap, 5000);
    if (!hapError) {
      try {
        const s = await sanity(pHap);
        if (s.fatal) hapError = `HAProxy: ${s.fatal}`;
        hapNotes.push(...s.notes);
      } catch (e) {
        hapError = `request through HAProxy failed: ${(e as Error).message}`;
      }
    }
  }
  if (hapError) console.log(`\n  HAPROXY NOT MEASURED: ${hapError}`);
  for (const n of hapNotes) console.log(`  ! HAProxy: ${n}`);

  const proxies: { name: string; port: number; child: Child }[] = [];
  if (latch && !latchError) proxies.push({ name: "Latch", port: pLatch, child: latch });
  if (hap && !hapError) proxies.push({ name: "HAProxy", port: pHap, child: hap });

  if (WARMUP > 0) {
    for (const p of proxies) {
      try {
        await wrk(p.port, WARMUP, null);
      } catch (e) {
        console.log(`  warm-up of ${p.name} failed: ${(e as Error).message.split("\n")[0]}`);
      }
    }
  }

  const scenarios = [
    { key: "insert", title: "Scenario 1 — new clients (proxy inserts Set-Cookie: SRV=...)", lua: null as string | null },
    { key: "persisted", title: "Scenario 2 — persisted clients (every request sends Cookie: SRV=ap01)", lua },
  ];
  const results: Record<string, unknown> = {};
  const errors: Record<string, string | null> = { Latch: latchError, HAProxy: hapError };
  let retriesLeft = RETRIES;
  const discarded: Record<string, Round[]> = {};

  for (const sc of scenarios) {
    console.log(`\n${sc.title}`);
    let direct: Agg | null = null;
    const directRounds: Round[] = [];
    if (DIRECT && sc.key === "insert") {
      const r = await round("direct", 1, pA, null, backend, sc.lua);
      printRound(r);
      directRounds.push(r);
      direct = aggregate(directRounds);
    }
    const per: Record<string, Round[]> = {};
    for (let i = 1; i <= ROUNDS; i++) {
      for (const p of proxies) {
        if (errors[p.name]) continue;
        if (!alive(p.child)) {
          errors[p.name] = `${p.name} exited during the benchmark (code ${p.child.proc.exitCode ?? p.child.proc.signalCode}):\n${tail(p.child)}`;
          console.log(`  ! ${errors[p.name]}`);
          continue;
        }
        try {
          let r = await round(p.name, i, p.port, p.child, backend, sc.lua);
          printRound(r);
          if (r.disturbed && retriesLeft > 0) {
            retriesLeft--;
            console.log(`    (other tasks used ${f1(r.otherCpuPct, 0)}% of a CPU during that round: repeating it once, ${retriesLeft} repeat(s) left)`);
            (discarded[sc.key] ??= []).push(r);
            r = await round(p.name, i, p.port, p.child, backend, sc.lua);
            printRound(r);
          }
          (per[p.name] ??= []).push(r);
        } catch (e) {
          errors[p.name] = `${p.name} round ${i} failed: ${(e as Error).message}`;
          console.log(`  ! ${errors[p.name]}`);
        }
      }
    }
    const la = per.Latch?.length ? aggregate(per.Latch) : null;
    const ha = per.HAProxy?.length ? aggregate(per.HAProxy) : null;
    printTable(sc.title.split(" — ")[0]! + " summary", la, errors.Latch ?? null, ha, errors.HAProxy ?? null, direct);
    const t = targets(la, ha);
    if (t && sc.key === "insert")
      console.log(
        `  SPEC §9: req/s >= HAProxy ${t.rpsAtLeastHaproxy ? "PASS" : "FAIL"}; CPU/req <= HAProxy ${t.cpuPerReqAtMostHaproxy ? "PASS" : "FAIL"}; p99 <= 1.2x HAProxy ${t.p99AtMost1_2xHaproxy ? "PASS" : "FAIL"}` +
          (la!.disturbedRounds + ha!.disturbedRounds + idle(per.Latch) + idle(per.HAProxy)
            ? `\n  (not conclusive: ${la!.disturbedRounds + ha!.disturbedRounds} disturbed and ${idle(per.Latch) + idle(per.HAProxy)} idle-gap round(s); req/s and p99 move with the machine, CPU us/req much less)`
            : ""),
      );
    results[sc.key] = {
      latch: la ? { ...la, perRound: per.Latch } : { error: errors.Latch },
      haproxy: ha ? { ...ha, perRound: per.HAProxy } : { error: errors.HAProxy },
      direct: direct ? { ...direct, perRound: directRounds, note: "wrk straight at backend ap01 (no proxy), same pinning as wrk" } : null,
      ratio:
        la && ha
          ? {
              rps: la.rps / ha.rps,
              p50: la.p50ms / ha.p50ms,
              p99: la.p99ms / ha.p99ms,
              cpuUsPerReq: la.cpuUsPerReq != null && ha.cpuUsPerReq ? la.cpuUsPerReq / ha.cpuUsPerReq : null,
              cpuUsPerReqWithSoftirq: withIrq(la) != null && withIrq(ha) ? withIrq(la)! / withIrq(ha)! : null,
              cpuUsPerReqNormalisedByLoadSide: normCpu(per.Latch) != null && normCpu(per.HAProxy) ? normCpu(per.Latch)! / normCpu(per.HAProxy)! : null,
            }
          : null,
      spec9: t,
      discardedDisturbedRounds: discarded[sc.key] ?? [],
    };
  }
  if (DIRECT) console.log(`\n  * direct = wrk straight at one backend, no proxy (reference for the load-generator/backend side).`);
  console.log(
    `  CPU us/req = proxy utime+stime (/proc/<pid>/stat, whole process tree, ${CLK_TCK} ticks/s) / requests completed by wrk.` +
      (PIN
        ? `\n  +softirq = CPU us/req plus the irq/softirq time of CPU 0 per request (loopback TCP receive work that this kernel` +
          `\n  accounts to no process; with pinning it is caused by what the proxy sends, so it belongs to the proxy's cost).`
        : "") +
      `\n  ctl us/req = backend + wrk CPU per request, the same work behind either proxy: when it moves, the machine (or the` +
      `\n  batching at that throughput) moved too, and the proxies' CPU us/req of that round is suspect as well.` +
      `\n  busy = each CPU's busy share during the round (irq = its irq+softirq part); other = CPU used by tasks that are not` +
      `\n  proxy, backend or wrk (other sessions on this machine, daemons), in % of one CPU; a round with other > ${OTHER_LIMIT}% is` +
      `\n  DISTURBED and is repeated once (BENCH_RETRIES=${RETRIES} repeat(s) per run).`,
  );

  mkdirSync(join(ROOT, "bench/results"), { recursive: true });
  const json = {
    meta: { ...meta, durationSeconds: Math.round((Date.now() - startedAt.getTime()) / 1000) },
    latch: { error: errors.Latch, notes: latchNotes, sample: latchSample },
    haproxy: { error: errors.HAProxy, notes: hapNotes },
    scenarios: results,
  };
  writeFileSync(RESULTS, JSON.stringify(json, null, 2) + "\n");
  console.log(`\nwrote ${RESULTS.slice(ROOT.length + 1)} (${json.meta.durationSeconds}s)`);
  return errors.HAProxy && errors.Latch ? 1 : 0;
}

// Hard upper bound on the whole run, whatever happens.
const budgetS = 60 + (WARMUP + SECONDS * (1 + 4 * ROUNDS) + 5 * (2 + 4 * ROUNDS)) * 1.5;
await runBench(main, budgetS);
