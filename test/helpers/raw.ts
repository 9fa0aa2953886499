// Byte-exact peers for tests: a client that writes exact bytes and reads responses with
// an independent (deliberately simple) HTTP/1.1 response reader, and a backend that
// records every byte it receives and answers with scripted bytes.

import type { Socket, TCPSocketListener } from "bun";

export interface RawResponse {
  status: number;
  head: string; // the head as text, status line included
  headers: [string, string][];
  body: Buffer;
  get(name: string): string | undefined;
  all(name: string): string[];
}

function parseHead(head: string): Omit<RawResponse, "body"> {
  const lines = head.split("\r\n");
  const status = Number(lines[0].split(" ")[1]);
  const headers: [string, string][] = lines.slice(1).filter(Boolean).map((l) => {
    const i = l.indexOf(":");
    return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()];
  });
  return {
    status,
    head,
    headers,
    get: (n) => headers.find(([k]) => k === n.toLowerCase())?.[1],
    all: (n) => headers.filter(([k]) => k === n.toLowerCase()).map(([, v]) => v),
  };
}

/** Tries to cut one complete response off the front of buf. */
export function takeResponse(buf: Buffer, headRequest = false, closed = false): { res: RawResponse; rest: Buffer } | null {
  const he = buf.indexOf("\r\n\r\n");
  if (he < 0) return null;
  const h = parseHead(buf.subarray(0, he).toString("latin1"));
  let p = he + 4;
  const te = h.get("transfer-encoding");
  const cl = h.get("content-length");
  const noBody = headRequest || h.status === 204 || h.status === 304 || (h.status >= 100 && h.status < 200);
  if (noBody) return { res: { ...h, body: Buffer.alloc(0) }, rest: buf.subarray(p) };
  if (te && /chunked/i.test(te)) {
    const parts: Buffer[] = [];
    for (;;) {
      const le = buf.indexOf("\r\n", p);
      if (le < 0) return null;
      const size = parseInt(buf.subarray(p, le).toString("latin1").split(";")[0], 16);
      if (size === 0) {
        const end = buf.indexOf("\r\n\r\n", le);
        if (end < 0) return null;
        return { res: { ...h, body: Buffer.concat(parts) }, rest: buf.subarray(end + 4) };
      }
      if (buf.length < le + 2 + size + 2) return null;
      parts.push(buf.subarray(le + 2, le + 2 + size));
      p = le + 2 + size + 2;
    }
  }
  if (cl !== undefined) {
    const n = Number(cl);
    if (buf.length < p + n) return null;
    return { res: { ...h, body: buf.subarray(p, p + n) }, rest: buf.subarray(p + n) };
  }
  if (!closed) return null;
  return { res: { ...h, body: buf.subarray(p) }, rest: Buffer.alloc(0) };
}

export class RawClient {
  private sock!: Socket<undefined>;
  buf: Buffer = Buffer.alloc(0);
  closed = false;
  private waiters: (() => void)[] = [];

  static async connect(port: number, host = "127.0.0.1"): Promise<RawClient> {
    const c = new RawClient();
    const wake = () => {
      const w = c.waiters;
      c.waiters = [];
      w.forEach((f) => f());
    };
    c.sock = await Bun.connect({
      hostname: host,
      port,
      socket: {
        data(_s, d) {
          c.buf = Buffer.concat([c.buf, d]);
          wake();
        },
        close() {
          c.closed = true;
          wake();
        },
        end() {
          c.closed = true;
          wake();
        },
      },
    });
    return c;
  }

  write(data: string | Uint8Array): void {
    const b = typeof data === "string" ? Buffer.from(data, "latin1") : data;
    let off = 0;
    // tests write small payloads; loop for completeness
    while (off < b.length) {
      const n = this.sock.write(b.subarray(off));
      if (n <= 0) break;
      off += n;
    }
  }

  end(): void {
    this.sock.end();
  }

  /** waits for a condition on the received bytes, up to ms */
  async waitFor(pred: () => boolean, ms = 5000): Promise<void> {
    const until = Date.now() + ms;
    while (!pred()) {
      if (this.closed && !pred()) return;
      const left = until - Date.now();
      if (left <= 0) throw new Error(`timeout waiting; received so far:\n${this.buf.toString("latin1").slice(0, 2000)}`);
      await Promise.race([new Promise<void>((r) => this.waiters.push(r)), Bun.sleep(Math.min(left, 200))]);
    }
  }

  /** reads one complete response */
  async response(opts: { head?: boolean; ms?: number } = {}): Promise<RawResponse> {
    let got: ReturnType<typeof takeResponse> = null;
    await this.waitFor(() => (got = takeResponse(this.buf, opts.head, this.closed)) !== null || this.closed, opts.ms);
    if (got === null) got = takeResponse(this.buf, opts.head, true);
    if (got === null) throw new Error(`connection closed without a complete response; got:\n${this.buf.toString("latin1").slice(0, 2000)}`);
    this.buf = (got as { rest: Buffer }).rest;
    return (got as { res: RawResponse }).res;
  }

  async waitClosed(ms = 5000): Promise<boolean> {
    try {
      await this.waitFor(() => this.closed, ms);
    } catch {
      return false;
    }
    return this.closed;
  }

  close(): void {
    this.sock.end();
  }
}

/** One request, one response, on a new connection. */
export async function request(port: number, raw: string, opts: { head?: boolean } = {}): Promise<RawResponse> {
  const c = await RawClient.connect(port);
  c.write(raw);
  const r = await c.response(opts);
  c.close();
  return r;
}

/**
 * Cuts one complete request off the front of buf, for test backends: just enough HTTP to
 * split requests (Content-Length / chunked, the chunked body de-chunked). null: need more.
 */
export function takeRequest(b: Buffer): { head: string; body: Buffer; rest: Buffer } | null {
  const he = b.indexOf("\r\n\r\n");
  if (he < 0) return null;
  const head = b.subarray(0, he).toString("latin1");
  let p = he + 4;
  let body: Buffer = Buffer.alloc(0);
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
    const parts: Buffer[] = [];
    for (;;) {
      const le = b.indexOf("\r\n", p);
      if (le < 0) return null;
      const size = parseInt(b.subarray(p, le).toString("latin1"), 16);
      if (size === 0) {
        const end = b.indexOf("\r\n\r\n", le);
        if (end < 0) return null;
        p = end + 4;
        break;
      }
      if (b.length < le + 4 + size) return null;
      parts.push(b.subarray(le + 2, le + 2 + size));
      p = le + 4 + size;
    }
    body = Buffer.concat(parts);
  } else if (cl) {
    const n = Number(cl[1]);
    if (b.length < p + n) return null;
    body = Buffer.from(b.subarray(p, p + n));
    p += n;
  }
  return { head, body, rest: Buffer.from(b.subarray(p)) };
}

export interface Recorded {
  /** every byte received on each connection, in order */
  conns: Buffer[];
}

/**
 * A backend that records what it receives and answers each request with `respond`.
 * It understands just enough HTTP to split requests (Content-Length / chunked).
 */
export function recordingBackend(
  name: string,
  respond: (req: { head: string; body: Buffer; conn: number }) => string | Uint8Array | null = ({ head }) =>
    `HTTP/1.1 200 OK\r\nContent-Length: ${name.length}\r\nX-Server: ${name}\r\n\r\n${name}`,
): { port: number; rec: Recorded; requests: { head: string; body: Buffer; conn: number }[]; server: TCPSocketListener<{ id: number; buf: Buffer<ArrayBufferLike> }>; stop(): void } {
  const rec: Recorded = { conns: [] };
  const requests: { head: string; body: Buffer; conn: number }[] = [];
  const server = Bun.listen<{ id: number; buf: Buffer<ArrayBufferLike> }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        s.data = { id: rec.conns.length, buf: Buffer.alloc(0) };
        rec.conns.push(Buffer.alloc(0));
      },
      data(s, d) {
        rec.conns[s.data.id] = Buffer.concat([rec.conns[s.data.id], d]);
        s.data.buf = Buffer.concat([s.data.buf, d]);
        for (;;) {
          const got = takeRequest(s.data.buf);
          if (got === null) return;
          const { head, body } = got;
          s.data.buf = got.rest;
          const req = { head, body, conn: s.data.id };
          requests.push(req);
          const out = respond(req);
          if (out !== null) s.write(typeof out === "string" ? Buffer.from(out, "latin1") : out);
        }
      },
    },
  });
  return { port: server.port, rec, requests, server, stop: () => server.stop(true) };
}
