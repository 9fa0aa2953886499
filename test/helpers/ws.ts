// WebSocket peers for tunnel tests: a real echo backend (Bun.serve with `websocket`
// handlers), a promise-style wrapper over Bun's global WebSocket client, and raw
// byte-level peers (a client that performs the handshake itself and can pause its socket
// or half-close, a backend that answers the handshake itself) with an independent,
// deliberately simple frame encoder/decoder (RFC 6455 §5.2).

import type { Server, ServerWebSocket, Socket, TCPSocketListener } from "bun";
import { createHash, randomBytes } from "node:crypto";
import { takeResponse, type RawResponse } from "./raw.ts";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

export const wsKey = (): string => randomBytes(16).toString("base64");
export const wsAccept = (key: string): string => createHash("sha1").update(key + GUID).digest("base64");

export const OP_CONT = 0, OP_TEXT = 1, OP_BIN = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10;

/** One frame. Client frames are masked (a fresh random key); server frames are not. */
export function encodeFrame(opcode: number, payload: Uint8Array | string, masked: boolean, fin = true): Buffer {
  const p = typeof payload === "string" ? Buffer.from(payload) : payload;
  const n = p.length;
  const ext = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const hl = 2 + ext + (masked ? 4 : 0);
  const out = Buffer.allocUnsafe(hl + n);
  out[0] = (fin ? 0x80 : 0) | opcode;
  out[1] = (masked ? 0x80 : 0) | (ext === 0 ? n : ext === 2 ? 126 : 127);
  if (ext === 2) out.writeUInt16BE(n, 2);
  else if (ext === 8) out.writeBigUInt64BE(BigInt(n), 2);
  if (!masked) {
    out.set(p, hl);
    return out;
  }
  const key = randomBytes(4);
  key.copy(out, 2 + ext);
  out.set(p, hl);
  maskInPlace(out, hl, n, key, 0);
  return out;
}

/** XOR buf[s, s+n) with the 4-byte key, the key phase starting at `phase`. */
function maskInPlace(buf: Uint8Array, s: number, n: number, key: Uint8Array, phase: number): void {
  for (let i = 0; i < n; i++) buf[s + i] ^= key[(phase + i) & 3];
}

export function closePayload(code: number, reason = ""): Buffer {
  const r = Buffer.from(reason);
  const b = Buffer.alloc(2 + r.length);
  b.writeUInt16BE(code, 0);
  r.copy(b, 2);
  return b;
}

export interface WsMessage {
  opcode: number;
  data: Buffer;
}

/**
 * Streaming frame decoder. Data messages are collected whole (`collect`) or only hashed
 * (sha256 per message, for 16 MB messages); control frames go to `control`.
 */
export class FrameReader {
  messages: WsMessage[] = [];
  digests: string[] = [];
  sizes: number[] = [];
  control: WsMessage[] = [];
  bytes = 0;
  private hdr = Buffer.alloc(0);
  private left = -1; // payload bytes left in the current frame; -1: reading a header
  private opcode = 0; // of the current frame
  private msgOpcode = 0; // of the message in progress
  private fin = false;
  private key: Uint8Array | null = null;
  private phase = 0;
  private parts: Buffer[] = [];
  private ctl: Buffer[] = [];
  private hash: Bun.CryptoHasher | null = null;
  private size = 0;
  private waiters: (() => void)[] = [];

  constructor(private readonly collect = true) {}

  push(chunk: Uint8Array): void {
    this.bytes += chunk.length;
    let i = 0;
    while (i < chunk.length) {
      if (this.left < 0) {
        // accumulate a header (2..14 bytes)
        const need = Math.min(14, chunk.length - i);
        this.hdr = Buffer.concat([this.hdr, chunk.subarray(i, i + need)]);
        const h = this.hdr;
        if (h.length < 2) { i += need; continue; }
        const len7 = h[1] & 0x7f;
        const masked = (h[1] & 0x80) !== 0;
        const hl = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (masked ? 4 : 0);
        if (h.length < hl) { i += need; continue; }
        // give back the bytes past the header
        i += need - (h.length - hl);
        const len = len7 === 126 ? h.readUInt16BE(2) : len7 === 127 ? Number(h.readBigUInt64BE(2)) : len7;
        this.fin = (h[0] & 0x80) !== 0;
        this.opcode = h[0] & 0x0f;
        this.key = masked ? Buffer.from(h.subarray(hl - 4, hl)) : null;
        this.phase = 0;
        this.hdr = Buffer.alloc(0);
        this.left = len;
        if (this.opcode < 8 && this.opcode !== OP_CONT) {
          this.msgOpcode = this.opcode;
          this.size = 0;
          if (this.collect) this.parts = [];
          else this.hash = new Bun.CryptoHasher("sha256");
        }
        if (this.opcode >= 8) this.ctl = [];
        if (len === 0) this.endFrame();
        continue;
      }
      const take = Math.min(this.left, chunk.length - i);
      let part: Uint8Array = chunk.subarray(i, i + take);
      if (this.key !== null) {
        const copy = Buffer.from(part);
        maskInPlace(copy, 0, take, this.key, this.phase);
        this.phase = (this.phase + take) & 3;
        part = copy;
      }
      if (this.opcode >= 8) this.ctl.push(Buffer.from(part));
      else {
        this.size += take;
        if (this.collect) this.parts.push(Buffer.from(part));
        else this.hash!.update(part);
      }
      this.left -= take;
      i += take;
      if (this.left === 0) this.endFrame();
    }
    this.wake();
  }

  private endFrame(): void {
    this.left = -1;
    if (this.opcode >= 8) {
      this.control.push({ opcode: this.opcode, data: Buffer.concat(this.ctl) });
      return;
    }
    if (!this.fin) return;
    this.sizes.push(this.size);
    if (this.collect) this.messages.push({ opcode: this.msgOpcode, data: Buffer.concat(this.parts) });
    else this.digests.push(this.hash!.digest("hex"));
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }

  async waitFor(pred: () => boolean, ms = 5000, isClosed: () => boolean = () => false): Promise<void> {
    const until = Date.now() + ms;
    while (!pred()) {
      if (isClosed()) throw new Error("connection closed while waiting for frames");
      const left = until - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for frames (${this.messages.length} messages, ${this.bytes} bytes so far)`);
      await Promise.race([new Promise<void>((r) => this.waiters.push(r)), Bun.sleep(Math.min(left, 100))]);
    }
  }

  closeFrame(): { code: number; reason: string } | null {
    const c = this.control.find((f) => f.opcode === OP_CLOSE);
    if (c === undefined) return null;
    return c.data.length >= 2 ? { code: c.data.readUInt16BE(0), reason: c.data.subarray(2).toString() } : { code: 1005, reason: "" };
  }
}

// ------------------------------------------------------------------------------------
// Raw client: handshake by hand, then frames; can pause its socket and half-close.

export interface RawWsOptions {
  path?: string;
  host?: string;
  /** extra request header lines, e.g. { Origin: "https://example.com" } */
  headers?: Record<string, string>;
  /** replace the whole request head (for malformed upgrades) */
  rawHead?: string;
  /** hash data messages instead of keeping them */
  hashOnly?: boolean;
  /** keep reading after sending FIN */
  allowHalfOpen?: boolean;
  /** called with each received chunk after the 101 head (after the frame reader saw it) */
  onData?: (sock: Socket<undefined>, chunk: Buffer) => void;
  /** bytes sent right after the request head, in the same write */
  early?: Uint8Array;
}

export class RawWs {
  sock!: Socket<undefined>;
  key = wsKey();
  head: RawResponse | null = null;
  /** bytes before the 101 head was complete */
  private pre: Buffer = Buffer.alloc(0);
  readonly reader: FrameReader;
  closed = false;
  /** the peer sent FIN (or the socket closed) */
  ended = false;
  private waiters: (() => void)[] = [];
  private pending: Buffer[] = [];
  private flushWaiters: (() => void)[] = [];

  private constructor(private readonly opts: RawWsOptions) {
    this.reader = new FrameReader(!opts.hashOnly);
  }

  /** Connects and sends the upgrade request; `response()` waits for the answer. */
  static async connect(port: number, opts: RawWsOptions = {}): Promise<RawWs> {
    const w = new RawWs(opts);
    w.sock = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      allowHalfOpen: opts.allowHalfOpen === true,
      socket: {
        data(s, d) {
          w.onData(s, d);
        },
        drain() {
          w.flush();
        },
        end() {
          w.ended = true;
          w.wake();
        },
        close() {
          w.closed = true;
          w.ended = true;
          w.wake();
        },
      },
    });
    const head =
      opts.rawHead ??
      `GET ${opts.path ?? "/ws"} HTTP/1.1\r\nHost: ${opts.host ?? "ws.example"}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${w.key}\r\n` +
        Object.entries(opts.headers ?? {}).map(([k, v]) => `${k}: ${v}\r\n`).join("") +
        "\r\n";
    const hb = Buffer.from(head, "latin1");
    w.write(opts.early ? Buffer.concat([hb, opts.early]) : hb);
    return w;
  }

  private onData(s: Socket<undefined>, d: Buffer): void {
    if (this.head === null) {
      this.pre = Buffer.concat([this.pre, d]);
      const got = takeResponse(this.pre, false, false);
      if (got === null) {
        this.wake();
        return;
      }
      this.head = got.res;
      const rest = got.rest;
      this.pre = Buffer.alloc(0);
      if (this.head.status === 101 && rest.length > 0) {
        this.reader.push(rest);
        this.opts.onData?.(s, rest);
      }
      this.wake();
      return;
    }
    if (this.head.status === 101) {
      this.reader.push(d);
      this.opts.onData?.(s, d);
    }
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }

  /** The answer to the upgrade request (101 or an error). */
  async response(ms = 5000): Promise<RawResponse> {
    const until = Date.now() + ms;
    while (this.head === null) {
      if (this.ended) {
        const got = takeResponse(this.pre, false, true);
        if (got !== null) return (this.head = got.res);
        throw new Error(`closed without a response; got: ${this.pre.toString("latin1").slice(0, 500)}`);
      }
      const left = until - Date.now();
      if (left <= 0) throw new Error(`no response in ${ms} ms; got: ${this.pre.toString("latin1").slice(0, 500)}`);
      await Promise.race([new Promise<void>((r) => this.waiters.push(r)), Bun.sleep(Math.min(left, 100))]);
    }
    return this.head;
  }

  /** Writes with backpressure: what the kernel does not take goes out on drain. */
  write(b: Uint8Array): void {
    if (this.pending.length > 0) {
      this.pending.push(Buffer.from(b));
      return;
    }
    const n = this.sock.write(b);
    if (n < b.length) this.pending.push(Buffer.from(b.subarray(n > 0 ? n : 0)));
  }

  private flush(): void {
    while (this.pending.length > 0) {
      const b = this.pending[0];
      const n = this.sock.write(b);
      if (n < b.length) {
        this.pending[0] = b.subarray(n > 0 ? n : 0);
        return;
      }
      this.pending.shift();
    }
    const w = this.flushWaiters;
    this.flushWaiters = [];
    w.forEach((f) => f());
  }

  /** Resolves when everything written so far went to the kernel. */
  flushed(): Promise<void> {
    if (this.pending.length === 0) return Promise.resolve();
    return new Promise((r) => this.flushWaiters.push(r));
  }

  sendText(s: string): void {
    this.write(encodeFrame(OP_TEXT, s, true));
  }

  sendBinary(b: Uint8Array): void {
    this.write(encodeFrame(OP_BIN, b, true));
  }

  sendClose(code: number, reason = ""): void {
    this.write(encodeFrame(OP_CLOSE, closePayload(code, reason), true));
  }

  /** FIN: shutdown(SHUT_WR), reading goes on (with allowHalfOpen) */
  shutdown(): void {
    this.sock.shutdown();
  }

  async waitMessages(n: number, ms = 5000): Promise<WsMessage[]> {
    await this.reader.waitFor(() => this.reader.messages.length >= n, ms, () => this.ended && this.reader.messages.length < n);
    return this.reader.messages;
  }

  async waitEnded(ms = 5000): Promise<boolean> {
    const until = Date.now() + ms;
    while (!this.ended) {
      const left = until - Date.now();
      if (left <= 0) return false;
      await Promise.race([new Promise<void>((r) => this.waiters.push(r)), Bun.sleep(Math.min(left, 100))]);
    }
    return true;
  }

  terminate(): void {
    this.sock.terminate();
  }

  end(): void {
    this.sock.end();
  }
}

// ------------------------------------------------------------------------------------
// Real echo backend (Bun.serve)

export interface WsBackendData {
  id: number;
  headers: Record<string, string>;
  url: string;
}

export interface WsBackend {
  name: string;
  port: number;
  server: Server<WsBackendData>;
  /** request headers of every upgrade, in order */
  upgrades: Record<string, string>[];
  /** request headers of every plain HTTP request, in order */
  plain: Record<string, string>[];
  closes: { code: number; reason: string }[];
  open: Set<ServerWebSocket<WsBackendData>>;
  opened: number;
  stop(): void;
}

export interface WsBackendOptions {
  /** extra 101 response headers, from the upgrade request */
  upgradeHeaders?: (req: Request) => Record<string, string>;
  /** a text message other than the built-in commands; return true if handled */
  onText?: (ws: ServerWebSocket<WsBackendData>, text: string) => boolean;
  onDrain?: (ws: ServerWebSocket<WsBackendData>) => void;
}

/**
 * A WebSocket echo server. Text commands: "whoami" → its name; "close:CODE:REASON" → it
 * closes with that code; anything else (text or binary) is echoed. Plain HTTP requests get
 * `200 plain <name>` with `X-Server: <name>`.
 */
export function wsEchoBackend(name: string, opts: WsBackendOptions = {}): WsBackend {
  const upgrades: Record<string, string>[] = [];
  const plain: Record<string, string>[] = [];
  const closes: { code: number; reason: string }[] = [];
  const open = new Set<ServerWebSocket<WsBackendData>>();
  let opened = 0;
  const server = Bun.serve<WsBackendData>({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req, srv) {
      const headers = Object.fromEntries(req.headers);
      if (req.headers.get("upgrade") !== null) {
        const ok = srv.upgrade(req, {
          data: { id: upgrades.length, headers, url: req.url },
          headers: { "X-Server": name, ...(opts.upgradeHeaders?.(req) ?? {}) },
        });
        if (ok) {
          upgrades.push(headers);
          return undefined;
        }
      }
      plain.push(headers);
      return new Response(`plain ${name}`, { headers: { "X-Server": name } });
    },
    websocket: {
      maxPayloadLength: 64 * 1024 * 1024,
      backpressureLimit: 64 * 1024 * 1024,
      perMessageDeflate: false,
      open(ws) {
        open.add(ws);
        b.opened = ++opened;
      },
      message(ws, m) {
        if (typeof m === "string") {
          if (m === "whoami") {
            ws.send(name);
            return;
          }
          if (m.startsWith("close:")) {
            const [, code, reason] = m.split(":");
            ws.close(Number(code), reason ?? "");
            return;
          }
          if (opts.onText?.(ws, m)) return;
        }
        ws.send(m);
      },
      drain(ws) {
        opts.onDrain?.(ws);
      },
      close(ws, code, reason) {
        open.delete(ws);
        closes.push({ code, reason });
      },
    },
  });
  const b: WsBackend = {
    name,
    port: server.port!,
    server,
    upgrades,
    plain,
    closes,
    open,
    opened,
    stop: () => void server.stop(true),
  };
  return b;
}

// ------------------------------------------------------------------------------------
// Bun's WebSocket client, promise style

export class WsClient {
  readonly ws: WebSocket;
  messages: (string | Buffer)[] = [];
  closeEvent: { code: number; reason: string } | null = null;
  error = false;
  readonly opened: Promise<void>;
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: (() => void)[] = [];

  constructor(url: string, headers?: Record<string, string>) {
    this.ws = new WebSocket(url, headers ? ({ headers } as unknown as string[]) : undefined);
    this.ws.binaryType = "arraybuffer";
    this.opened = new Promise((resolve, reject) => {
      this.ws.addEventListener("open", () => resolve());
      this.ws.addEventListener("error", () => reject(new Error(`websocket ${url}: error before open`)));
      this.ws.addEventListener("close", (e) => reject(new Error(`websocket ${url}: closed before open (${e.code})`)));
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.ws.addEventListener("close", (e) => {
        this.closeEvent = { code: e.code, reason: e.reason };
        this.wake();
        resolve(this.closeEvent);
      });
    });
    this.ws.addEventListener("error", () => {
      this.error = true;
      this.wake();
    });
    this.ws.addEventListener("message", (e) => {
      this.messages.push(typeof e.data === "string" ? e.data : Buffer.from(e.data as ArrayBuffer));
      this.wake();
    });
  }

  static async open(url: string, headers?: Record<string, string>): Promise<WsClient> {
    const c = new WsClient(url, headers);
    await c.opened;
    return c;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }

  async waitFor(pred: () => boolean, ms = 5000): Promise<void> {
    const until = Date.now() + ms;
    while (!pred()) {
      if (this.closeEvent !== null) throw new Error(`websocket closed (${this.closeEvent.code}) while waiting`);
      const left = until - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for messages (${this.messages.length} so far)`);
      await Promise.race([new Promise<void>((r) => this.waiters.push(r)), Bun.sleep(Math.min(left, 100))]);
    }
  }

  /** the next message after the first `n` already seen */
  async message(n: number, ms = 5000): Promise<string | Buffer> {
    await this.waitFor(() => this.messages.length > n, ms);
    return this.messages[n];
  }

  /** send and wait for the reply (the next message) */
  async ask(m: string | Uint8Array, ms = 5000): Promise<string | Buffer> {
    const n = this.messages.length;
    this.ws.send(m);
    return await this.message(n, ms);
  }

  async closedWithin(ms: number): Promise<{ code: number; reason: string } | null> {
    return await Promise.race([this.closed, Bun.sleep(ms).then(() => null)]);
  }
}

// ------------------------------------------------------------------------------------
// Raw backend: answers the handshake itself, then hands the socket to the test.

export interface RawWsPeer {
  sock: Socket<RawWsPeerData>;
  head: string;
}

export interface RawWsPeerData {
  buf: Buffer;
  upgraded: boolean;
  head: string;
}

export function rawWsBackend(opts: {
  /** the response head to send for an upgrade request (default: a correct 101) */
  answer?: (head: string, key: string) => string;
  upgraded?: (sock: Socket<RawWsPeerData>, head: string, rest: Buffer) => void;
  data?: (sock: Socket<RawWsPeerData>, chunk: Buffer) => void;
  end?: (sock: Socket<RawWsPeerData>) => void;
  close?: (sock: Socket<RawWsPeerData>) => void;
}): { port: number; server: TCPSocketListener<RawWsPeerData>; heads: string[]; socks: Set<Socket<RawWsPeerData>>; stop(): void } {
  const heads: string[] = [];
  const socks = new Set<Socket<RawWsPeerData>>();
  const server = Bun.listen<RawWsPeerData>({
    hostname: "127.0.0.1",
    port: 0,
    allowHalfOpen: true,
    socket: {
      open(s) {
        s.data = { buf: Buffer.alloc(0), upgraded: false, head: "" };
        socks.add(s);
      },
      data(s, d) {
        if (s.data.upgraded) {
          opts.data?.(s, d);
          return;
        }
        s.data.buf = Buffer.concat([s.data.buf, d]);
        const he = s.data.buf.indexOf("\r\n\r\n");
        if (he < 0) return;
        const head = s.data.buf.subarray(0, he).toString("latin1");
        const rest = s.data.buf.subarray(he + 4);
        s.data.buf = Buffer.alloc(0);
        s.data.head = head;
        heads.push(head);
        const key = /\r\nsec-websocket-key:\s*(\S+)/i.exec(head)?.[1] ?? "";
        const answer =
          opts.answer?.(head, key) ??
          `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${wsAccept(key)}\r\n\r\n`;
        s.write(Buffer.from(answer, "latin1"));
        if (/^HTTP\/1\.1 101/.test(answer)) {
          s.data.upgraded = true;
          opts.upgraded?.(s, head, Buffer.from(rest));
          if (rest.length > 0) opts.data?.(s, Buffer.from(rest));
        }
      },
      end(s) {
        opts.end?.(s);
      },
      close(s) {
        socks.delete(s);
        opts.close?.(s);
      },
    },
  });
  return { port: server.port, server, heads, socks, stop: () => server.stop(true) };
}
