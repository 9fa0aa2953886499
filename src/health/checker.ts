// Active health checks ([backend.NAME.health]): one HTTP/1.1 request per server every
// `interval`, over a raw Bun.connect socket (TLS for https:// servers), reading only the
// status line. `fall` consecutive failures take an up server down, `rise` consecutive
// successes bring a down server up; the verdict is written to ServerState.up, which the
// balancer and persistence already read (eligible(), persist.ts). Every change is logged
// through the function given to the checker and counted in ServerState.
//
// Not on the hot path: the core never imports this file; src/cli.ts starts it after the
// proxy, restarts it on reload and stops it on shutdown.
//
// Decisions (see docs/configuration.md, "[backend.NAME.health]"):
// - A server starts up, as in HAProxy (server.c: "up, but will fall down at first failure"):
//   a server never checked before is taken down by its first failed check, so a dead server
//   is out within about one interval of startup instead of `fall` intervals. After its first
//   success, the usual `fall` applies. A server carried over by a reload keeps its state
//   and its counters start from zero.
// - Servers in "maint" are not probed; "drain" and backup servers are.
// - The first probe of each server is at a random point of the first interval, so N servers
//   do not fire at once; after that each server is probed every `interval` from the start
//   of its previous probe (timeout <= interval, so probes of one server never overlap).
// - If something else marks a server down or up (passive checks, the admin API), the
//   streaks start again: a server marked down needs `rise` fresh successes.
// - The connection is closed right after the status line is read (terminate(): no linger,
//   as HAProxy closes its checks), so body size and keep-alive do not matter.

import type { Socket } from "bun";
import type { CompiledBackend, CompiledConfig, CompiledServer, HealthCheck } from "../core/types.ts";
import { formatStatusRanges, statusIn } from "../config/status-ranges.ts";

export type HealthLog = (level: "info" | "warn" | "error", msg: string) => void;

export interface CheckResult {
  /** the status is in `expect` */
  readonly ok: boolean;
  /** the status code read, 0 when there was none */
  readonly status: number;
  /** "200"; "status 500, expected 200-399"; "connection refused"; "timeout after 2000ms (connecting)"... */
  readonly detail: string;
}

/** What a probe needs of a server (a CompiledServer fits). */
export interface ProbeTarget {
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  readonly authority: string;
}

// ---------------------------------------------------------------------------------------------
// One probe: connect, write the request, read the status line.

/** Bytes kept while looking for the final status line (1xx heads are skipped). */
const MAX_HEAD = 8192;

interface Probe {
  readonly check: HealthCheck;
  readonly request: Uint8Array;
  /** request bytes not yet taken by the kernel */
  pending: Uint8Array | null;
  buf: Buffer | null;
  sock: Socket<Probe> | null;
  timer: ReturnType<typeof setTimeout> | null;
  done: boolean;
  readonly onDone: (r: CheckResult) => void;
}

/** The request a check sends to `server`: built once per server when the checker starts. */
export function healthRequest(server: ProbeTarget, check: HealthCheck): Uint8Array {
  const host = check.host ?? server.authority;
  return new Uint8Array(
    Buffer.from(`${check.method} ${check.path} HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: latch-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n`, "latin1"),
  );
}

function settle(p: Probe, r: CheckResult): void {
  if (p.done) return;
  p.done = true;
  if (p.timer !== null) clearTimeout(p.timer);
  p.timer = null;
  p.buf = null;
  const s = p.sock;
  p.sock = null;
  if (s !== null) s.terminate();
  p.onDone(r);
}

function fail(p: Probe, detail: string): void {
  settle(p, { ok: false, status: 0, detail });
}

function errorText(err: unknown, host: string): string {
  const code = (err as { code?: string } | null)?.code;
  switch (code) {
    case "ECONNREFUSED":
      return "connection refused";
    case "ECONNRESET":
      return "connection reset";
    case "EHOSTUNREACH":
      return "host unreachable";
    case "ENETUNREACH":
      return "network unreachable";
    case "ETIMEDOUT":
      return "connect timed out";
    case "ENOTFOUND":
    case "EAI_AGAIN":
    case "EAI_NONAME":
    case "EAI_FAIL":
      return `cannot resolve ${host}`;
  }
  const msg = (err as Error | null)?.message ?? String(err);
  return code !== undefined && !msg.includes(code) ? `${code}: ${msg}` : msg;
}

function write(p: Probe, s: Socket<Probe>): void {
  const out = p.pending;
  if (out === null) return;
  const n = s.write(out);
  p.pending = n >= out.length ? null : out.subarray(n > 0 ? n : 0);
}

/**
 * Looks for the final status line in p.buf: skips 1xx interim heads (not 101), settles the
 * probe when a final status is found or the bytes cannot be HTTP/1.x.
 */
function readStatus(p: Probe): void {
  let buf = p.buf!;
  for (;;) {
    const eol = buf.indexOf(10); // "\n": tolerate a bare LF, as HAProxy does
    if (eol < 0) {
      if (buf.length > MAX_HEAD) fail(p, "invalid response: no status line");
      else if (buf.length >= 5 && buf.latin1Slice(0, 5) !== "HTTP/") fail(p, `invalid response: ${printable(buf)}`);
      return;
    }
    const line = buf.latin1Slice(0, eol);
    const m = /^HTTP\/1\.[01] ([1-5]\d\d)(?:[ \r]|$)/.exec(line);
    if (m === null) {
      fail(p, `invalid response: ${printable(buf)}`);
      return;
    }
    const status = Number(m[1]);
    if (status < 200 && status !== 101) {
      // interim response (100 Continue, 103 Early Hints): its head ends with an empty line
      const end = buf.indexOf("\r\n\r\n");
      const endLf = buf.indexOf("\n\n");
      const next = end >= 0 ? end + 4 : endLf >= 0 ? endLf + 2 : -1;
      if (next < 0) {
        if (buf.length > MAX_HEAD) fail(p, "invalid response: interim head too long");
        return;
      }
      buf = p.buf = buf.subarray(next);
      continue;
    }
    const ok = statusIn(p.check.expect, status);
    settle(p, { ok, status, detail: ok ? String(status) : `status ${status}, expected ${formatStatusRanges(p.check.expect)}` });
    return;
  }
}

function printable(buf: Buffer): string {
  const s = buf.latin1Slice(0, Math.min(buf.length, 40)).replace(/[^\x20-\x7e]/g, ".");
  return JSON.stringify(buf.length > 40 ? `${s}...` : s);
}

const probeHandlers = {
  open(s: Socket<Probe>): void {
    const p = s.data;
    if (p.done) {
      s.terminate();
      return;
    }
    p.sock = s;
    write(p, s);
  },
  handshake(s: Socket<Probe>, _authorized: boolean, err: Error | null): void {
    // Certificates are not verified (as for forwarded requests): a certificate error
    // (self-signed, expired, wrong name) is reported here on a handshake that completed, and
    // the check goes on. A handshake that failed comes as EPROTO / ERR_SSL_*, then a close.
    const code = (err as { code?: string } | null)?.code ?? "";
    if (code === "EPROTO" || code.startsWith("ERR_SSL")) {
      // "error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER" -> "WRONG_VERSION_NUMBER"
      const msg = err!.message || code;
      fail(s.data, `TLS handshake failed (${msg.startsWith("error:") ? msg.slice(msg.lastIndexOf(":") + 1) : msg})`);
    }
  },
  drain(s: Socket<Probe>): void {
    const p = s.data;
    if (!p.done) write(p, s);
  },
  data(s: Socket<Probe>, chunk: Buffer): void {
    const p = s.data;
    if (p.done) return;
    p.buf = p.buf === null ? chunk : Buffer.concat([p.buf, chunk]);
    readStatus(p);
  },
  end(s: Socket<Probe>): void {
    const p = s.data;
    if (!p.done) fail(p, p.buf === null ? "connection closed without a response" : `connection closed mid-status line: ${printable(p.buf)}`);
  },
  close(s: Socket<Probe>, err?: Error): void {
    const p = s.data;
    p.sock = null;
    if (p.done) return;
    if (err !== undefined && err !== null) fail(p, errorText(err, ""));
    else fail(p, p.buf === null ? "connection closed without a response" : `connection closed mid-status line: ${printable(p.buf)}`);
  },
  error(s: Socket<Probe>, err: Error): void {
    fail(s.data, errorText(err, ""));
  },
  connectError(s: Socket<Probe>, err: Error): void {
    const p = s.data;
    p.sock = null;
    fail(p, errorText(err, ""));
  },
};

/**
 * Starts one probe of `server`; `onDone` is called exactly once, unless cancel() is called
 * first. Returns the cancel function.
 */
export function startProbe(server: ProbeTarget, check: HealthCheck, request: Uint8Array, onDone: (r: CheckResult) => void): () => void {
  const p: Probe = { check, request, pending: request, buf: null, sock: null, timer: null, done: false, onDone };
  p.timer = setTimeout(() => {
    p.timer = null;
    fail(p, `timeout after ${check.timeout}ms (${p.sock === null ? "connecting" : p.buf === null ? "no response" : "reading the status line"})`);
  }, check.timeout);
  try {
    const opts = { hostname: server.host, port: server.port, data: p, socket: probeHandlers };
    const pending = server.tls
      ? Bun.connect({ ...opts, tls: isIp(server.host) ? { rejectUnauthorized: false } : { rejectUnauthorized: false, serverName: server.host } })
      : Bun.connect(opts);
    pending.catch((e: unknown) => fail(p, errorText(e, server.host))); // usually already reported by connectError
  } catch (e) {
    fail(p, errorText(e, server.host));
  }
  return () => {
    if (p.done) return;
    p.done = true;
    if (p.timer !== null) clearTimeout(p.timer);
    p.timer = null;
    const s = p.sock;
    p.sock = null;
    if (s !== null) s.terminate();
  };
}

/** One probe as a promise (tests, `latch check --probe`-style tools). */
export function probe(server: ProbeTarget, check: HealthCheck): Promise<CheckResult> {
  return new Promise((resolve) => {
    startProbe(server, check, healthRequest(server, check), resolve);
  });
}

function isIp(host: string): boolean {
  return /^\d+\.\d+\.\d+\.\d+$/.test(host) || host.includes(":");
}

// ---------------------------------------------------------------------------------------------
// The scheduler: one timer per checked server.

interface Target {
  readonly backend: CompiledBackend;
  readonly server: CompiledServer;
  readonly check: HealthCheck;
  readonly request: Uint8Array;
  timer: ReturnType<typeof setTimeout> | null;
  cancel: (() => void) | null;
  /** consecutive successes / failures so far */
  oks: number;
  fails: number;
  /** ServerState.up as this checker last saw it: a change made elsewhere restarts the streaks */
  seenUp: boolean;
  /** never checked before this checker started: the first failure takes it down */
  fresh: boolean;
}

export interface HealthCheckerOptions {
  /** [0, 1): where in the first interval each server's first probe falls (default Math.random) */
  readonly random?: () => number;
  /** wall clock for ServerState.upSince / lastChange (default Date.now) */
  readonly now?: () => number;
}

export class HealthChecker {
  private readonly log: HealthLog;
  private readonly random: () => number;
  private readonly now: () => number;
  private targets: Target[] = [];
  /** bumped by stop(): results of an older run are dropped */
  private generation = 0;

  constructor(log: HealthLog, opts: HealthCheckerOptions = {}) {
    this.log = log;
    this.random = opts.random ?? Math.random;
    this.now = opts.now ?? Date.now;
  }

  /** Servers being checked. */
  get size(): number {
    return this.targets.length;
  }

  /** Starts checking every server of every backend with [health]. Stops a previous run first. */
  start(config: CompiledConfig): void {
    this.stop();
    const gen = this.generation;
    for (const backend of config.backends.values()) {
      const check = backend.health;
      if (check === null) continue;
      for (const server of backend.servers) {
        const st = server.state;
        const fresh = st.checks === 0 && st.up;
        const t: Target = {
          backend,
          server,
          check,
          request: healthRequest(server, check),
          timer: null,
          cancel: null,
          oks: 0,
          fails: fresh ? check.fall - 1 : 0,
          seenUp: st.up,
          fresh,
        };
        this.targets.push(t);
        this.schedule(t, gen, Math.floor(this.random() * check.interval));
      }
      const n = backend.servers.length;
      this.log(
        "info",
        `health: checking ${n} server${n === 1 ? "" : "s"} of backend ${backend.name} every ${check.interval}ms (${check.method} ${check.path}, expect ${formatStatusRanges(check.expect)}, rise ${check.rise}, fall ${check.fall})`,
      );
    }
  }

  /** Stops every timer and probe in flight; ServerState keeps its last verdict. */
  stop(): void {
    this.generation++;
    for (const t of this.targets) {
      if (t.timer !== null) clearTimeout(t.timer);
      t.timer = null;
      t.cancel?.();
      t.cancel = null;
    }
    this.targets = [];
  }

  private schedule(t: Target, gen: number, delay: number): void {
    t.timer = setTimeout(() => this.run(t, gen), delay);
    t.timer.unref?.();
  }

  private run(t: Target, gen: number): void {
    t.timer = null;
    if (gen !== this.generation) return;
    const started = this.now();
    const st = t.server.state;
    if (st.admin === "maint") {
      // not probed; when it leaves maintenance it starts counting again from its current state
      t.oks = 0;
      t.fails = 0;
      t.seenUp = st.up;
      this.schedule(t, gen, t.check.interval);
      return;
    }
    t.cancel = startProbe(t.server, t.check, t.request, (r) => {
      t.cancel = null;
      if (gen !== this.generation) return;
      this.record(t, r);
      this.schedule(t, gen, Math.max(0, started + t.check.interval - this.now()));
    });
  }

  private record(t: Target, r: CheckResult): void {
    const st = t.server.state;
    if (st.up !== t.seenUp) {
      // changed by someone else since the last check (passive marking, admin)
      t.oks = 0;
      t.fails = 0;
      t.fresh = false;
    }
    st.checks++;
    st.lastCheck = r.detail;
    if (r.ok) {
      t.fails = 0;
      t.fresh = false;
      t.oks++;
      if (!st.up && t.oks >= t.check.rise) {
        const why = count(t.oks, "consecutive success", "consecutive successes");
        this.setUp(t, true);
        this.log("info", `health: backend ${t.backend.name} server ${t.server.id} UP (${why}: ${r.detail})`);
      }
    } else {
      st.checkFailures++;
      t.oks = 0;
      t.fails++;
      if (st.up && t.fails >= t.check.fall) {
        const why = t.fresh ? `first check failed` : count(t.fails, "consecutive failure", "consecutive failures");
        this.setUp(t, false);
        this.log("warn", `health: backend ${t.backend.name} server ${t.server.id} DOWN (${why}: ${r.detail})`);
        this.reportBackend(t.backend);
      }
      t.fresh = false;
    }
    t.seenUp = st.up;
  }

  private setUp(t: Target, up: boolean): void {
    const st = t.server.state;
    const now = this.now();
    st.up = up;
    st.lastChange = now;
    if (up) st.upSince = now;
    else st.downs++;
    // a streak that changed the state starts over
    t.oks = 0;
    t.fails = 0;
  }

  /** After a server went down: say when the backend is left with backups only, or nothing. */
  private reportBackend(b: CompiledBackend): void {
    let primaries = 0;
    let backups = 0;
    for (const s of b.servers) {
      if (!s.state.up || s.state.admin === "maint") continue;
      if (s.backup) backups++;
      else primaries++;
    }
    if (primaries > 0) return;
    if (backups > 0) this.log("warn", `health: backend ${b.name} has no primary server up; ${count(backups, "backup server takes", "backup servers take")} the traffic`);
    else this.log("error", `health: backend ${b.name} has no server available`);
  }
}

function count(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}
