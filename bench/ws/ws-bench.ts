// End-to-end WebSocket benchmark (SPEC §9: 9,000 concurrent tunnels on one process; echo
// throughput at least 90% of a direct connection), Latch vs direct vs HAProxy, in one run.
//
//   npm run bench:ws            (= bun bench/ws/ws-bench.ts)
//
// Env: WS_TUNNELS     (9000) concurrent tunnels held through one Latch process
//      WS_PER_CLIENT  (3000) connections per load-generator process (each under its own fd cap)
//      WS_BACKENDS    (3)    backend processes (one port each) sharing the tunnels round robin
//      WS_SECONDS     (10)   seconds per measured echo round
//      WS_ROUNDS      (2)    echo rounds per target, alternating direct, Latch, HAProxy, ...
//      WS_CONNS       (64)   echo connections
//      WS_DEPTH       (8)    messages in flight per echo connection (pipelined ping-pong)
//      WS_SIZE        (64)   echo message payload bytes
//      WS_WARMUP_MS   (1000) unrecorded echo traffic before each round
//      WS_HAPROXY_HOLD(1)    0 = hold the tunnels through Latch only, not through HAProxy too
//      WS_PIN         (1)    0 = never pin with taskset
//      WS_RETRIES     (1)    disturbed rounds (other tasks > 10% of a CPU) repeated per run
//
// Starts: WS_BACKENDS echo backends (bench/ws/ws-backend.ts, Bun.serve), Latch
// (`bun src/cli.ts run <tmp toml>`), HAProxy (`haproxy -db -f <tmp cfg>`, mode http,
// `timeout tunnel 1h`, nbthread 1) and load-generator processes (bench/ws/ws-clients.ts, raw
// sockets speaking RFC 6455). With taskset and >= 2 CPUs the proxies run on CPU 0 and
// everything else on CPU 1. Every child is killed by PID on exit, error, Ctrl-C or SIGTERM.
//
// Part 1, tunnels: ceil(WS_TUNNELS / WS_PER_CLIENT) client processes open their share through
// the proxy at once (64 handshakes in flight each); every tunnel then sends one message and must
// get the same bytes back; then all close (close frame 1000) and the proxy must be back to its
// idle file descriptors. Memory = VmRSS of the proxy process (/proc/<pid>/status) with the
// tunnels open (after a 2 s settle) minus before (after a 500-tunnel warm-up). Open tunnels are
// counted from the proxy's own sockets: its fds matched against /proc/net/tcp{,6} ESTABLISHED.
// Part 2, echo: the same client process (WS_CONNS connections x WS_DEPTH in flight) against the
// backend directly, through Latch, through HAProxy; msgs/s = echoes received per second; proxy
// CPU per message from /proc/<pid>/stat (utime+stime) and CPU 0's irq+softirq when pinned.
// Results: table on stdout, JSON in bench/results/ws-latest.json.

import { mkdirSync, readFileSync, readdirSync, readlinkSync, writeFileSync, existsSync } from "node:fs";
import { cpus, release, loadavg } from "node:os";
import { join } from "node:path";
import {
  ROOT, BUN, envInt, NCPU, CLK_TCK, pinning, type Child, children, makeTmp, start, alive, tail,
  runtimeUs, kthreadPid, allThreadsUs, foreignCpu, processTree, procStat, tcpCounters, freePort, waitListening, version, f1, fInt, pad,
  runBench,
} from "../e2e/lib.ts";

// ---------------------------------------------------------------------------- settings

const TUNNELS = envInt("WS_TUNNELS", 9000, 1);
const PER_CLIENT = envInt("WS_PER_CLIENT", 3000, 1);
const NBACKENDS = envInt("WS_BACKENDS", 3, 1);
const SECONDS = envInt("WS_SECONDS", 10, 1);
const ROUNDS = envInt("WS_ROUNDS", 2, 1);
const CONNS = envInt("WS_CONNS", 64, 1);
const DEPTH = envInt("WS_DEPTH", 8, 1);
const SIZE = envInt("WS_SIZE", 64, 1);
const WARMUP_MS = envInt("WS_WARMUP_MS", 1000, 0);
const HAP_HOLD = envInt("WS_HAPROXY_HOLD", 1) !== 0;
const WANT_PIN = envInt("WS_PIN", 1) !== 0;
const RETRIES = envInt("WS_RETRIES", 1);
const OTHER_LIMIT = 10; // % of one CPU used by foreign tasks above which a round counts as disturbed
const FD_CAP = 20000; // per-process open files on these machines (BUN-NOTES 12)
const WARM_TUNNELS = 500;
const OPEN_CONCURRENCY = 64;
const RESULTS = join(ROOT, "bench/results/ws-latest.json");

const { PIN, PIN_PROXY, PIN_LOAD, PINNING } = pinning(WANT_PIN, "WS_PIN", "clients + backends");
const NCLIENTS = Math.ceil(TUNNELS / PER_CLIENT);

// ---------------------------------------------------------------------------- JSON-line children

type Ev = { ev: string; [k: string]: any };
type JChild = Child & { events: Ev[]; wake: (() => void) | null };

/** A child that speaks one JSON object per stdout line (ws-clients.ts). */
function startJson(name: string, cmd: string[], stdin = false): JChild {
  let self: JChild | null = null;
  const early: Ev[] = [];
  const c = start(name, cmd, {
    stdin: stdin ? "pipe" : undefined,
    onLine(line) {
      if (!line.startsWith("{")) return;
      let e: Ev;
      try {
        e = JSON.parse(line);
      } catch {
        return;
      }
      if (self === null) return void early.push(e);
      self.events.push(e);
      const w = self.wake;
      self.wake = null;
      w?.();
    },
  });
  self = Object.assign(c, { events: early, wake: null });
  return self;
}

async function nextEvent(c: JChild, ev: string, ms: number): Promise<Ev> {
  const deadline = Date.now() + ms;
  for (;;) {
    const i = c.events.findIndex((e) => e.ev === ev || e.ev === "error");
    if (i >= 0) {
      const e = c.events.splice(i, 1)[0]!;
      if (e.ev === "error") throw new Error(`${c.name}: ${e.why}`);
      return e;
    }
    if (!alive(c)) {
      await Bun.sleep(50); // the last lines may still be on their way
      if (c.events.some((e) => e.ev === ev || e.ev === "error")) continue;
      throw new Error(`${c.name} exited (code ${c.proc.exitCode ?? c.proc.signalCode}) before "${ev}":\n${tail(c)}`);
    }
    if (Date.now() > deadline) throw new Error(`${c.name}: no "${ev}" within ${ms} ms:\n${tail(c)}`);
    await new Promise<void>((r) => {
      c.wake = r;
      setTimeout(r, 100);
    });
  }
}

function command(c: JChild, cmd: string) {
  const sink = c.proc.stdin as import("bun").FileSink;
  sink.write(cmd + "\n");
  sink.flush();
}

// ---------------------------------------------------------------------------- /proc probes

/** VmRSS / RssAnon / VmHWM of one process, in KiB. */
function mem(pid: number): { rss: number; anon: number; hwm: number } {
  const s = readFileSync(`/proc/${pid}/status`, "latin1");
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(s)?.[1] ?? NaN);
  return { rss: kb("VmRSS"), anon: kb("RssAnon"), hwm: kb("VmHWM") };
}

function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

/**
 * The process's ESTABLISHED TCP sockets: accepted on `listenPort` (client side of a tunnel)
 * and connected to one of `upstreamPorts` (backend side). From its fds' socket inodes
 * matched against /proc/net/tcp and tcp6.
 */
function establishedOf(pid: number, listenPort: number, upstreamPorts: number[]): { client: number; upstream: number; other: number } {
  const inodes = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const l = readlinkSync(`/proc/${pid}/fd/${fd}`);
        if (l.startsWith("socket:[")) inodes.add(l.slice(8, -1));
      } catch {}
    }
  } catch {}
  const up = new Set(upstreamPorts);
  const seen = new Set<string>(); // /proc/net/tcp is not a snapshot: a socket can be listed twice
  let client = 0, upstream = 0, other = 0;
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(f, "latin1");
    } catch {
      continue;
    }
    for (const line of text.split("\n")) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10 || c[3] !== "01" || !inodes.has(c[9]!) || seen.has(c[9]!)) continue;
      seen.add(c[9]!);
      const lport = parseInt(c[1]!.split(":")[1]!, 16);
      const rport = parseInt(c[2]!.split(":")[1]!, 16);
      if (lport === listenPort) client++;
      else if (up.has(rport)) upstream++;
      else other++;
    }
  }
  return { client, upstream, other };
}

// ---------------------------------------------------------------------------- part 1: tunnels

type HoldResult = {
  target: string;
  requested: number;
  clientProcesses: number;
  opened: number;
  openFailed: number;
  openErrors: Record<string, number>;
  setupMs: number;
  setupPerSec: number;
  setupCpuUsPerTunnel: number;
  echoOk: number;
  echoBad: number;
  echoMissing: number;
  echoMs: number;
  establishedHeld: { client: number; upstream: number; other: number };
  fds: { idle: number; held: number; afterClose: number; cap: number };
  rssKiB: { before: number; held: number; heldSettled: number; afterClose: number; afterCloseSettled: number; peak: number };
  anonKiB: { before: number; heldSettled: number; afterCloseSettled: number };
  bytesPerTunnel: number | null;
  anonBytesPerTunnel: number | null;
  close: { clean: number; unclean: number; stillOpen: number; ms: number; fdsBackMs: number | null; establishedAfter: { client: number; upstream: number; other: number } };
  tcp: Record<string, number>;
  errors: string[];
};

async function holdClients(name: string, port: number, path: string, counts: number[]): Promise<JChild[]> {
  const cs = counts.map((n, i) =>
    startJson(`${name}-client${i + 1}`, [...PIN_LOAD, BUN, join(ROOT, "bench/ws/ws-clients.ts"), "hold", String(port), path, String(n), String(OPEN_CONCURRENCY)], true),
  );
  for (const c of cs) await nextEvent(c, "ready", 10000);
  return cs;
}

const split = (total: number, per: number) => {
  const n = Math.ceil(total / per);
  return Array.from({ length: n }, (_, i) => Math.floor(total / n) + (i < total % n ? 1 : 0));
};

async function hold(target: string, proxy: Child, port: number, backendPorts: number[]): Promise<HoldResult> {
  const pid = proxy.proc.pid;
  const errors: string[] = [];
  // warm-up: the handshake and tunnel paths compiled, some heap grown, before the baseline
  const warm = await holdClients(`${target}-warmup`, port, "/hold", [WARM_TUNNELS]);
  command(warm[0]!, "open");
  const wo = await nextEvent(warm[0]!, "open", 30000);
  if (wo.failed) errors.push(`warm-up: ${wo.failed} of ${WARM_TUNNELS} tunnels failed: ${JSON.stringify(wo.errors)}`);
  command(warm[0]!, "echo");
  await nextEvent(warm[0]!, "echo", 30000);
  command(warm[0]!, "close");
  await nextEvent(warm[0]!, "closed", 30000);
  await warm[0]!.proc.exited;
  children.splice(children.indexOf(warm[0]!), 1);

  const cs = await holdClients(target, port, "/hold", split(TUNNELS, PER_CLIENT));
  await Bun.sleep(1000);
  const fdIdle = fdCount(pid);
  const before = mem(pid);
  const n0 = tcpCounters();

  // open them all at once
  let peak = before.rss;
  const sampler = setInterval(() => {
    try {
      peak = Math.max(peak, mem(pid).rss);
    } catch {}
  }, 100);
  const cpu0 = runtimeUs(pid);
  const t0 = performance.now();
  for (const c of cs) command(c, "open");
  const opens = await Promise.all(cs.map((c) => nextEvent(c, "open", 60000)));
  const setupMs = performance.now() - t0;
  const setupCpu = runtimeUs(pid) - cpu0;
  const opened = opens.reduce((a, e) => a + e.ok, 0);
  const openFailed = opens.reduce((a, e) => a + e.failed, 0);
  const openErrors: Record<string, number> = {};
  for (const e of opens) for (const [k, v] of Object.entries(e.errors as Record<string, number>)) openErrors[k] = (openErrors[k] ?? 0) + v;
  const heldMem = mem(pid);
  const fdHeld = fdCount(pid);

  // every tunnel echoes
  for (const c of cs) command(c, "echo");
  const echoes = await Promise.all(cs.map((c) => nextEvent(c, "echo", 60000)));
  const echoOk = echoes.reduce((a, e) => a + e.ok, 0);
  const echoBad = echoes.reduce((a, e) => a + e.bad, 0);
  const echoMissing = echoes.reduce((a, e) => a + e.missing, 0);
  const echoMs = Math.max(...echoes.map((e) => e.ms));
  await Bun.sleep(2000);
  const settled = mem(pid);
  const est = establishedOf(pid, port, backendPorts);
  if (!alive(proxy)) errors.push(`${target} exited while holding the tunnels: ${tail(proxy)}`);

  // close them all
  for (const c of cs) command(c, "close");
  const closes = await Promise.all(cs.map((c) => nextEvent(c, "closed", 60000)));
  const closeMs = Math.max(...closes.map((e) => e.ms));
  const tc = performance.now();
  let fdsBackMs: number | null = null;
  while (performance.now() - tc < 10000) {
    if (fdCount(pid) <= fdIdle) {
      fdsBackMs = closeMs + performance.now() - tc;
      break;
    }
    await Bun.sleep(20);
  }
  const afterClose = mem(pid);
  const fdAfter = fdCount(pid);
  await Bun.sleep(2000);
  clearInterval(sampler);
  const afterSettled = mem(pid);
  const estAfter = establishedOf(pid, port, backendPorts);
  for (const c of cs) await c.proc.exited;
  for (const c of cs) children.splice(children.indexOf(c), 1);
  const n1 = tcpCounters();
  const tcp: Record<string, number> = {};
  for (const k in n1) if (n1[k]! - (n0[k] ?? 0)) tcp[k] = n1[k]! - (n0[k] ?? 0);
  return {
    target,
    requested: TUNNELS,
    clientProcesses: cs.length,
    opened,
    openFailed,
    openErrors,
    setupMs,
    setupPerSec: opened / (setupMs / 1000),
    setupCpuUsPerTunnel: setupCpu / Math.max(1, opened),
    echoOk,
    echoBad,
    echoMissing,
    echoMs,
    establishedHeld: est,
    fds: { idle: fdIdle, held: fdHeld, afterClose: fdAfter, cap: FD_CAP },
    rssKiB: { before: before.rss, held: heldMem.rss, heldSettled: settled.rss, afterClose: afterClose.rss, afterCloseSettled: afterSettled.rss, peak },
    anonKiB: { before: before.anon, heldSettled: settled.anon, afterCloseSettled: afterSettled.anon },
    bytesPerTunnel: opened ? ((settled.rss - before.rss) * 1024) / opened : null,
    anonBytesPerTunnel: opened ? ((settled.anon - before.anon) * 1024) / opened : null,
    close: {
      clean: closes.reduce((a, e) => a + e.clean, 0),
      unclean: closes.reduce((a, e) => a + e.unclean, 0),
      stillOpen: closes.reduce((a, e) => a + e.stillOpen, 0),
      ms: closeMs,
      fdsBackMs,
      establishedAfter: estAfter,
    },
    tcp,
    errors,
  };
}

function printHold(h: HoldResult) {
  const mib = (k: number) => f1(k / 1024, 1);
  const ok = h.opened === h.requested && h.echoOk === h.requested;
  console.log(`  ${h.target}: ${fInt(h.requested)} tunnels from ${h.clientProcesses} client processes over ${NBACKENDS} backend processes`);
  console.log(
    `    opened      ${fInt(h.opened)} ok, ${fInt(h.openFailed)} failed${h.openFailed ? " " + JSON.stringify(h.openErrors) : ""} in ${f1(h.setupMs / 1000, 2)} s ` +
      `(${fInt(h.setupPerSec)} tunnels/s, proxy CPU ${f1(h.setupCpuUsPerTunnel, 0)} us per tunnel set up)`,
  );
  console.log(`    echo        ${fInt(h.echoOk)} ok, ${fInt(h.echoBad)} wrong bytes, ${fInt(h.echoMissing)} missing (${f1(h.echoMs, 0)} ms for all)`);
  console.log(
    `    proxy       ${fInt(h.establishedHeld.client)} client-side + ${fInt(h.establishedHeld.upstream)} backend-side established sockets; ` +
      `fds ${fInt(h.fds.idle)} idle -> ${fInt(h.fds.held)} held (cap ${fInt(h.fds.cap)})`,
  );
  console.log(
    `    memory      RSS ${mib(h.rssKiB.before)} MiB before -> ${mib(h.rssKiB.held)} just opened -> ${mib(h.rssKiB.heldSettled)} MiB held (peak ${mib(h.rssKiB.peak)}): ` +
      `${h.bytesPerTunnel == null ? "-" : f1(h.bytesPerTunnel / 1024, 2)} KiB per tunnel ` +
      `(anonymous ${h.anonBytesPerTunnel == null ? "-" : f1(h.anonBytesPerTunnel / 1024, 2)} KiB; kernel socket buffers not included)`,
  );
  console.log(
    `    close       ${fInt(h.close.clean)} clean, ${fInt(h.close.unclean)} unclean, ${fInt(h.close.stillOpen)} stuck; fds back to ${fInt(h.fds.afterClose)} ` +
      `${h.close.fdsBackMs == null ? "NOT within 10 s" : `${f1(h.close.fdsBackMs, 0)} ms after the close began`}; ` +
      `established left ${h.close.establishedAfter.client + h.close.establishedAfter.upstream}; RSS ${mib(h.rssKiB.afterClose)} -> ${mib(h.rssKiB.afterCloseSettled)} MiB after 2 s`,
  );
  if (Object.keys(h.tcp).length) console.log(`    tcp         ${Object.entries(h.tcp).map(([k, v]) => `${k.replace(/^TCP/, "")}+${v}`).join(" ")}`);
  for (const e of h.errors) console.log(`    ! ${e}`);
  if (!ok) console.log(`    ! NOT ALL ${fInt(h.requested)} TUNNELS WORKED`);
}

// ---------------------------------------------------------------------------- part 2: echo rounds

type Round = {
  target: string;
  round: number;
  msgs: number;
  seconds: number;
  msgsPerSec: number;
  p50us: number;
  p99us: number;
  perSecond: number[]; // messages in each second of the round
  proxyCpuUs: number;
  cpuUsPerMsg: number | null; // proxy threads' run time per message (includes softirq done in its context)
  proxyCpuPct: number | null; // proxy run time / wall time: ~100 = the proxy's CPU was the limit
  ksoftirqdUsPerMsg: number; // ksoftirqd/0 (pinned) or all ksoftirqd (not pinned) per message
  loadSideUsPerMsg: number; // backend + client CPU per message: the same work for every target
  cpuBusyPct: number[];
  irqPct: number[];
  otherCpuPct: number; // user-space processes that are not ours (other sessions, daemons), % of one CPU
  kworkerCpuPct: number; // kernel threads other than ksoftirqd (background noise of the VM), % of one CPU
  others: string[]; // the foreign processes that ran most during the round
  disturbed: boolean;
  tcp: Record<string, number>;
};

const KSOFTIRQD = Array.from({ length: NCPU }, (_, i) => kthreadPid(`ksoftirqd/${i}`));
const ksoft = () => KSOFTIRQD.map((p) => (p === null ? 0 : runtimeUs(p)));

async function echoRound(target: string, i: number, port: number, proxy: Child | null, backend: Child): Promise<Round> {
  const c = startJson(`echo-${target}`, [
    ...PIN_LOAD, BUN, join(ROOT, "bench/ws/ws-clients.ts"), "echo", String(port), "/", String(CONNS), String(DEPTH), String(SECONDS), String(WARMUP_MS), String(SIZE),
  ]);
  try {
    await nextEvent(c, "connected", 20000);
    await nextEvent(c, "start", WARMUP_MS + 10000);
    const ours = new Set<number>([process.pid, ...(KSOFTIRQD.filter((p) => p !== null) as number[])]);
    for (const ch of children) if (alive(ch)) for (const p of processTree(ch.proc.pid)) ours.add(p);
    const p0 = proxy ? runtimeUs(proxy.proc.pid) : 0;
    const b0 = runtimeUs(backend.proc.pid);
    const k0 = ksoft();
    const a0 = allThreadsUs();
    const s0 = procStat();
    const n0 = tcpCounters();
    const t0 = performance.now();
    const d = await nextEvent(c, "done", SECONDS * 1000 + 20000);
    const wall = (performance.now() - t0) * 1000;
    const s1 = procStat();
    const n1 = tcpCounters();
    const k1 = ksoft();
    const a1 = allThreadsUs();
    const p1 = proxy ? runtimeUs(proxy.proc.pid) : 0;
    const b1 = runtimeUs(backend.proc.pid);
    await c.proc.exited;
    if (d.badLength) throw new Error(`${d.badLength} echoes of the wrong length`);
    const tcp: Record<string, number> = {};
    for (const k in n1) if (n1[k]! - (n0[k] ?? 0)) tcp[k] = n1[k]! - (n0[k] ?? 0);
    const share = (f: (x: { task: number; irq: number }) => number) =>
      s1.slice(1).map((s, k) => (100 * (f(s) - f(s0[k + 1]!))) / Math.max(1, s.total - s0[k + 1]!.total));
    const proxyCpuUs = p1 - p0;
    const kd = k1.map((v, k) => v - k0[k]!);
    const ksoftUs = PIN && proxy ? kd[0]! : kd.reduce((a, b) => a + b, 0);
    const foreign = foreignCpu(a0, a1, wall, ours);
    const msgs = d.msgs as number;
    return {
      target,
      round: i,
      msgs,
      seconds: d.seconds,
      msgsPerSec: d.msgsPerSec,
      p50us: d.p50us,
      p99us: d.p99us,
      perSecond: d.perSecond ?? [],
      proxyCpuUs,
      cpuUsPerMsg: proxy ? proxyCpuUs / Math.max(1, msgs) : null,
      proxyCpuPct: proxy ? (100 * proxyCpuUs) / wall : null,
      ksoftirqdUsPerMsg: ksoftUs / Math.max(1, msgs),
      loadSideUsPerMsg: (b1 - b0 + d.cpuUs) / Math.max(1, msgs),
      cpuBusyPct: share((x) => x.task + x.irq),
      irqPct: share((x) => x.irq),
      otherCpuPct: foreign.userPct,
      kworkerCpuPct: foreign.kernelPct,
      others: foreign.top,
      disturbed: foreign.userPct > OTHER_LIMIT,
      tcp,
    };
  } finally {
    if (alive(c)) c.proc.kill("SIGKILL");
    children.splice(children.indexOf(c), 1);
  }
}

function printRound(r: Round) {
  console.log(
    `  ${pad(r.target, 8, false)} #${r.round}  ${pad(fInt(r.msgsPerSec), 9)} msg/s  rtt p50 ${pad(f1(r.p50us / 1000, 2), 6)} ms  p99 ${pad(f1(r.p99us / 1000, 2), 6)} ms  ` +
      (r.perSecond.length > 1 ? `1-s ${fInt(Math.min(...r.perSecond) / 1000)}..${fInt(Math.max(...r.perSecond) / 1000)}k  ` : "") +
      `proxy ${pad(r.cpuUsPerMsg == null ? "-" : f1(r.cpuUsPerMsg, 2), 5)} us/msg (${r.proxyCpuPct == null ? "-" : f1(r.proxyCpuPct, 0)}% of a CPU)  ` +
      `ksoftirqd ${f1(r.ksoftirqdUsPerMsg, 2)}  clients+backend ${f1(r.loadSideUsPerMsg, 2)} us/msg  ` +
      `busy ${r.cpuBusyPct.map((p) => f1(p, 0) + "%").join("/")} (irq ${r.irqPct.map((p) => f1(p, 0) + "%").join("/")})  other ${f1(r.otherCpuPct, 0)}% kworkers ${f1(r.kworkerCpuPct, 0)}%` +
      (PIN && r.cpuBusyPct[1]! > 95 ? "  [CPU 1 full]" : "") +
      (PIN && r.proxyCpuPct != null && r.proxyCpuPct > 90 ? "  [proxy CPU-bound]" : "") +
      (r.disturbed ? `  DISTURBED${r.others.length ? " by " + r.others.join(", ") : ""}` : "") +
      (Object.keys(r.tcp).length ? `  tcp ${Object.entries(r.tcp).map(([k, v]) => `${k.replace(/^TCP/, "")}+${v}`).join(" ")}` : ""),
  );
}

type Agg = {
  rounds: number; msgs: number; msgsPerSec: number; p50us: number; p99us: number; cpuUsPerMsg: number | null; proxyCpuPct: number | null;
  ksoftirqdUsPerMsg: number; loadSideUsPerMsg: number; disturbedRounds: number; min: number; max: number;
};
function aggregate(rs: Round[]): Agg | null {
  if (rs.length === 0) return null;
  const msgs = rs.reduce((a, r) => a + r.msgs, 0);
  const secs = rs.reduce((a, r) => a + r.seconds, 0);
  const mean = (f: (r: Round) => number) => rs.reduce((a, r) => a + f(r), 0) / rs.length;
  const perMsg = (f: (r: Round) => number) => rs.reduce((a, r) => a + f(r) * r.msgs, 0) / Math.max(1, msgs);
  return {
    rounds: rs.length,
    msgs,
    msgsPerSec: msgs / secs,
    p50us: mean((r) => r.p50us),
    p99us: mean((r) => r.p99us),
    cpuUsPerMsg: rs[0]!.cpuUsPerMsg == null ? null : rs.reduce((a, r) => a + r.proxyCpuUs, 0) / Math.max(1, msgs),
    proxyCpuPct: rs[0]!.proxyCpuPct == null ? null : mean((r) => r.proxyCpuPct!),
    ksoftirqdUsPerMsg: perMsg((r) => r.ksoftirqdUsPerMsg),
    loadSideUsPerMsg: perMsg((r) => r.loadSideUsPerMsg),
    disturbedRounds: rs.filter((r) => r.disturbed).length,
    min: Math.min(...rs.map((r) => r.msgsPerSec)),
    max: Math.max(...rs.map((r) => r.msgsPerSec)),
  };
}

// ---------------------------------------------------------------------------- main

async function main() {
  const startedAt = new Date();
  const haproxyBin = Bun.which("haproxy") ?? (existsSync("/usr/sbin/haproxy") ? "/usr/sbin/haproxy" : null);
  const tmp = makeTmp("latch-wsbench-");
  const bPorts: number[] = [];
  for (let i = 0; i < NBACKENDS; i++) bPorts.push(await freePort());
  const [pLatch, pHap] = [await freePort(), await freePort()];
  const pEcho = bPorts[0]!; // the echo rounds use backend 1 (its tunnels are closed by then)
  const perBackend = Math.ceil(TUNNELS / NBACKENDS);

  const meta = {
    date: startedAt.toISOString(),
    cpus: NCPU,
    cpuModel: cpus()[0]?.model ?? "?",
    kernel: release(),
    loadavgAtStart: loadavg().map((x) => Number(x.toFixed(2))),
    bun: version([BUN, "--version"]),
    haproxy: haproxyBin ? version([haproxyBin, "-v"]) : "not found",
    pinning: PINNING,
    clkTck: CLK_TCK,
    fdCap: FD_CAP,
    tunnels: TUNNELS,
    perClient: PER_CLIENT,
    clientProcesses: NCLIENTS,
    backendProcesses: NBACKENDS,
    echo: { connections: CONNS, depth: DEPTH, payloadBytes: SIZE, seconds: SECONDS, rounds: ROUNDS, warmupMs: WARMUP_MS },
  };
  console.log(`Latch vs direct vs HAProxy, WebSocket tunnels and echo — ${meta.date}`);
  console.log(`  ${NCPU} CPUs (${meta.cpuModel}), load average at start ${meta.loadavgAtStart.join(" ")}; ${meta.bun ? "bun " + meta.bun : ""}; ${meta.haproxy}`);
  console.log(`  pinning: ${PINNING}`);
  console.log(
    `  tunnels: ${fInt(TUNNELS)} from ${NCLIENTS} client processes (<= ${fInt(PER_CLIENT)} each) over ${NBACKENDS} backend processes (~${fInt(perBackend)} each); ` +
      `echo: ${CONNS} connections x ${DEPTH} in flight, ${SIZE}-byte binary messages, ${SECONDS} s x ${ROUNDS} round(s) per target`,
  );
  const need = 2 * TUNNELS + 30;
  if (need > FD_CAP) console.log(`  ! ${fInt(TUNNELS)} tunnels need ~${fInt(need)} fds in the proxy, over the ${fInt(FD_CAP)} cap: expect failures`);
  if (Math.max(PER_CLIENT, perBackend) + 30 > FD_CAP) console.log(`  ! a client or backend process would need more than ${fInt(FD_CAP)} fds`);

  // backends: one process per port
  const backends: Child[] = [];
  for (let i = 0; i < NBACKENDS; i++) backends.push(start(`backend${i + 1}`, [...PIN_LOAD, BUN, join(ROOT, "bench/ws/ws-backend.ts"), String(bPorts[i])]));
  for (let i = 0; i < NBACKENDS; i++) {
    const e = await waitListening(backends[i]!, bPorts[i]!, 5000);
    if (e) throw new Error(e);
  }

  // Latch
  let latch: Child | null = null;
  let latchError: string | null = null;
  const toml = join(tmp, "latch.toml");
  writeFileSync(
    toml,
    `# generated by bench/ws/ws-bench.ts
[global]
workers = 1
state_dir = "${join(tmp, "state")}"
max_tunnels = 0

[[listen]]
name = "ws"
bind = "127.0.0.1:${pLatch}"

  [[listen.route]]
  path = "/hold"
  backend = "hold"

  [[listen.route]]
  path = "/"
  backend = "echo"

[backend.hold]
balance = "roundrobin"
timeout = { tunnel = "1h" }
${bPorts.map((p, i) => `\n  [[backend.hold.server]]\n  id = "ws${i + 1}"\n  address = "127.0.0.1:${p}"\n`).join("")}
[backend.echo]
timeout = { tunnel = "1h" }

  [[backend.echo.server]]
  id = "echo"
  address = "127.0.0.1:${pEcho}"
`,
  );
  latch = start("latch", [...PIN_PROXY, BUN, join(ROOT, "src/cli.ts"), "run", toml]);
  latchError = await waitListening(latch, pLatch, 5000);
  if (latchError) console.log(`\n  LATCH NOT MEASURED: ${latchError}`);

  // HAProxy
  let hap: Child | null = null;
  let hapError: string | null = null;
  if (!haproxyBin) hapError = "haproxy not found (apt-get install haproxy)";
  else {
    const cfg = join(tmp, "haproxy.cfg");
    writeFileSync(
      cfg,
      `# generated by bench/ws/ws-bench.ts
global
    nbthread 1
    maxconn ${Math.max(4096, TUNNELS + 200)}

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h

frontend fe
    bind 127.0.0.1:${pHap}
    use_backend hold if { path_beg /hold }
    default_backend echo

backend hold
    option forwardfor
    balance roundrobin
${bPorts.map((p, i) => `    server ws${i + 1} 127.0.0.1:${p}`).join("\n")}

backend echo
    option forwardfor
    server echo 127.0.0.1:${pEcho}
`,
    );
    hap = start("haproxy", [...PIN_PROXY, haproxyBin, "-db", "-f", cfg]);
    hapError = await waitListening(hap, pHap, 5000);
  }
  if (hapError) console.log(`\n  HAPROXY NOT MEASURED: ${hapError}`);

  // ---- part 1
  console.log(`\nPart 1 — concurrent tunnels held open, each checked with one echo, then all closed`);
  const holds: Record<string, HoldResult | { error: string }> = {};
  const holdTargets: { name: string; child: Child; port: number }[] = [];
  if (latch && !latchError) holdTargets.push({ name: "Latch", child: latch, port: pLatch });
  if (HAP_HOLD && hap && !hapError) holdTargets.push({ name: "HAProxy", child: hap, port: pHap });
  for (const t of holdTargets) {
    try {
      const h = await hold(t.name, t.child, t.port, bPorts);
      holds[t.name] = h;
      printHold(h);
    } catch (e) {
      holds[t.name] = { error: (e as Error).message };
      console.log(`  ! ${t.name}: ${(e as Error).message}`);
    }
    if (!alive(t.child)) {
      const why = `${t.name} exited during the tunnel test (code ${t.child.proc.exitCode ?? t.child.proc.signalCode}):\n${tail(t.child)}`;
      console.log(`  ! ${why}`);
      if (t.name === "Latch") latchError = why;
      else hapError = why;
    }
  }

  // ---- part 2
  console.log(`\nPart 2 — echo throughput (${CONNS} connections x ${DEPTH} messages in flight, ${SIZE} B)`);
  const targets: { name: string; port: number; child: Child | null }[] = [{ name: "direct", port: pEcho, child: null }];
  if (latch && !latchError) targets.push({ name: "Latch", port: pLatch, child: latch });
  if (hap && !hapError) targets.push({ name: "HAProxy", port: pHap, child: hap });
  const per: Record<string, Round[]> = {};
  const errors: Record<string, string | null> = { Latch: latchError, HAProxy: hapError, direct: null };
  const discarded: Round[] = [];
  let retriesLeft = RETRIES;
  for (let i = 1; i <= ROUNDS; i++) {
    for (const t of targets) {
      if (errors[t.name]) continue;
      if (t.child && !alive(t.child)) {
        errors[t.name] = `${t.name} exited during the benchmark (code ${t.child.proc.exitCode ?? t.child.proc.signalCode}):\n${tail(t.child)}`;
        console.log(`  ! ${errors[t.name]}`);
        continue;
      }
      try {
        let r = await echoRound(t.name, i, t.port, t.child, backends[0]!);
        printRound(r);
        if (r.disturbed && retriesLeft > 0) {
          retriesLeft--;
          console.log(`    (other tasks used ${f1(r.otherCpuPct, 0)}% of a CPU during that round: repeating it once, ${retriesLeft} repeat(s) left)`);
          discarded.push(r);
          r = await echoRound(t.name, i, t.port, t.child, backends[0]!);
          printRound(r);
        }
        (per[t.name] ??= []).push(r);
      } catch (e) {
        errors[t.name] = `${t.name} round ${i} failed: ${(e as Error).message}`;
        console.log(`  ! ${errors[t.name]}`);
      }
    }
  }
  const agg: Record<string, Agg | null> = {};
  for (const t of ["direct", "Latch", "HAProxy"]) agg[t] = aggregate(per[t] ?? []);
  const withK = (a: Agg | null) => (a?.cpuUsPerMsg == null ? null : a.cpuUsPerMsg + a.ksoftirqdUsPerMsg);
  const ratio = (a: number | null | undefined, b: number | null | undefined) => (a == null || b == null || !b ? null : a / b);

  console.log(`\nEcho summary`);
  const head =
    `  ${pad("", 10, false)}${pad("msg/s", 12)}${pad("min..max", 22)}${pad("p50 ms", 9)}${pad("p99 ms", 9)}${pad("CPU us/msg", 12)}` +
    pad("+ksoftirqd", 12) + pad("CPU used", 10) + pad("ctl us/msg", 12) + pad("disturbed", 11);
  console.log(head);
  console.log("  " + "-".repeat(head.length - 2));
  for (const name of ["direct", "Latch", "HAProxy"]) {
    const a = agg[name];
    console.log(
      a
        ? `  ${pad(name, 10, false)}${pad(fInt(a.msgsPerSec), 12)}${pad(`${fInt(a.min)}..${fInt(a.max)}`, 22)}${pad(f1(a.p50us / 1000, 2), 9)}${pad(f1(a.p99us / 1000, 2), 9)}` +
            `${pad(a.cpuUsPerMsg == null ? "-" : f1(a.cpuUsPerMsg, 2), 12)}` +
            pad(withK(a) == null ? "-" : f1(withK(a), 2), 12) +
            pad(a.proxyCpuPct == null ? "-" : f1(a.proxyCpuPct, 0) + "%", 10) +
            pad(f1(a.loadSideUsPerMsg, 2), 12) +
            pad(`${a.disturbedRounds}/${a.rounds}`, 11)
        : `  ${pad(name, 10, false)}  not measured: ${(errors[name] ?? "").split("\n")[0]}`,
    );
  }
  const L = agg.Latch ?? null, D = agg.direct ?? null, H = agg.HAProxy ?? null;
  const ratios = {
    latchOverDirect: ratio(L?.msgsPerSec, D?.msgsPerSec),
    latchOverHaproxy: ratio(L?.msgsPerSec, H?.msgsPerSec),
    haproxyOverDirect: ratio(H?.msgsPerSec, D?.msgsPerSec),
    cpuPerMsgLatchOverHaproxy: ratio(L?.cpuUsPerMsg, H?.cpuUsPerMsg),
    cpuPerMsgWithKsoftirqdLatchOverHaproxy: ratio(withK(L), withK(H)),
  };
  const r2 = (x: number | null) => (x == null ? "-" : x.toFixed(3));
  console.log(
    `  ratios: msg/s Latch/direct ${r2(ratios.latchOverDirect)}, Latch/HAProxy ${r2(ratios.latchOverHaproxy)}, HAProxy/direct ${r2(ratios.haproxyOverDirect)}; ` +
      `CPU us/msg Latch/HAProxy ${r2(ratios.cpuPerMsgLatchOverHaproxy)} (+ksoftirqd ${r2(ratios.cpuPerMsgWithKsoftirqdLatchOverHaproxy)})`,
  );
  const lh = holds.Latch && "opened" in holds.Latch ? holds.Latch : null;
  const disturbedRounds = [D, L, H].reduce((a, x) => a + (x?.disturbedRounds ?? 0), 0);
  const spec9 = {
    tunnels9000: lh ? lh.opened >= 9000 && lh.echoOk === lh.opened && lh.close.fdsBackMs != null : false,
    echoAtLeast90PctOfDirect: ratios.latchOverDirect == null ? null : ratios.latchOverDirect >= 0.9,
  };
  console.log(
    `  SPEC §9: 9,000 concurrent tunnels on one process ${spec9.tunnels9000 ? "PASS" : "FAIL"}` +
      (lh && lh.requested < 9000 ? ` (only ${fInt(lh.requested)} asked for: WS_TUNNELS)` : "") +
      `; echo >= 90% of direct ${spec9.echoAtLeast90PctOfDirect == null ? "-" : spec9.echoAtLeast90PctOfDirect ? "PASS" : "FAIL"}` +
      (disturbedRounds > 0
        ? `\n  (not conclusive: ${disturbedRounds} disturbed round(s): msg/s moves with what else runs on the CPUs; CPU us/msg much less)`
        : ""),
  );
  console.log(
    `\n  msg/s = echoes received per second by the client (one message each way). CPU us/msg = run time of the proxy's threads` +
      `\n  (/proc/<pid>/task/*/schedstat, ns) per message; on this kernel that includes the loopback softirq work done in its` +
      `\n  context; +ksoftirqd adds ${PIN ? "ksoftirqd/0 (CPU 0's deferred softirq work, caused by the proxy)" : "all ksoftirqd threads"}.` +
      ` CPU used = proxy run time / wall time.` +
      `\n  1-s = lowest..highest one-second rate in the round. On the 2-core machines here a pinned proxied round settles at` +
      `\n  either about direct's rate (CPU 1 full, big batches) or ~20% lower (proxy CPU full, smaller batches), with either proxy,` +
      `\n  and can switch mid-round: msg/s ratios vary run to run by that much; CPU us/msg is the steadier comparison.` +
      `\n  ctl us/msg = backend + client CPU per message (the same work for every target: when it moves, the machine moved).` +
      `\n  other = CPU used by processes that are not ours (other sessions, daemons; from every thread's schedstat) in % of one CPU;` +
      `\n  > ${OTHER_LIMIT}% = DISTURBED, repeated once. kworkers = kernel worker threads (not counted as disturbance).` +
      (PIN
        ? `\n  direct runs client and backend on CPU 1 only, exactly as in the proxied rounds (where the proxy has CPU 0): the load` +
          `\n  side is the same, so msg/s ratios show what inserting the proxy costs the same client.`
        : ""),
  );

  mkdirSync(join(ROOT, "bench/results"), { recursive: true });
  const json = {
    meta: { ...meta, durationSeconds: Math.round((Date.now() - startedAt.getTime()) / 1000) },
    tunnels: holds,
    echo: {
      direct: D ? { ...D, perRound: per.direct } : { error: errors.direct },
      latch: L ? { ...L, perRound: per.Latch } : { error: errors.Latch },
      haproxy: H ? { ...H, perRound: per.HAProxy } : { error: errors.HAProxy },
      ratios,
      discardedDisturbedRounds: discarded,
    },
    spec9,
    errors,
  };
  writeFileSync(RESULTS, JSON.stringify(json, null, 2) + "\n");
  console.log(`\nwrote ${RESULTS.slice(ROOT.length + 1)} (${json.meta.durationSeconds}s)`);
  return latchError ? 1 : 0;
}

// Hard upper bound on the whole run, whatever happens.
const budgetS = 120 + (HAP_HOLD ? 2 : 1) * (60 + TUNNELS / 200) + (SECONDS + WARMUP_MS / 1000 + 5) * 3 * (ROUNDS + RETRIES) * 1.5;
await runBench(main, budgetS);
