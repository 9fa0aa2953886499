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
function ms(t: number): number {
  if (t < 0) return -1;
  return (t | 0) === t ? t : Math.round(t * 10) / 10;
}

/** Names Latch itself made (config names, "--"-style flags, an address): never escaped, only `-` when empty. */
const dash = (s: string): string => (s.length === 0 ? "-" : s);

/**
 * Combined log format plus Latch's fields, one line with its "\n":
 * `client - - [time] "request" status bytes "referer" "user-agent" listener backend/server
 * persist=XY sid=S Tq/Tw/Tc/Tr/Tt=a/b/c/d/e "note"`. Empty fields are `-`. What came from the
 * client or a backend is escaped (logField); the listener, backend and server names are
 * config names (letters, digits, `_.:-`), the client an address, the flags Latch's own.
 */
export function formatCombined(r: AccessRecord): string {
  const request = r.method.length === 0 ? "-" : `${logField(r.method, true)} ${logField(r.target, true)} ${logField(r.version, true)}`;
  return (
    `${dash(r.client)} - - [${clfTime(r.time)}] "${request}" ${r.status} ${r.bytesOut} ` +
    `"${logField(r.referer, true)}" "${logField(r.userAgent, true)}" ${dash(r.listener)} ${dash(r.backend)}/${dash(r.server)} ` +
    `persist=${logField(r.persist, false)} sid=${logField(r.sessionId, false)} ` +
    `Tq/Tw/Tc/Tr/Tt=${ms(r.tq)}/${ms(r.tw)}/${ms(r.tc)}/${ms(r.tr)}/${ms(r.tt)} "${logField(r.note, true)}"\n`
  );
}

/** One JSON object per line: every record field, `time` as ISO 8601 UTC and `ts` in ms since the epoch. */
export function formatJson(r: AccessRecord): string {
  // one object literal and one stringify: faster than stringifying field by field
  return (
    JSON.stringify({
      time: isoTime(r.time),
      ts: r.time,
      client: r.client,
      clientPort: r.clientPort,
      listener: r.listener,
      method: r.method,
      target: r.target,
      version: r.version,
      status: r.status,
      bytesOut: r.bytesOut,
      referer: r.referer,
      userAgent: r.userAgent,
      backend: r.backend,
      server: r.server,
      persist: r.persist,
      sessionId: r.sessionId,
      tq: r.tq,
      tw: r.tw,
      tc: r.tc,
      tr: r.tr,
      tt: r.tt,
      note: r.note,
    }) + "\n"
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

/** a pipe takes a write of at most this many bytes whole (POSIX PIPE_BUF on Linux) */
const PIPE_BUF = 4096;

const writeStdout = (data: string | Uint8Array): Promise<void> =>
  new Promise<void>((done, fail) => process.stdout.write(data, (e) => (e ? fail(e) : done())));

/**
 * The process's stdout. Its write callback says when the chunk has left (a stalled reader:
 * not yet, and AccessLog keeps batching). A stdout that fails (EPIPE, ENOSPC) emits "error"
 * on the stream, which would kill the process: a listener turns that into a failed write.
 *
 * `shared`: other processes write to the same stdout (workers of a supervisor). A pipe
 * keeps a write whole only up to PIPE_BUF bytes, so the batch goes out in pieces of whole
 * lines of at most that size, one after the other: lines of two workers never mix.
 */
export function stdoutSink(shared = false): LogSink {
  if (!stdoutGuarded) {
    stdoutGuarded = true;
    process.stdout.on("error", () => {}); // reported through the write callbacks
  }
  return {
    name: "stdout",
    async write(chunk) {
      if (chunk.length === 0) return;
      if (!shared || chunk.length <= PIPE_BUF / 4) return writeStdout(chunk); // <= 4 bytes per char in UTF-8
      const buf = Buffer.from(chunk, "utf8");
      for (let pos = 0; pos < buf.length; ) {
        let end = Math.min(buf.length, pos + PIPE_BUF);
        if (end < buf.length) {
          const nl = buf.lastIndexOf(0x0a, end - 1);
          end = nl >= pos ? nl + 1 : buf.indexOf(0x0a, end) + 1 || buf.length; // a line longer than PIPE_BUF: whole, alone
        }
        await writeStdout(buf.subarray(pos, end));
        pos = end;
      }
    },
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
  if (!(e instanceof Error)) return String(e);
  const code = (e as NodeJS.ErrnoException).code;
  return code === undefined || e.message.startsWith(code) ? e.message : `${code}: ${e.message}`;
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
  #inFlightLines = 0;
  #retryAt = 0;
  #rotate = false;
  #rotateLines = 0;
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

  /**
   * Log rotation (SIGHUP): the lines batched so far still go to the file as it was (it has
   * just been renamed), then the sink is reopened for the next batch.
   */
  reopen(): void {
    this.#retryAt = 0; // the operator may just have fixed the cause of a failure
    this.#rotate = true;
    this.#rotateLines = this.#pending.length;
    if (this.#inFlight === null) this.#rotateNow();
  }

  /** Writes the lines batched before the reopen to the old file, then reopens. */
  #rotateNow(): void {
    const n = this.#rotateLines;
    this.#rotate = false;
    this.#rotateLines = 0;
    if (n > 0) {
      const before = this.#pending.slice(0, n).join("");
      this.#pending = this.#pending.slice(n);
      this.#pendingBytes -= before.length;
      this.#write(before, n); // the sink has started this write on the old file
    }
    this.#sink.reopen();
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
    if (!done) this.#warn(`access log: ${this.#sink.name} did not take the last ${this.#pending.length + this.#inFlightLines} lines within ${timeoutMs} ms`);
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
    this.#inFlightLines = lines;
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
    this.#inFlightLines = 0;
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
    if (this.#rotate) {
      this.#rotateNow();
      if (this.#inFlight !== null) return; // its end arms the next write
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
export function reconfigureAccessLog(
  current: AccessLog | null,
  next: AccessLogSettings,
  warn?: (msg: string) => void,
  /** other processes (workers) write to the same stdout */
  sharedStdout = false,
): AccessLog | null {
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
  const log = new AccessLog({ format: next.format, sink: next.file === null ? stdoutSink(sharedStdout) : fileSink(next.file), warn });
  log.open();
  return log;
}
