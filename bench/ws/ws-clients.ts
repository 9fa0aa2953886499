// WebSocket load-generator process for bench/ws/ws-bench.ts: raw `Bun.connect` sockets speaking
// RFC 6455 themselves (real handshake with Sec-WebSocket-Accept checked, masked client frames,
// frame parser for the replies), so one process can hold thousands of connections and drive
// hundreds of thousands of messages per second without a WebSocket library's overhead.
//
//   bun bench/ws/ws-clients.ts hold PORT PATH N CONCURRENCY
//     Waits for commands on stdin, one per line, answering each with one JSON line on stdout:
//       open   open N connections (at most CONCURRENCY connecting/handshaking at once)
//              -> {"ev":"open","ok":..,"failed":..,"ms":..,"errors":{..}}
//       echo   every open connection sends one 64-byte binary message naming it and waits
//              for the same bytes back -> {"ev":"echo","ok":..,"bad":..,"missing":..,"ms":..}
//       close  every connection sends a close frame (1000) and waits for the server's close
//              and the TCP close -> {"ev":"closed","clean":..,"unclean":..,"ms":..}; then exits
//
//   bun bench/ws/ws-clients.ts echo PORT PATH CONNS DEPTH SECONDS WARMUP_MS SIZE
//     Opens CONNS connections ({"ev":"connected"}), then each keeps DEPTH binary messages of SIZE
//     bytes in flight (ping-pong with a pipeline: every echo received is answered by a new
//     message, all the replies to one read in one write). After WARMUP_MS: {"ev":"start"};
//     SECONDS later: {"ev":"done","msgs":..,"seconds":..,"p50us":..,"p99us":..,"cpuUs":..,"perSecond":[..]}; exits.
//
// Every line is prefixed by nothing else; errors go to stderr. Exits by itself when its parent
// goes away.

import { createHash, randomBytes } from "node:crypto";
import type { Socket } from "bun";

const [mode, portS, path, ...rest] = process.argv.slice(2);
const port = Number(portS);
if ((mode !== "hold" && mode !== "echo") || !Number.isInteger(port) || !path?.startsWith("/")) {
  console.error("usage: ws-clients.ts hold PORT PATH N CONCURRENCY | echo PORT PATH CONNS DEPTH SECONDS WARMUP_MS SIZE");
  process.exit(2);
}
const emit = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + "\n");

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const CRLFCRLF = Buffer.from("\r\n\r\n");
const N_ACCEPT = "\r\nsec-websocket-accept:";

/** A masked client frame (FIN set). */
function frame(op: number, payload: Uint8Array): Buffer {
  const n = payload.length;
  const hl = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const f = Buffer.allocUnsafe(hl + 4 + n);
  f[0] = 0x80 | op;
  if (n < 126) f[1] = 0x80 | n;
  else if (n < 65536) {
    f[1] = 0x80 | 126;
    f.writeUInt16BE(n, 2);
  } else {
    f[1] = 0x80 | 127;
    f.writeBigUInt64BE(BigInt(n), 2);
  }
  const mask = randomBytes(4);
  mask.copy(f, hl);
  for (let i = 0; i < n; i++) f[hl + 4 + i] = payload[i]! ^ mask[i & 3]!;
  return f;
}

const S_CONNECTING = 0, S_HANDSHAKE = 1, S_OPEN = 2, S_CLOSING = 3, S_CLOSED = 4;

class Conn {
  sock: Socket<Conn> | null = null;
  state = S_CONNECTING;
  readonly key = randomBytes(16).toString("base64");
  readonly accept = createHash("sha1").update(this.key + GUID).digest("base64");
  in: Buffer | null = null;
  out: Buffer | null = null;
  gotServerClose = false;
  /** echo mode: send times of the messages in flight (FIFO ring) */
  ring: Float64Array;
  rh = 0;
  rt = 0;
  /** hold mode: the message this connection sent, and whether it came back intact */
  probe: Buffer | null = null;
  expect: Buffer | null = null;
  echoed = 0; // 0 none, 1 ok, 2 wrong bytes
  onOpen: ((err: string | null) => void) | null = null;
  onClosed: (() => void) | null = null;
  constructor(readonly id: number, depth: number) {
    this.ring = new Float64Array(Math.max(1, depth) + 1);
  }
  send(data: Uint8Array): void {
    const s = this.sock;
    if (s === null || this.state === S_CLOSED) return;
    if (this.out !== null) {
      this.out = Buffer.concat([this.out, data]);
      return;
    }
    const n = s.write(data);
    if (n < data.length) this.out = Buffer.from(data.subarray(n > 0 ? n : 0));
  }
}

// ---------------------------------------------------------------------------- per-mode hooks

/** Called with each complete data message (op 1 or 2) received on an open connection. */
let onMessage: (c: Conn, buf: Buffer, s: number, n: number) => void = () => {};
/** Called once per read, after its frames, with how many data messages it held. */
let afterRead: (c: Conn, count: number) => void = () => {};

function handshakeDone(c: Conn, buf: Buffer): Buffer | null {
  const end = buf.indexOf(CRLFCRLF);
  if (end < 0) {
    if (buf.length > 16384) fail(c, "response head too large");
    else c.in = buf;
    return null;
  }
  const head = buf.latin1Slice(0, end + 2);
  const status = head.slice(9, 12);
  if (!head.startsWith("HTTP/1.1 101")) {
    fail(c, `status ${status}`);
    return null;
  }
  const at = head.toLowerCase().indexOf(N_ACCEPT);
  const val = at < 0 ? null : head.slice(at + N_ACCEPT.length, head.indexOf("\r\n", at + 2)).trim();
  if (val !== c.accept) {
    fail(c, val === null ? "101 without Sec-WebSocket-Accept" : "wrong Sec-WebSocket-Accept");
    return null;
  }
  c.state = S_OPEN;
  const cb = c.onOpen;
  c.onOpen = null;
  cb?.(null);
  return end + 4 < buf.length ? buf.subarray(end + 4) : null;
}

function fail(c: Conn, why: string): void {
  const cb = c.onOpen;
  c.onOpen = null;
  c.state = S_CLOSED;
  c.sock?.terminate();
  cb?.(why);
}

function onData(sock: Socket<Conn>, chunk: Buffer): void {
  const c = sock.data;
  let buf = c.in === null ? chunk : Buffer.concat([c.in, chunk]);
  c.in = null;
  if (c.state === S_HANDSHAKE) {
    const rest = handshakeDone(c, buf);
    if (rest === null) return;
    buf = rest;
  }
  if (c.state !== S_OPEN && c.state !== S_CLOSING) return;
  let off = 0, count = 0;
  const len = buf.length;
  while (off + 2 <= len) {
    const b0 = buf[off]!, b1 = buf[off + 1]!;
    let n = b1 & 0x7f, hl = 2;
    if (n === 126) {
      if (off + 4 > len) break;
      n = buf.readUInt16BE(off + 2);
      hl = 4;
    } else if (n === 127) {
      if (off + 10 > len) break;
      n = Number(buf.readBigUInt64BE(off + 2));
      hl = 10;
    }
    if (b1 & 0x80) hl += 4; // servers do not mask; tolerated, not unmasked (never seen)
    if (off + hl + n > len) break;
    const op = b0 & 0x0f;
    if (op === 1 || op === 2) {
      count++;
      onMessage(c, buf, off + hl, n);
    } else if (op === 8) {
      c.gotServerClose = true;
      if (c.state === S_OPEN) {
        c.state = S_CLOSING;
        c.send(frame(8, Buffer.from([0x03, 0xe8])));
      }
    } else if (op === 9) c.send(frame(10, buf.subarray(off + hl, off + hl + n))); // ping -> pong
    off += hl + n;
  }
  if (off < len) c.in = Buffer.from(buf.subarray(off));
  if (count > 0) afterRead(c, count);
}

const handlers = {
  binaryType: "buffer" as const,
  open(sock: Socket<Conn>) {
    const c = sock.data;
    c.sock = sock;
    if (c.state === S_CLOSED) {
      sock.terminate();
      return;
    }
    c.state = S_HANDSHAKE;
    sock.write(
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${c.key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
  },
  data: onData,
  drain(sock: Socket<Conn>) {
    const c = sock.data;
    const out = c.out;
    if (out === null) return;
    const n = sock.write(out);
    c.out = n < out.length ? Buffer.from(out.subarray(n > 0 ? n : 0)) : null;
  },
  end(sock: Socket<Conn>) {
    sock.end();
  },
  close(sock: Socket<Conn>) {
    const c = sock.data;
    const was = c.state;
    c.state = S_CLOSED;
    c.sock = null;
    if (was === S_CONNECTING || was === S_HANDSHAKE) {
      const cb = c.onOpen;
      c.onOpen = null;
      cb?.("closed during handshake");
    }
    const cb = c.onClosed;
    c.onClosed = null;
    cb?.();
  },
  connectError(sock: Socket<Conn>, err: Error) {
    const c = sock.data;
    c.state = S_CLOSED;
    const cb = c.onOpen;
    c.onOpen = null;
    cb?.(`connect: ${(err as { code?: string }).code ?? err.message}`);
  },
  error() {},
};

/** Opens `conns`, at most `conc` in flight; resolves when every one is open or failed. */
async function openAll(conns: Conn[], conc: number, timeoutMs: number): Promise<{ ok: number; failed: number; errors: Record<string, number> }> {
  const errors: Record<string, number> = {};
  let ok = 0, failed = 0, next = 0;
  await new Promise<void>((resolveAll) => {
    let inFlight = 0;
    const launch = () => {
      while (inFlight < conc && next < conns.length) {
        const c = conns[next++]!;
        inFlight++;
        const timer = setTimeout(() => fail(c, "handshake timeout"), timeoutMs);
        c.onOpen = (err) => {
          clearTimeout(timer);
          inFlight--;
          if (err === null) ok++;
          else {
            failed++;
            errors[err] = (errors[err] ?? 0) + 1;
          }
          if (ok + failed === conns.length) resolveAll();
          else launch();
        };
        Bun.connect({ hostname: "127.0.0.1", port, data: c, socket: handlers }).catch(() => {});
      }
    };
    if (conns.length === 0) resolveAll();
    else launch();
  });
  return { ok, failed, errors };
}

// Never outlive the benchmark that started us.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 500).unref?.();

// ---------------------------------------------------------------------------- hold

async function hold(n: number, conc: number) {
  const conns = Array.from({ length: n }, (_, i) => new Conn(i, 1));
  onMessage = (c, buf, s, len) => {
    const e = c.expect;
    c.echoed = e !== null && len === e.length && buf.subarray(s, s + len).equals(e) ? 1 : 2;
    pendingEcho--;
    if (pendingEcho === 0) echoDone?.();
  };
  let pendingEcho = 0;
  let echoDone: (() => void) | null = null;

  const commands: Record<string, () => Promise<void>> = {
    async open() {
      const t0 = performance.now();
      const r = await openAll(conns, conc, 20000);
      emit({ ev: "open", ...r, ms: performance.now() - t0 });
    },
    async echo() {
      const t0 = performance.now();
      const open = conns.filter((c) => c.state === S_OPEN);
      pendingEcho = open.length;
      const done = new Promise<void>((r) => {
        echoDone = r;
        if (pendingEcho === 0) r();
      });
      for (const c of open) {
        const payload = Buffer.alloc(64, 0x2e);
        payload.write(`tunnel ${process.pid}/${c.id} `, "latin1");
        c.expect = payload;
        c.probe = frame(2, payload);
        c.send(c.probe);
      }
      await Promise.race([done, Bun.sleep(20000)]);
      const ok = open.filter((c) => c.echoed === 1).length;
      const bad = open.filter((c) => c.echoed === 2).length;
      emit({ ev: "echo", ok, bad, missing: open.length - ok - bad, ms: performance.now() - t0 });
    },
    async close() {
      const t0 = performance.now();
      const open = conns.filter((c) => c.state !== S_CLOSED);
      const closes = open.map((c) => new Promise<void>((r) => (c.onClosed = r)));
      const CLOSE_1000 = Buffer.from([0x03, 0xe8]);
      for (const c of open) {
        c.state = S_CLOSING;
        c.send(frame(8, CLOSE_1000));
      }
      await Promise.race([Promise.all(closes), Bun.sleep(15000)]);
      const clean = open.filter((c) => c.state === S_CLOSED && c.gotServerClose).length;
      const stillOpen = open.filter((c) => c.state !== S_CLOSED).length;
      for (const c of open) if (c.state !== S_CLOSED) c.sock?.terminate();
      emit({ ev: "closed", clean, unclean: open.length - clean - stillOpen, stillOpen, ms: performance.now() - t0 });
      setTimeout(() => process.exit(0), 50);
    },
  };
  emit({ ev: "ready" });
  let queue = Promise.resolve();
  let partial = "";
  process.stdin.on("data", (d: Buffer) => {
    const lines = (partial + d.toString()).split("\n");
    partial = lines.pop()!;
    for (const l of lines) {
      const cmd = commands[l.trim()];
      if (cmd) queue = queue.then(cmd);
      else if (l.trim()) console.error(`unknown command ${JSON.stringify(l)}`);
    }
  });
  process.stdin.on("end", () => process.exit(0));
}

// ---------------------------------------------------------------------------- echo

async function echo(nConns: number, depth: number, seconds: number, warmupMs: number, size: number) {
  const conns = Array.from({ length: nConns }, (_, i) => new Conn(i, depth));
  const r = await openAll(conns, 64, 20000);
  if (r.failed > 0) {
    emit({ ev: "error", why: `${r.failed} of ${nConns} connections failed: ${JSON.stringify(r.errors)}` });
    process.exit(1);
  }
  emit({ ev: "connected" });
  // one masked message, and a batch of `depth` of them to send k at a time
  const payload = Buffer.alloc(size, 0x61);
  const one = frame(2, payload);
  const flen = one.length;
  const batch = Buffer.concat(Array(depth).fill(one));
  // RTT histogram: 10 us buckets up to 200 ms
  const BUCKET = 10, NB = 20000;
  const hist = new Float64Array(NB + 1);
  let msgs = 0, bad = 0, running = true, measuring = false;
  onMessage = (_c, _buf, _s, n) => {
    if (n !== size) bad++;
  };
  afterRead = (c, k) => {
    const now = performance.now();
    const ring = c.ring, cap = ring.length;
    for (let i = 0; i < k; i++) {
      if (c.rh === c.rt) break;
      if (measuring) {
        const us = (now - ring[c.rh]!) * 1000;
        hist[Math.min(NB, Math.floor(us / BUCKET))]!++;
      }
      c.rh = (c.rh + 1) % cap;
    }
    if (measuring) msgs += k;
    if (!running) return;
    for (let i = 0; i < k; i++) {
      ring[c.rt] = now;
      c.rt = (c.rt + 1) % cap;
    }
    c.send(k === depth ? batch : batch.subarray(0, k * flen));
  };
  const t0 = performance.now();
  for (const c of conns) {
    for (let i = 0; i < depth; i++) {
      c.ring[c.rt] = t0;
      c.rt = (c.rt + 1) % c.ring.length;
    }
    c.send(batch);
  }
  await Bun.sleep(warmupMs);
  const cpu0 = process.cpuUsage();
  const m0 = performance.now();
  measuring = true;
  emit({ ev: "start" });
  const perSecond: number[] = [];
  let lastCount = 0;
  const ticker = setInterval(() => {
    perSecond.push(msgs - lastCount);
    lastCount = msgs;
  }, 1000);
  await Bun.sleep(seconds * 1000);
  clearInterval(ticker);
  measuring = false;
  const m1 = performance.now();
  const cpu1 = process.cpuUsage(cpu0);
  const count = msgs;
  running = false;
  const pct = (q: number) => {
    const total = hist.reduce((a, b) => a + b, 0);
    let acc = 0;
    for (let i = 0; i <= NB; i++) {
      acc += hist[i]!;
      if (acc >= q * total) return (i + 0.5) * BUCKET;
    }
    return NaN;
  };
  emit({
    ev: "done",
    msgs: count,
    seconds: (m1 - m0) / 1000,
    msgsPerSec: count / ((m1 - m0) / 1000),
    p50us: pct(0.5),
    p99us: pct(0.99),
    badLength: bad,
    cpuUs: cpu1.user + cpu1.system,
    perSecond,
  });
  await Bun.sleep(100); // let the messages in flight come back
  for (const c of conns) c.sock?.end();
  setTimeout(() => process.exit(0), 200);
}

if (mode === "hold") await hold(Number(rest[0]), Number(rest[1] ?? 64));
else await echo(Number(rest[0]), Number(rest[1]), Number(rest[2]), Number(rest[3]), Number(rest[4] ?? 64));
