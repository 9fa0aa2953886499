// Shared plumbing of the end-to-end benchmarks (bench/e2e/http-vs-haproxy.ts, bench/ws/ws-bench.ts):
// env knobs, CPU pinning with taskset, child processes that are always killed by PID on exit,
// CPU accounting from /proc, port helpers and number formatting.
//
// Importing this module installs SIGINT/SIGTERM/SIGHUP and exit handlers that stop every
// process started through `start()` (and its descendants) and remove the `makeTmp()` directory.

import { mkdtempSync, readFileSync, readdirSync, rmSync, existsSync } from "node:fs";
import { tmpdir, cpus } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";

// ---------------------------------------------------------------------------- settings

export const ROOT = resolve(import.meta.dir, "../..");
export const BUN = existsSync(join(ROOT, "node_modules/.bin/bun")) ? join(ROOT, "node_modules/.bin/bun") : process.execPath;
export const envInt = (name: string, def: number, min = 0) => {
  const v = process.env[name];
  if (v === undefined || v === "") return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) throw new Error(`${name} must be a number >= ${min}, got ${JSON.stringify(v)}`);
  return Math.floor(n);
};

export const TASKSET = Bun.which("taskset");
export const NCPU = cpus().length;
export const CLK_TCK = (() => {
  try {
    const r = Bun.spawnSync(["getconf", "CLK_TCK"]);
    const n = Number(r.stdout.toString().trim());
    return n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

/** Proxy on CPU 0, load side on CPU 1, when asked for and possible. */
export function pinning(want: boolean, knob: string, loadSide: string) {
  const PIN = want && TASKSET !== null && NCPU >= 2;
  return {
    PIN,
    PIN_PROXY: PIN ? [TASKSET!, "-c", "0"] : [],
    PIN_LOAD: PIN ? [TASKSET!, "-c", "1"] : [],
    PINNING: PIN
      ? `taskset: proxy on CPU 0, ${loadSide} on CPU 1`
      : `none (${!want ? `${knob}=0` : TASKSET === null ? "taskset not found" : `only ${NCPU} CPU`}): all processes share all CPUs`,
  };
}

// ---------------------------------------------------------------------------- child processes

export type Child = {
  name: string;
  proc: Subprocess<"ignore" | "pipe", "pipe", "pipe">;
  out: string[];
  err: string[];
  /** called with every complete stdout line, when given to start() */
  onLine?: (line: string) => void;
};
export const children: Child[] = [];
let tmp = "";

/** A fresh temporary directory, removed on exit. */
export function makeTmp(prefix: string): string {
  tmp = mkdtempSync(join(tmpdir(), prefix));
  return tmp;
}

function drainText(stream: ReadableStream<Uint8Array> | null | undefined, sink: string[], onLine?: (line: string) => void) {
  if (!stream) return;
  (async () => {
    const dec = new TextDecoder();
    let partial = "";
    try {
      for await (const chunk of stream) {
        const text = dec.decode(chunk, { stream: true });
        sink.push(text);
        if (sink.length > 400) sink.splice(0, sink.length - 400); // keep the tail only
        if (onLine) {
          const lines = (partial + text).split("\n");
          partial = lines.pop()!;
          for (const l of lines) onLine(l);
        }
      }
    } catch {}
  })();
}

export function start(name: string, cmd: string[], opts: { stdin?: "pipe"; onLine?: (line: string) => void } = {}): Child {
  const proc = Bun.spawn(cmd, { cwd: ROOT, stdin: opts.stdin ?? "ignore", stdout: "pipe", stderr: "pipe" });
  const c: Child = { name, proc: proc as Child["proc"], out: [], err: [], onLine: opts.onLine };
  drainText(proc.stdout, c.out, opts.onLine);
  drainText(proc.stderr, c.err);
  children.push(c);
  return c;
}

export const alive = (c: Child) => c.proc.exitCode === null && c.proc.signalCode === null;
export const tail = (c: Child, n = 1500) => (c.err.join("") + c.out.join("")).slice(-n).trim();

/** pid plus all its descendants (from /proc/<pid>/stat ppid). */
export function processTree(root: number): number[] {
  const parentOf = new Map<number, number>();
  for (const d of readdirSync("/proc")) {
    const pid = Number(d);
    if (!Number.isInteger(pid)) continue;
    try {
      const s = readFileSync(`/proc/${pid}/stat`, "latin1");
      const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
      parentOf.set(pid, Number(f[1]));
    } catch {}
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) for (const [pid, pp] of parentOf) if (pp === out[i]) out.push(pid);
  return out;
}

/** utime+stime of a process tree, in microseconds (CLK_TCK resolution). */
export function cpuMicros(root: number): number {
  let ticks = 0;
  for (const pid of processTree(root)) {
    try {
      const s = readFileSync(`/proc/${pid}/stat`, "latin1");
      const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
      ticks += Number(f[11]) + Number(f[12]); // fields 14 (utime) and 15 (stime)
    } catch {}
  }
  return (ticks * 1e6) / CLK_TCK;
}

/** CPU time a process tree actually ran, in microseconds, at nanosecond precision: the sum of
 *  sum_exec_runtime over its threads (/proc/<pid>/task/<tid>/schedstat). Threads that already
 *  exited are not counted. Without CONFIG_IRQ_TIME_ACCOUNTING this includes the softirq work
 *  (loopback TCP receive) the kernel did in the process's context. */
export function runtimeUs(root: number): number {
  let ns = 0;
  for (const pid of processTree(root)) {
    try {
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        try {
          ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "latin1").split(" ")[0]);
        } catch {}
      }
    } catch {}
  }
  return ns / 1000;
}

/** Run time (us) of every thread on the machine by "pid/tid", with what the process is. */
export type ThreadSnap = Map<string, { us: number; pid: number; what: string; kernel: boolean }>;
export function allThreadsUs(): ThreadSnap {
  const m: ThreadSnap = new Map();
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    let what = "?", kernel = false;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, "latin1");
      kernel = cmd.length === 0;
      what = kernel ? readFileSync(`/proc/${p}/comm`, "latin1").trim() : cmd.split("\0").filter(Boolean).map((x) => x.slice(x.lastIndexOf("/") + 1)).join(" ").replace(/\s+/g, " ").slice(0, 60);
    } catch {
      continue;
    }
    try {
      for (const t of readdirSync(`/proc/${p}/task`)) {
        try {
          const us = Number(readFileSync(`/proc/${p}/task/${t}/schedstat`, "latin1").split(" ")[0]) / 1000;
          m.set(`${p}/${t}`, { us, pid: Number(p), what, kernel });
        } catch {}
      }
    } catch {}
  }
  return m;
}

/**
 * CPU used between two snapshots by processes outside `ours`, in % of one CPU: user-space
 * processes (other sessions, daemons) and kernel threads (kworkers: background noise of
 * the VM, present on an idle machine too), with the top user-space consumers named.
 */
export function foreignCpu(a: ThreadSnap, b: ThreadSnap, wallUs: number, ours: Set<number>): { userPct: number; kernelPct: number; top: string[] } {
  const byProc = new Map<number, { d: number; what: string; kernel: boolean }>();
  for (const [k, v] of b) {
    if (ours.has(v.pid)) continue;
    const d = v.us - (a.get(k)?.us ?? 0);
    if (d <= 0) continue;
    const e = byProc.get(v.pid) ?? { d: 0, what: v.what, kernel: v.kernel };
    e.d += d;
    byProc.set(v.pid, e);
  }
  let user = 0, kernel = 0;
  for (const e of byProc.values()) if (e.kernel) kernel += e.d; else user += e.d;
  const top = [...byProc.entries()]
    .filter(([, e]) => !e.kernel && e.d > wallUs * 0.02)
    .sort((x, y) => y[1].d - x[1].d)
    .slice(0, 3)
    .map(([pid, e]) => `"${e.what}"[${pid}] ${((100 * e.d) / wallUs).toFixed(0)}%`);
  return { userPct: (100 * user) / wallUs, kernelPct: (100 * kernel) / wallUs, top };
}

/** pid of a kernel thread by name (e.g. "ksoftirqd/0"), or null. */
export function kthreadPid(name: string): number | null {
  for (const d of readdirSync("/proc")) {
    const pid = Number(d);
    if (!Number.isInteger(pid)) continue;
    try {
      if (readFileSync(`/proc/${pid}/comm`, "latin1").trim() === name) return pid;
    } catch {}
  }
  return null;
}

/** Jiffies per CPU line of /proc/stat: [all, cpu0, cpu1, ...]. With IRQ time accounting
 *  (as here) softirq time - most of loopback TCP's receive path - is in `irq`, not in any
 *  process's utime/stime. */
export type CpuJ = { task: number; irq: number; steal: number; total: number };
export function procStat(): CpuJ[] {
  const out: CpuJ[] = [];
  for (const line of readFileSync("/proc/stat", "latin1").split("\n")) {
    if (!line.startsWith("cpu")) continue;
    const v = line.trim().split(/\s+/).slice(1, 9).map(Number); // user nice system idle iowait irq softirq steal
    out.push({ task: v[0]! + v[1]! + v[2]!, irq: v[5]! + v[6]!, steal: v[7]!, total: v.reduce((a, b) => a + b, 0) });
  }
  return out;
}

/** A few TCP counters (whole machine) that explain latency spikes on loopback. */
export function tcpCounters(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const file of ["/proc/net/snmp", "/proc/net/netstat"]) {
    try {
      const lines = readFileSync(file, "latin1").trim().split("\n");
      for (let i = 0; i + 1 < lines.length; i += 2) {
        const h = lines[i]!.split(/\s+/), v = lines[i + 1]!.split(/\s+/);
        for (let k = 1; k < h.length; k++)
          if (/^(RetransSegs|TCPLossProbes|TCPTimeouts|TCPBacklogDrop|TCPRcvQDrop|ListenDrops|ListenOverflows|TCPAbortOnData)$/.test(h[k]!)) out[h[k]!] = Number(v[k]);
      }
    } catch {}
  }
  return out;
}

let cleaning = false;
export const isCleaning = () => cleaning;
export async function cleanup() {
  if (cleaning) return;
  cleaning = true;
  const pids = new Set<number>();
  for (const c of children) if (alive(c)) for (const p of processTree(c.proc.pid)) pids.add(p);
  for (const p of pids) try { process.kill(p, "SIGTERM"); } catch {}
  const deadline = Date.now() + 2000;
  while (Date.now() < deadline && [...pids].some((p) => existsSync(`/proc/${p}`) && !isZombie(p))) await Bun.sleep(50);
  for (const p of pids) try { if (existsSync(`/proc/${p}`)) process.kill(p, "SIGKILL"); } catch {}
  if (tmp) try { rmSync(tmp, { recursive: true, force: true }); } catch {}
}
function isZombie(pid: number) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "latin1");
    return s.slice(s.lastIndexOf(")") + 2)[0] === "Z";
  } catch {
    return true;
  }
}
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, async () => {
    console.error(`\n${sig}: stopping every process this benchmark started`);
    await cleanup();
    process.exit(130);
  });
}
process.on("exit", () => {
  // last resort, synchronous: anything still running gets SIGKILL
  for (const c of children) if (alive(c)) try { c.proc.kill("SIGKILL"); } catch {}
  if (tmp) try { rmSync(tmp, { recursive: true, force: true }); } catch {}
});

// ---------------------------------------------------------------------------- helpers

export async function freePort(): Promise<number> {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const p = l.port;
  l.stop(true);
  return p;
}

export async function canConnect(port: number): Promise<boolean> {
  try {
    const s = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {}, error() {} } });
    s.end();
    return true;
  } catch {
    return false;
  }
}

export async function waitListening(c: Child, port: number, ms: number): Promise<string | null> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!alive(c)) return `${c.name} exited (code ${c.proc.exitCode ?? c.proc.signalCode}) before listening:\n${tail(c)}`;
    if (await canConnect(port)) return null;
    await Bun.sleep(50);
  }
  return `${c.name} did not accept connections on 127.0.0.1:${port} within ${ms} ms:\n${tail(c)}`;
}

export function version(cmd: string[]): string {
  try {
    const r = Bun.spawnSync(cmd);
    return (r.stdout.toString() + r.stderr.toString()).split("\n")[0]!.trim();
  } catch {
    return "not found";
  }
}

// ---------------------------------------------------------------------------- output

export const f1 = (n: number | null | undefined, d = 1) => (n == null || !Number.isFinite(n) ? "-" : n.toFixed(d));
export const fInt = (n: number | null | undefined) => (n == null || !Number.isFinite(n) ? "-" : Math.round(n).toLocaleString("en-US"));
export const pad = (s: string, w: number, right = true) => (right ? s.padStart(w) : s.padEnd(w));

/**
 * Runs a bench's main() under a hard time budget, reports a failure with the tail of every
 * child's output, always cleans up the processes it started, and exits with main's code.
 */
export async function runBench(main: () => Promise<number>, budgetS: number): Promise<never> {
  const watchdog = setTimeout(async () => {
    console.error(`benchmark exceeded its ${Math.round(budgetS)} s budget; stopping`);
    await cleanup();
    process.exit(124);
  }, budgetS * 1000);
  let code = 1;
  try {
    code = await main();
  } catch (e) {
    if (isCleaning()) await new Promise(() => {}); // interrupted: the signal handler finishes and exits
    console.error(`\nbenchmark failed: ${(e as Error).stack ?? e}`);
    for (const c of children) if (c.err.length || c.out.length) console.error(`--- ${c.name} output (tail) ---\n${tail(c)}`);
    code = 1;
  } finally {
    clearTimeout(watchdog);
    await cleanup();
  }
  process.exit(code);
}
