// The access log: formats the core's AccessRecords (src/core/access.ts) and writes them off
// the hot path, in batches.
//
// push() is what the forwarding path calls, once per finished request: it formats one line
// and appends it to an in-memory batch: O(1), no I/O, never throws. A flush every FLUSH_MS,
// or as soon as a batch holds BATCH_LINES lines, hands the whole batch to the sink in one
// asynchronous write. Only one write is in flight at a time; while it is, lines keep
// batching up to a bound (bytes and lines), and beyond it new lines are dropped and counted:
// a slow or stalled sink costs log lines, never forwarding. A failed write (full disk,
// EACCES, EIO, a closed pipe) loses its batch, is counted and reported once per burst, and
// the next batch is tried again after RETRY_MS.

import type { AccessRecord } from "../core/access.ts";
import { open, type FileHandle } from "node:fs/promises";

export type AccessLogFormat = "combined" | "json";

// ---------------------------------------------------------------------------------------------
// Formatting

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const HEX = "0123456789ABCDEF";
const pad2 = (n: number): string => (n < 10 ? "0" + n : String(n));

// Time stamps change once a second: cache the last one of each kind.
let clfSec = -1;
let clfStamp = "";
let isoSec = -1;
let isoStamp = "";

/** `21/Nov/2026:06:40:13 +0000` (UTC, as nginx's $time_local with TZ=UTC) */
export function clfTime(ms: number): string {
  const sec = Math.floor(ms / 1000);
  if (sec !== clfSec) {
    const d = new Date(sec * 1000);
    clfStamp =
      `${pad2(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:` +
      `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())} +0000`;
    clfSec = sec;
  }
  return clfStamp;
}

/** `2026-11-21T06:40:13.123Z` */
export function isoTime(ms: number): string {
  const sec = Math.floor(ms / 1000);
  if (sec !== isoSec) {
    isoStamp = new Date(sec * 1000).toISOString().slice(0, 19); // "2026-11-21T06:40:13"
    isoSec = sec;
  }
  const frac = Math.floor(ms - sec * 1000);
  return `${isoStamp}.${frac < 10 ? "00" : frac < 100 ? "0" : ""}${frac}Z`;
}

/** One byte as nginx escapes it in a log: `\xHH`. */
const hexByte = (b: number): string => "\\x" + HEX[b >> 4] + HEX[b & 15];

/**
 * A field for the combined line, escaped as nginx does (`ngx_http_log_escape`): `"`, `\`,
 * control bytes and bytes from 0x7F up become `\xHH` (characters above 0xFF: their UTF-8
 * bytes). In an unquoted field a space is escaped too, so that fields stay split by spaces.
 * Empty is `-`.
 */
export function logField(s: string, quoted: boolean): string {
  if (s.length === 0) return "-";
  const min = quoted ? 0x20 : 0x21;
  let i = 0;
  for (; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < min || c > 0x7e || c === 0x22 || c === 0x5c) break;
  }
  if (i === s.length) return s;
  let out = s.slice(0, i);
  for (; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= min && c <= 0x7e && c !== 0x22 && c !== 0x5c) out += s[i];
    else if (c <= 0xff) out += hexByte(c);
    else {
      const cp = s.codePointAt(i)!;
      if (cp > 0xffff) i++;
      for (const b of Buffer.from(String.fromCodePoint(cp), "utf8")) out += hexByte(b);
    }
  }
  return out;
}

/** A timing in ms: -1 when not reached, integers as is, fractions to 0.1 ms. */
function ms(t: number): string {
  if (t < 0) return "-1";
  return Number.isInteger(t) ? String(t) : String(Math.round(t * 10) / 10);
}

/**
 * Combined log format plus Latch's fields, one line with its "\n":
 * `client - - [time] "request" status bytes "referer" "user-agent" listener backend/server
 * persist=XY sid=S Tq/Tw/Tc/Tr/Tt=a/b/c/d/e "note"`. Empty fields are `-`.
 */
export function formatCombined(r: AccessRecord): string {
  const request = r.method.length === 0 ? "-" : logField(`${r.method} ${r.target} ${r.version}`, true);
  return (
    `${logField(r.client, false)} - - [${clfTime(r.time)}] "${request}" ${r.status} ${r.bytesOut} ` +
    `"${logField(r.referer, true)}" "${logField(r.userAgent, true)}" ` +
    `${logField(r.listener, false)} ${logField(r.backend, false)}/${logField(r.server, false)} ` +
    `persist=${logField(r.persist, false)} sid=${logField(r.sessionId, false)} ` +
    `Tq/Tw/Tc/Tr/Tt=${ms(r.tq)}/${ms(r.tw)}/${ms(r.tc)}/${ms(r.tr)}/${ms(r.tt)} "${logField(r.note, true)}"\n`
  );
}

const q = JSON.stringify;

/** One JSON object per line: every record field, `time` as ISO 8601 UTC and `ts` in ms since the epoch. */
export function formatJson(r: AccessRecord): string {
  return (
    `{"time":"${isoTime(r.time)}","ts":${r.time},"client":${q(r.client)},"clientPort":${r.clientPort},` +
    `"listener":${q(r.listener)},"method":${q(r.method)},"target":${q(r.target)},"version":${q(r.version)},` +
    `"status":${r.status},"bytesOut":${r.bytesOut},"referer":${q(r.referer)},"userAgent":${q(r.userAgent)},` +
    `"backend":${q(r.backend)},"server":${q(r.server)},"persist":${q(r.persist)},"sessionId":${q(r.sessionId)},` +
    `"tq":${r.tq},"tw":${r.tw},"tc":${r.tc},"tr":${r.tr},"tt":${r.tt},"note":${q(r.note)}}\n`
  );
}

export const FORMATTERS: Record<AccessLogFormat, (r: AccessRecord) => string> = { combined: formatCombined, json: formatJson };

// ---------------------------------------------------------------------------------------------
// Sinks: where a batch goes. One write at a time (AccessLog never overlaps them).

export interface LogSink {
  /** what the warnings call it: the path, or "stdout" */
  readonly name: string;
  /** Writes the whole chunk; resolves when written, rejects on an error. "" only opens. */
  write(chunk: string): Promise<void>;
  /** Log rotation: the next write goes to a freshly opened file. */
  reopen(): void;
  close(): Promise<void>;
}

/**
 * A file opened for appending (O_APPEND: several processes may share it; one batch is one
 * write(2), so their lines never interleave). fs.promises writes run on the thread pool, so
 * a slow or stalled disk holds a pool thread, never the event loop.
 */
export function fileSink(path: string): LogSink {
  let fh: FileHandle | null = null;
  let reopen = false;
  return {
    name: path,
    async write(chunk) {
      if (reopen && fh !== null) {
        const old = fh;
        fh = null;
        await old.close().catch(() => {});
      }
      reopen = false;
      if (fh === null) fh = await open(path, "a", 0o644);
      if (chunk.length === 0) return;
      const buf = Buffer.from(chunk, "utf8");
      let off = 0;
      while (off < buf.length) {
        const { bytesWritten } = await fh.write(buf, off, buf.length - off);
        if (bytesWritten <= 0) throw new Error(`short write to ${path}`);
        off += bytesWritten;
      }
    },
    reopen() {
      reopen = true;
    },
    async close() {
      const old = fh;
      fh = null;
      await old?.close().catch(() => {});
    },
  };
}

let stdoutGuarded = false;

/**
 * The process's stdout. Its write callback says when the chunk has left (a stalled reader:
 * not yet, and AccessLog keeps batching). A stdout that fails (EPIPE, ENOSPC) emits "error"
 * on the stream, which would kill the process: a listener turns that into a failed write.
 */
export function stdoutSink(): LogSink {
  if (!stdoutGuarded) {
    stdoutGuarded = true;
    process.stdout.on("error", () => {}); // reported through the write callbacks
  }
  return {
    name: "stdout",
    write: (chunk) =>
      chunk.length === 0 ? Promise.resolve() : new Promise<void>((done, fail) => process.stdout.write(chunk, (e) => (e ? fail(e) : done()))),
    reopen() {},
    close: async () => {},
  };
}

// ---------------------------------------------------------------------------------------------
// The batching writer

export interface AccessLogOptions {
  format: AccessLogFormat;
  sink: LogSink;
  /** how stale a line may get before it is written (ms) */
  flushMs?: number;
  /** a batch this long is written at once, without waiting for flushMs */
  batchLines?: number;
  /** bound of the lines waiting (bytes, lines): beyond it new lines are dropped */
  maxPendingBytes?: number;
  maxPendingLines?: number;
  /** after a failed write, the next one waits this long (ms) */
  retryMs?: number;
  /** a drop burst is reported when it ends (nothing dropped for quietMs), or every reportMs while it lasts */
  quietMs?: number;
  reportMs?: number;
  /** one line for the operator (stderr) */
  warn?: (msg: string) => void;
}

export interface AccessLogStats {
  /** lines accepted into a batch */
  lines: number;
  /** lines written by successful writes */
  written: number;
  writes: number;
  /** lines refused because the pending bound was reached */
  dropped: number;
  /** failed writes, and the lines they lost */
  errors: number;
  lost: number;
  pendingLines: number;
  pendingBytes: number;
}

const FLUSH_MS = 100;
const BATCH_LINES = 1000;
const MAX_PENDING_BYTES = 4 << 20;
const MAX_PENDING_LINES = 50_000;
const RETRY_MS = 1000;

function describeError(e: unknown): string {
  if (e instanceof Error) return (e as NodeJS.ErrnoException).code ? `${(e as NodeJS.ErrnoException).code}: ${e.message}` : e.message;
  return String(e);
}

export class AccessLog {
  #format: (r: AccessRecord) => string;
  #sink: LogSink;
  readonly #flushMs: number;
  readonly #batchLines: number;
  readonly #maxBytes: number;
  readonly #maxLines: number;
  readonly #retryMs: number;
  readonly #quietMs: number;
  readonly #reportMs: number;
  readonly #warn: (msg: string) => void;

  #pending: string[] = [];
  #pendingBytes = 0;
  #lastLen = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #immediate = false;
  #inFlight: Promise<void> | null = null;
  #retryAt = 0;
  #closed = false;

  // drop burst
  #burstDropped = 0;
  #lastDropAt = 0;
  #burstReportedAt = 0;
  #burstTimer: ReturnType<typeof setInterval> | null = null;
  // error burst
  #failing = 0; // failed writes in the current error burst
  #failingLost = 0;

  readonly #stats: AccessLogStats = { lines: 0, written: 0, writes: 0, dropped: 0, errors: 0, lost: 0, pendingLines: 0, pendingBytes: 0 };

  constructor(opts: AccessLogOptions) {
    this.#format = FORMATTERS[opts.format];
    this.#sink = opts.sink;
    this.#flushMs = opts.flushMs ?? FLUSH_MS;
    this.#batchLines = opts.batchLines ?? BATCH_LINES;
    this.#maxBytes = opts.maxPendingBytes ?? MAX_PENDING_BYTES;
    this.#maxLines = opts.maxPendingLines ?? MAX_PENDING_LINES;
    this.#retryMs = opts.retryMs ?? RETRY_MS;
    this.#quietMs = opts.quietMs ?? 1000;
    this.#reportMs = opts.reportMs ?? 10_000;
    this.#warn = opts.warn ?? ((msg) => process.stderr.write(`${new Date().toISOString()} warn ${msg}\n`));
  }

  /**
   * The core's sink (setAccessSink(log.push)): formats the record into the current batch.
   * No I/O, no promise, never throws; the record is not kept.
   */
  readonly push = (r: AccessRecord): void => {
    if (this.#closed) return;
    // full (a line like the last one would not fit): dropped without even being formatted
    if (this.#pending.length >= this.#maxLines || this.#pendingBytes + this.#lastLen > this.#maxBytes) return this.#drop();
    let line: string;
    try {
      line = this.#format(r);
    } catch {
      return; // a malformed record must not reach the forwarding path as an exception
    }
    if (this.#pendingBytes + line.length > this.#maxBytes || this.#pending.length >= this.#maxLines) {
      this.#drop();
      return;
    }
    this.#lastLen = line.length;
    this.#pending.push(line);
    this.#pendingBytes += line.length;
    this.#stats.lines++;
    if (this.#pending.length >= this.#batchLines) {
      if (this.#inFlight === null && !this.#immediate && Date.now() >= this.#retryAt) {
        this.#immediate = true;
        setImmediate(this.#onImmediate);
      }
    } else if (this.#timer === null && this.#inFlight === null) {
      this.#arm(this.#flushMs);
    }
  };

  /** Opens the sink now (a file: created, or its error reported) instead of at the first flush. */
  open(): void {
    if (this.#inFlight === null) this.#write("", 0);
  }

  setFormat(format: AccessLogFormat): void {
    this.#format = FORMATTERS[format];
  }

  /** Log rotation (SIGHUP): the next batch goes to a newly opened file. */
  reopen(): void {
    this.#sink.reopen();
    this.#retryAt = 0; // the operator may just have fixed the cause of a failure
  }

  /** the sink's name: a path, or "stdout" */
  get destination(): string {
    return this.#sink.name;
  }

  stats(): AccessLogStats {
    return { ...this.#stats, pendingLines: this.#pending.length, pendingBytes: this.#pendingBytes };
  }

  /** Writes everything pending now (after the write in flight) and resolves when done or failed. */
  async flush(): Promise<void> {
    while (this.#inFlight !== null || this.#pending.length > 0) {
      if (this.#inFlight !== null) await this.#inFlight;
      else {
        const lines = this.#pending.length;
        this.#write(this.#take(), lines);
      }
    }
  }

  /**
   * Stops accepting lines, writes what is pending (waiting at most timeoutMs for a slow sink)
   * and closes the sink. Reports a drop burst that was still open.
   */
  async close(timeoutMs = 2000): Promise<void> {
    if (this.#closed) return;
    this.#closed = true; // push takes nothing more; flush still writes what is pending
    let timer: ReturnType<typeof setTimeout> | undefined;
    const gaveUp = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs)));
    const done = await Promise.race([this.flush().then(() => true), gaveUp]);
    clearTimeout(timer);
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#reportDrops(true);
    if (!done) this.#warn(`access log: ${this.#sink.name} did not take the last ${this.#pending.length} lines within ${timeoutMs} ms`);
    this.#pending = [];
    this.#pendingBytes = 0;
    if (done) await this.#sink.close();
  }

  // -------------------------------------------------------------------------------------------

  #arm(delay: number): void {
    if (this.#timer !== null) return;
    this.#timer = setTimeout(this.#onTimer, delay);
    this.#timer.unref?.();
  }

  readonly #onTimer = (): void => {
    this.#timer = null;
    this.#kick();
  };

  readonly #onImmediate = (): void => {
    this.#immediate = false;
    this.#kick();
  };

  /** Starts a write of the pending batch if none is in flight and no retry pause is running. */
  #kick(): void {
    if (this.#inFlight !== null || this.#pending.length === 0) return;
    const wait = this.#retryAt - Date.now();
    if (wait > 0) return this.#arm(wait);
    const lines = this.#pending.length;
    this.#write(this.#take(), lines);
  }

  #take(): string {
    const chunk = this.#pending.join("");
    this.#pending = [];
    this.#pendingBytes = 0;
    return chunk;
  }

  #write(chunk: string, lines: number): void {
    this.#stats.writes += lines > 0 ? 1 : 0;
    let p: Promise<void>;
    try {
      p = this.#sink.write(chunk);
    } catch (e) {
      p = Promise.reject(e); // a sink that throws synchronously is just a failed write
    }
    this.#inFlight = p.then(
      () => this.#done(lines, null),
      (e) => this.#done(lines, e),
    );
  }

  #done(lines: number, error: unknown): void {
    this.#inFlight = null;
    if (error === null) {
      this.#stats.written += lines;
      if (this.#failing > 0) {
        this.#warn(`access log: writing ${this.#sink.name} again after ${this.#failing} failed write${this.#failing === 1 ? "" : "s"} (${this.#failingLost} lines lost)`);
        this.#failing = 0;
        this.#failingLost = 0;
      }
    } else {
      this.#stats.errors++;
      this.#stats.lost += lines;
      if (this.#failing === 0) this.#warn(`access log: cannot write ${this.#sink.name}: ${describeError(error)}; lines are lost until it recovers (retrying every ${this.#retryMs} ms)`);
      this.#failing++;
      this.#failingLost += lines;
      this.#retryAt = Date.now() + this.#retryMs;
    }
    if (this.#pending.length === 0) return;
    if (this.#pending.length >= this.#batchLines) this.#kick(); // backlogged: at once (or after the retry pause)
    else this.#arm(this.#flushMs);
  }

  #drop(): void {
    this.#stats.dropped++;
    this.#lastDropAt = Date.now();
    if (this.#burstDropped++ === 0) {
      this.#burstReportedAt = this.#lastDropAt;
      if (this.#burstTimer === null) {
        this.#burstTimer = setInterval(() => this.#reportDrops(false), Math.min(this.#quietMs, this.#reportMs));
        this.#burstTimer.unref?.();
      }
    }
  }

  /** One line per burst of drops: when it has ended (quiet for quietMs), every reportMs while it lasts, or at close. */
  #reportDrops(final: boolean): void {
    if (this.#burstDropped === 0) {
      if (final && this.#burstTimer !== null) clearInterval(this.#burstTimer);
      return;
    }
    const now = Date.now();
    const ended = final || now - this.#lastDropAt >= this.#quietMs;
    if (!ended && now - this.#burstReportedAt < this.#reportMs) return;
    this.#warn(`access log: dropped ${this.#burstDropped} lines: sink too slow / disk full (${this.#sink.name}${ended ? "" : ", still dropping"})`);
    this.#burstDropped = 0;
    this.#burstReportedAt = now;
    if (ended && this.#burstTimer !== null) {
      clearInterval(this.#burstTimer);
      this.#burstTimer = null;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// For the composition root

export interface AccessLogSettings {
  readonly access: boolean;
  readonly format: AccessLogFormat;
  /** absolute path; null = stdout */
  readonly file: string | null;
}

/**
 * Applies [log] settings (at start and on each reload): returns the log to use, or null
 * when access logging is off. An unchanged destination is kept (and reopened, for rotation
 * by mv + SIGHUP); a new one replaces the old, which writes what it holds and closes.
 */
export function reconfigureAccessLog(current: AccessLog | null, next: AccessLogSettings, warn?: (msg: string) => void): AccessLog | null {
  if (!next.access) {
    void current?.close();
    return null;
  }
  if (current !== null && current.destination === (next.file ?? "stdout")) {
    current.setFormat(next.format);
    current.reopen();
    return current;
  }
  void current?.close();
  const log = new AccessLog({ format: next.format, sink: next.file === null ? stdoutSink() : fileSink(next.file), warn });
  log.open();
  return log;
}
