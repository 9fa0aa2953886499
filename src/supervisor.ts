// global.workers > 1: one supervisor process and N worker processes (SPEC §1: "one process per
// core with reusePort"). Imported by src/cli.ts only; the forwarding core knows nothing of it.
//
// Re-exec. The supervisor starts each worker as itself again: `process.execPath` is the bun
// executable in a checkout (`bun src/cli.ts run cfg`: argv is [bun, /abs/src/cli.ts, run, cfg],
// so the script, Bun.main, goes first) and the binary itself when compiled (`dist/latch run
// cfg`: Bun.main is inside the embedded /$bunfs/ and there is no script to pass). The child
// gets LATCH_WORKER=<slot> and an IPC channel; both together make it a worker (the variable
// alone, e.g. inherited by accident, does not). Workers inherit stdout/stderr: every log line
// is one write(), prefixed "worker N: ".
//
// Config. The supervisor reads and validates the file; each worker gets the text it accepted
// over IPC instead of reading the file itself, so a worker restarted after a crash runs what
// its siblings run even if the file was edited (or broken) since. On SIGHUP the supervisor
// validates the file first: invalid -> one log line, nothing forwarded; valid -> SIGHUP to
// every ready worker, each of which reloads itself (keeping in-flight requests, tunnels and
// tables, as a single process does), and the accepted text is what later restarts get. A
// change of `workers` takes effect on that reload (new slots started, surplus ones stopped
// gracefully); a slot given up after crashing (below) is retried.
//
// Listening. Workers open the listeners with reusePort (SO_REUSEPORT): the kernel spreads new
// connections over them by a hash of the 4-tuple. The supervisor does not listen at all.
//
// Crashes. A worker that exits while the supervisor did not ask it to is restarted after a
// backoff of 100 ms doubling per recent restart (100, 200, 400, 800, 1600 ms); at most 5
// restarts per slot in 10 s: the 6th crash in that window gives the slot up (logged; a SIGHUP
// retries it). When no worker is left the supervisor exits 1. A worker of the first start
// that fails before it is ready (a port taken, a TLS file unreadable) stops everything with
// exit 1: restarting it would fail the same way.
//
// Stopping. SIGTERM or SIGINT: SIGTERM to every worker, which stops accepting, finishes its
// in-flight requests (grace period 5 s, src/cli.ts) and exits; the supervisor waits for all of
// them and exits 0. A worker still there after the grace period plus a margin (10 s in all)
// is killed (SIGKILL, logged). A worker whose supervisor disappears (even by SIGKILL: the IPC
// channel closes) stops itself the same graceful way, so no orphan keeps the port.
//
// State. What lives in one worker's memory is that worker's: server up/down and connection
// counts, maxconn queues, round-robin cursors, counters. Learned persistence tables are
// replicated (src/state/table-replication.ts): a worker's `learn` message is relayed to every
// other ready worker, and a worker that becomes ready gets a dump of one ready sibling's
// tables (`dump` to the sibling, its `learn` messages with `to` forwarded to the newcomer).
// State files are written by worker 1 only (setSnapshotWriter), so workers never overwrite
// each other's snapshots.

import type { Subprocess } from "bun";
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { loadConfigText } from "./config/index.ts";
import { setSnapshotWriter } from "./state/table-snapshots.ts";
import type { CompiledConfig } from "./core/types.ts";
import type { DumpMsg, LearnMsg } from "./state/table-replication.ts";

export type Log = (level: "info" | "warn" | "error", msg: string) => void;

export const WORKER_ENV = "LATCH_WORKER";
/** Grace period of a worker's graceful stop (src/cli.ts) plus a margin, before SIGKILL. */
export const WORKER_STOP_MS = 10_000;
/** A worker that has not said it is ready by then is killed (and counts as a crash). */
const READY_TIMEOUT_MS = 30_000;

type ToWorker = { t: "config"; text: string; path: string } | LearnMsg | DumpMsg;
type ToSupervisor = { t: "ready"; ports: Record<string, number> } | LearnMsg;

// ---------------------------------------------------------------------------------------------
// Worker side

const slotOfThisProcess: number | null = (() => {
  const v = process.env[WORKER_ENV];
  if (v === undefined || typeof process.send !== "function") return null;
  const n = Number(v);
  return Number.isInteger(n) && n >= 1 ? n : null;
})();

/** This process's worker slot (1..N), or null when it is not a supervised worker. */
export function workerSlot(): number | null {
  return slotOfThisProcess;
}

/** Log prefix: "worker 2: " in a worker, "" otherwise. */
export function workerTag(): string {
  return slotOfThisProcess === null ? "" : `worker ${slotOfThisProcess}: `;
}

/** Compiles config text as loadConfigFile does the file (relative paths against its directory). */
function compileText(text: string, path: string): CompiledConfig {
  const absolute = resolve(path);
  const config = loadConfigText(text, path, dirname(absolute));
  return Object.freeze({ ...config, source: absolute });
}

/**
 * A worker's start: waits for the config text from the supervisor and compiles it (throws
 * ConfigError as loadConfigFile does). Also: state files are written by worker 1 only, and the
 * worker stops gracefully (SIGTERM to itself) when its supervisor goes away.
 */
export function workerConfig(path: string, log: Log): Promise<CompiledConfig> {
  setSnapshotWriter(slotOfThisProcess === 1);
  process.on("disconnect", () => {
    log("warn", "supervisor gone: stopping");
    process.kill(process.pid, "SIGTERM");
  });
  return new Promise((resolveCfg, reject) => {
    const timer = setTimeout(() => reject(new Error("no configuration from the supervisor within 10 s")), 10_000);
    const onMessage = (m: unknown): void => {
      const msg = m as ToWorker;
      if (msg === null || typeof msg !== "object" || msg.t !== "config") return;
      clearTimeout(timer);
      process.off("message", onMessage);
      try {
        resolveCfg(compileText(msg.text, path));
      } catch (e) {
        reject(e);
      }
    };
    process.on("message", onMessage);
  });
}

/** Tells the supervisor this worker listens and handles its signals. Call last. */
export function workerReady(ports: Record<string, number>): void {
  if (slotOfThisProcess === null) return;
  const msg: ToSupervisor = { t: "ready", ports };
  process.send!(msg);
}

// ---------------------------------------------------------------------------------------------
// Supervisor side

/**
 * Restarts allowed to one slot: at most `max` in any `windowMs`, each after a backoff of
 * baseMs * 2^(restarts in the window), capped at capMs.
 */
export class RestartBudget {
  private times: number[] = [];

  constructor(
    readonly max = 5,
    readonly windowMs = 10_000,
    readonly baseMs = 100,
    readonly capMs = 2_000,
  ) {}

  /** A crash at `now`: milliseconds to wait before the restart, or -1: give up. */
  next(now: number): number {
    this.times = this.times.filter((t) => now - t < this.windowMs);
    if (this.times.length >= this.max) return -1;
    const delay = Math.min(this.capMs, this.baseMs * 2 ** this.times.length);
    this.times.push(now);
    return delay;
  }

  /** restarts counted in the window ending at `now` */
  recent(now: number): number {
    return this.times.filter((t) => now - t < this.windowMs).length;
  }

  reset(): void {
    this.times = [];
  }
}

/** Is this a `bun build --compile` executable (the script is embedded, not on disk)? */
export function isCompiled(main: string = Bun.main): boolean {
  return main.startsWith("/$bunfs/") || /^[A-Za-z]:[\\/]~BUN[\\/]/.test(main);
}

/** The command line that starts this program again as `run <config>`. */
export function workerCommand(configPath: string, main: string = Bun.main): string[] {
  const abs = resolve(configPath);
  if (isCompiled(main)) return [process.execPath, "run", abs];
  return [process.execPath, ...process.execArgv, main, "run", abs];
}

interface Slot {
  n: number;
  proc: Subprocess | null;
  ready: boolean;
  /** SIGHUP arrived while it was starting: send it once it is ready */
  pendingReload: boolean;
  /** being stopped on purpose (fewer workers after a reload) */
  retiring: boolean;
  gaveUp: boolean;
  budget: RestartBudget;
  restartTimer: ReturnType<typeof setTimeout> | null;
  readyTimer: ReturnType<typeof setTimeout> | null;
}

/** Reads and validates the config file; throws ConfigError or a read error. */
function readConfig(path: string): { text: string; cfg: CompiledConfig } {
  const text = readFileSync(resolve(path), "utf8");
  return { text, cfg: compileText(text, path) };
}

function describeExit(code: number | null, signal: string | null): string {
  return signal !== null ? `signal ${signal}` : `code ${code}`;
}

/**
 * Becomes the supervisor of `cfg.workers` workers running `path`. Never returns control to a
 * proxy: the process exits when the workers are done (0 after SIGTERM/SIGINT, 1 when they all
 * failed).
 */
export function runSupervisor(path: string, log0: Log): void {
  const log: Log = (level, msg) => log0(level, `supervisor: ${msg}`);
  let text: string;
  let cfg: CompiledConfig;
  try {
    ({ text, cfg } = readConfig(path));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  }
  const cmd = workerCommand(path);
  const slots: Slot[] = [];
  let starting = true; // until every slot of the first start has been ready once
  let stopping = false;
  let killTimer: ReturnType<typeof setTimeout> | null = null;

  const live = (): Slot[] => slots.filter((s) => s.proc !== null);

  const spawn = (slot: Slot): void => {
    slot.restartTimer = null;
    if (stopping) return;
    slot.ready = false;
    slot.pendingReload = false;
    let proc: Subprocess;
    try {
      proc = Bun.spawn(cmd, {
        env: { ...process.env, [WORKER_ENV]: String(slot.n) },
        stdio: ["ignore", "inherit", "inherit"],
        ipc: (m: unknown) => onMessage(slot, proc, m as ToSupervisor),
        onExit: (p, code, signal) => onExit(slot, p, code, signal === null ? null : String(signal)),
      });
    } catch (e) {
      log("error", `worker ${slot.n}: cannot start ${cmd[0]}: ${(e as Error).message}`);
      setTimeout(() => onExit(slot, null, 1, null), 0);
      return;
    }
    slot.proc = proc;
    proc.send({ t: "config", text, path } satisfies ToWorker);
    slot.readyTimer = setTimeout(() => {
      if (slot.proc === proc && !slot.ready) {
        log("error", `worker ${slot.n} (pid ${proc.pid}) not ready after ${READY_TIMEOUT_MS / 1000} s: killing it`);
        proc.kill("SIGKILL");
      }
    }, READY_TIMEOUT_MS);
    log("info", `worker ${slot.n} started (pid ${proc.pid})`);
  };

  const sendTo = (s: Slot, m: ToWorker): void => {
    try {
      s.proc!.send(m);
    } catch {} // exiting: its onExit follows
  };

  const onMessage = (slot: Slot, proc: Subprocess, m: ToSupervisor): void => {
    if (m === null || typeof m !== "object" || slot.proc !== proc) return;
    if (m.t === "learn") {
      // replication: to one worker (a dump for a newcomer) or to every other ready one
      for (const s of slots) {
        if (s === slot || s.proc === null || !s.ready) continue;
        if (m.to === undefined || m.to === s.n) sendTo(s, m);
      }
      return;
    }
    if (m.t !== "ready") return;
    slot.ready = true;
    if (slot.readyTimer !== null) clearTimeout(slot.readyTimer);
    slot.readyTimer = null;
    if (stopping) return;
    if (slot.pendingReload) {
      slot.pendingReload = false;
      proc.kill("SIGHUP");
    }
    // catch up on what the others learned: one ready sibling dumps its tables to this one
    const sibling = slots.find((s) => s !== slot && s.proc !== null && s.ready && !s.retiring);
    if (sibling !== undefined) sendTo(sibling, { t: "dump", to: slot.n });
    if (starting) {
      if (slots.every((s) => s.ready)) {
        starting = false;
        log("info", `${slots.length} workers ready (pids ${slots.map((s) => s.proc!.pid).join(", ")})`);
      }
    } else {
      log("info", `worker ${slot.n} ready (pid ${proc.pid})`);
    }
  };

  const onExit = (slot: Slot, proc: Subprocess | null, code: number | null, signal: string | null): void => {
    if (proc !== null && slot.proc !== proc) return;
    const pid = proc?.pid ?? 0;
    const wasReady = slot.ready;
    slot.proc = null;
    slot.ready = false;
    if (slot.readyTimer !== null) clearTimeout(slot.readyTimer);
    slot.readyTimer = null;
    if (stopping) {
      log("info", `worker ${slot.n} (pid ${pid}) exited (${describeExit(code, signal)})`);
      finishIfDone();
      return;
    }
    if (slot.retiring) {
      log("info", `worker ${slot.n} (pid ${pid}) stopped (${describeExit(code, signal)}): no longer configured`);
      slots.splice(slots.indexOf(slot), 1);
      return;
    }
    if (starting && !wasReady) {
      log("error", `worker ${slot.n} (pid ${pid}) failed to start (${describeExit(code, signal)}): stopping`);
      stop("startup failure", 1);
      return;
    }
    const now = Date.now();
    const delay = slot.budget.next(now);
    if (delay < 0) {
      slot.gaveUp = true;
      const left = live().length;
      log(
        "error",
        `worker ${slot.n} (pid ${pid}) exited unexpectedly (${describeExit(code, signal)}), more than ${slot.budget.max} restarts in ` +
          `${slot.budget.windowMs / 1000} s: giving up on it (${left} of ${slots.length} workers left; SIGHUP retries it)`,
      );
      if (left === 0 && slots.every((s) => s.restartTimer === null)) {
        log("error", "no worker left: exiting");
        process.exit(1);
      }
      return;
    }
    log(
      "warn",
      `worker ${slot.n} (pid ${pid}) exited unexpectedly (${describeExit(code, signal)}): restarting in ${delay} ms ` +
        `(restart ${slot.budget.recent(now)} of ${slot.budget.max} allowed in ${slot.budget.windowMs / 1000} s)`,
    );
    slot.restartTimer = setTimeout(() => spawn(slot), delay);
  };

  const newSlot = (n: number): Slot => ({
    n,
    proc: null,
    ready: false,
    pendingReload: false,
    retiring: false,
    gaveUp: false,
    budget: new RestartBudget(),
    restartTimer: null,
    readyTimer: null,
  });

  /** Stops the slots beyond `want` gracefully (a reload lowered `workers`). */
  const retire = (want: number): void => {
    for (const s of slots.filter((x) => !x.retiring).slice(want)) {
      s.retiring = true;
      if (s.restartTimer !== null) clearTimeout(s.restartTimer);
      s.restartTimer = null;
      if (s.proc === null) slots.splice(slots.indexOf(s), 1);
      else s.proc.kill("SIGTERM");
    }
  };

  /** Starts slots up to `want` (with the text just accepted). */
  const grow = (want: number): void => {
    for (let n = slots.filter((x) => !x.retiring).length + 1; n <= want; n++) {
      const s = newSlot(n);
      slots.push(s);
      spawn(s);
    }
  };

  const finishIfDone = (): void => {
    if (live().length > 0) return;
    if (killTimer !== null) clearTimeout(killTimer);
    log("info", "all workers exited");
    process.exit(exitCode);
  };

  let exitCode = 0;
  const stop = (why: string, code: number): void => {
    if (stopping) return;
    stopping = true;
    exitCode = code;
    for (const s of slots) {
      if (s.restartTimer !== null) clearTimeout(s.restartTimer);
      s.restartTimer = null;
    }
    const running = live();
    log("info", `stopping (${why}): SIGTERM to ${running.length} worker${running.length === 1 ? "" : "s"}, waiting for them to finish`);
    for (const s of running) s.proc!.kill("SIGTERM");
    killTimer = setTimeout(() => {
      for (const s of live()) {
        log("warn", `worker ${s.n} (pid ${s.proc!.pid}) still running after ${WORKER_STOP_MS / 1000} s: killing it`);
        s.proc!.kill("SIGKILL");
      }
    }, WORKER_STOP_MS);
    finishIfDone();
  };

  process.on("SIGTERM", () => stop("SIGTERM", 0));
  process.on("SIGINT", () => stop("SIGINT", 0));
  process.on("SIGHUP", () => {
    if (stopping) return;
    let next: { text: string; cfg: CompiledConfig };
    try {
      next = readConfig(path);
    } catch (e) {
      log("error", `reload failed, keeping the running configuration (workers not signalled): ${(e as Error).message}`);
      return;
    }
    text = next.text;
    const before = slots.filter((s) => !s.retiring).length;
    if (next.cfg.workers !== before) log("info", `workers: ${before} -> ${next.cfg.workers}`);
    retire(next.cfg.workers); // surplus ones get SIGTERM, never SIGHUP
    let told = 0;
    for (const s of slots) {
      if (s.retiring) continue;
      if (s.gaveUp) {
        s.gaveUp = false;
        s.budget.reset();
        log("info", `worker ${s.n}: trying again after the reload`);
        spawn(s);
      } else if (s.proc !== null && s.ready) {
        s.proc.kill("SIGHUP");
        told++;
      } else if (s.proc !== null) {
        s.pendingReload = true; // its SIGHUP handler may not be there yet: the signal would kill it
      }
    }
    log("info", `reload: ${path} is valid; SIGHUP to ${told} worker${told === 1 ? "" : "s"}`);
    grow(next.cfg.workers);
  });

  log("info", `starting ${cfg.workers} workers (${cmd.join(" ")})`);
  for (let n = 1; n <= cfg.workers; n++) slots.push(newSlot(n));
  for (const s of slots) spawn(s);
}
