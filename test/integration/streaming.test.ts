// Bodies over real sockets: chunked passes through byte for byte, close-delimited responses,
// backends dying mid-response, and 100 MB each way through a Latch subprocess with a slow
// reader on the far side (RSS must stay bounded: bodies are streamed with backpressure,
// never buffered whole).

import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { freePort, rssOf, simpleConfig, spawnLatch, startLatch, type Running, type Spawned } from "../helpers/latch.ts";
import { RawClient, takeResponse } from "../helpers/raw.ts";
import { scriptedBackend } from "../helpers/backends.ts";
import { BLOCK, BulkSender, SlowReader, expectedDigest, sampler } from "../helpers/bulk.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function latch(backendPort: number): Running {
  const l = startLatch(simpleConfig({ servers: [{ id: "s1", port: backendPort }] }));
  cleanups.push(() => l.stop());
  return l;
}

function scripted(respond: Parameters<typeof scriptedBackend>[0]) {
  const b = scriptedBackend(respond);
  cleanups.push(() => b.stop());
  return b;
}

async function client(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  cleanups.push(() => c.close());
  return c;
}

/** the bytes after the first head in buf */
function afterHead(buf: Buffer): Buffer {
  return buf.subarray(buf.indexOf("\r\n\r\n") + 4);
}

describe("chunked bodies", () => {
  test("a chunked request body reaches the backend byte for byte (extensions and trailers kept)", async () => {
    const b = scripted(() => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    const l = latch(b.port);
    const c = await client(l.port);
    const body = [
      "5;name=value\r\nhello\r\n",
      "19\r\n, world of chunked bytes!\r\n",
      "3;a;b=\"q\"\r\n\x00\xff\r\r\n",
      "0;last=1\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n",
    ];
    c.write("POST /chunks HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n");
    for (const part of body) {
      await Bun.sleep(20); // separate chunks on the wire: streamed, not collected
      c.write(part);
    }
    const r = await c.response();
    expect(r.status).toBe(200);
    const got = b.conns[0];
    const head = got.subarray(0, got.indexOf("\r\n\r\n") + 4).toString("latin1");
    expect(head).toContain("\r\nTransfer-Encoding: chunked\r\n");
    expect(head).toContain("\r\nTrailer: X-Checksum\r\n");
    expect(afterHead(got).toString("latin1")).toBe(body.join(""));
    expect(b.requests[0].body.toString("latin1")).toBe("hello, world of chunked bytes!\x00\xff\r");
    // the connection goes on after the trailers
    c.write("GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await c.response()).body.toString()).toBe("ok");
  });

  test("a chunked response reaches the client byte for byte, streamed as the backend sends it", async () => {
    const parts = [
      "4;ext=\"a b\"\r\nwiki\r\n",
      "5\r\npedia\r\n",
      "E;x\r\n in\r\n\r\nchunks.\r\n",
      "0\r\nExpires: never\r\nX-Trailer: t\r\n\r\n",
    ];
    const b = scripted(async (_req, sock) => {
      sock.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Expires, X-Trailer\r\n\r\n");
      for (const p of parts) {
        await Bun.sleep(30);
        sock.write(p);
      }
      return null;
    });
    const l = latch(b.port);
    const c = await client(l.port);
    c.write("GET /stream HTTP/1.1\r\nHost: h\r\n\r\n");
    // the first chunk arrives before the backend has sent the rest
    await c.waitFor(() => c.buf.includes("wiki\r\n"));
    expect(c.buf.includes("pedia")).toBe(false);
    await c.waitFor(() => c.buf.toString("latin1").endsWith("X-Trailer: t\r\n\r\n"));
    expect(c.buf.subarray(0, c.buf.indexOf("\r\n\r\n")).toString("latin1")).toBe(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Expires, X-Trailer",
    );
    expect(afterHead(c.buf).toString("latin1")).toBe(parts.join(""));
    c.buf = Buffer.alloc(0);
    // the exchange is complete: the same connection carries the next request
    c.write("GET /stream HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.waitFor(() => c.buf.toString("latin1").endsWith("X-Trailer: t\r\n\r\n"));
    expect(b.conns.length).toBe(1);
  });
});

describe("close-delimited and truncated responses", () => {
  test("a response without length ends when the backend closes: the client gets it whole, then a close", async () => {
    const pieces = ["first piece, ", "second piece, ", "x".repeat(100_000), " end"];
    const b = scripted(async (_req, sock) => {
      sock.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n");
      for (const p of pieces) {
        await Bun.sleep(20);
        let buf = Buffer.from(p);
        while (buf.length > 0) {
          const n = sock.write(buf);
          buf = buf.subarray(n > 0 ? n : 0);
          if (buf.length > 0) await Bun.sleep(5);
        }
      }
      sock.end();
      return null;
    });
    const l = latch(b.port);
    const c = await client(l.port);
    c.write("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    expect(await c.waitClosed()).toBe(true);
    const r = takeResponse(c.buf, false, true)!;
    expect(r.res.status).toBe(200);
    expect(r.res.get("connection")).toBe("close");
    expect(r.res.body.toString()).toBe(pieces.join(""));
  });

  test("Content-Length 1000, 500 sent, backend closes: the client's connection closes on a short body", async () => {
    const b = scripted(async (_req, sock) => {
      sock.write("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + "a".repeat(500));
      await Bun.sleep(50);
      sock.end();
      return null;
    });
    const l = latch(b.port);
    const c = await client(l.port);
    c.write("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    expect(await c.waitClosed()).toBe(true);
    expect(c.buf.subarray(0, c.buf.indexOf("\r\n\r\n")).toString()).toBe("HTTP/1.1 200 OK\r\nContent-Length: 1000");
    expect(afterHead(c.buf).length).toBe(500);
    expect(takeResponse(c.buf, false, false)).toBeNull(); // never a complete message
  });

  test("chunked without the last chunk, backend closes: the client's connection closes, no complete message", async () => {
    const b = scripted(async (_req, sock) => {
      sock.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n");
      await Bun.sleep(50);
      sock.end();
      return null;
    });
    const l = latch(b.port);
    const c = await client(l.port);
    c.write("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    expect(await c.waitClosed()).toBe(true);
    expect(afterHead(c.buf).toString()).toBe("5\r\nhello\r\n6\r\n world\r\n");
    expect(takeResponse(c.buf, false, false)).toBeNull();
    expect(c.buf.includes("0\r\n\r\n")).toBe(false);
  });

  test("a 1000-byte request body cut short by the client: the backend connection is closed too", async () => {
    let got = 0;
    let closed = false;
    const server = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(_s, d) {
          got += d.length;
        },
        close() {
          closed = true;
        },
      },
    });
    cleanups.push(() => server.stop(true));
    const l = latch(server.port);
    const c = await client(l.port);
    const head = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n";
    c.write(head + "b".repeat(300));
    const until = Date.now() + 3000;
    while (got < 300 && Date.now() < until) await Bun.sleep(10);
    expect(closed).toBe(false);
    c.end(); // FIN before the body is complete: it can never complete
    while (!closed && Date.now() < until) await Bun.sleep(10);
    expect(closed).toBe(true);
    expect(await c.waitClosed()).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// 100 MB each way through a subprocess, with a slow reader on the other side.

const BLOCKS = 100; // x 1 MiB
const TOTAL = BLOCKS * BLOCK;
const RSS_GROWTH_LIMIT = 60 * 1024 * 1024;

interface BulkConn {
  head: Buffer;
  state: "head" | "reading" | "sending";
  need: number;
  reader: SlowReader | null;
  sender: BulkSender | null;
}

/** GET /big: 100 MiB as fast as the proxy takes it. POST /up: read slowly, answer "<count> <sha256>". */
function bulkBackend() {
  const feed = (s: Socket<BulkConn>, d: Uint8Array) => {
    const st = s.data;
    st.reader!.take(s as Socket<unknown>, d);
    if (st.reader!.count >= st.need) {
      const body = `${st.reader!.count} ${st.reader!.digest()}`;
      s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      st.state = "head";
      st.reader = null;
    }
  };
  const server = Bun.listen<BulkConn>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        s.data = { head: Buffer.alloc(0), state: "head", need: 0, reader: null, sender: null };
      },
      data(s, d) {
        const st = s.data;
        if (st.state === "reading") return feed(s, d);
        if (st.state !== "head") return;
        st.head = Buffer.concat([st.head, d]);
        const he = st.head.indexOf("\r\n\r\n");
        if (he < 0) return;
        const head = st.head.subarray(0, he).toString("latin1");
        const rest = st.head.subarray(he + 4);
        st.head = Buffer.alloc(0);
        if (head.startsWith("GET /big ")) {
          s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${TOTAL}\r\n\r\n`);
          st.state = "sending";
          st.sender = new BulkSender(s, BLOCKS);
          st.sender.pump();
          void st.sender.done.then(() => {
            st.state = "head";
            st.sender = null;
          });
        } else if (head.startsWith("POST /up ")) {
          st.need = Number(/content-length: (\d+)/i.exec(head)![1]);
          st.reader = new SlowReader();
          st.state = "reading";
          if (rest.length > 0) feed(s, rest);
        } else s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      },
      drain(s) {
        s.data.sender?.onDrain();
      },
    },
  });
  return { port: server.port, stop: () => server.stop(true) };
}

describe("100 MB through a Latch subprocess with a slow reader", () => {
  let backend: ReturnType<typeof bulkBackend>;
  let latchProc: Spawned;
  let digest: string;

  beforeAll(async () => {
    digest = expectedDigest(BLOCKS);
    backend = bulkBackend();
    const port = await freePort();
    latchProc = await spawnLatch(simpleConfig({ port, servers: [{ id: "bulk", port: backend.port }] }), port);
    // warm up: one small exchange, so the baseline includes a live connection pool
    const c = await RawClient.connect(port);
    c.write("GET /small HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    expect((await c.response()).status).toBe(200);
    await Bun.sleep(200);
  });

  afterAll(async () => {
    expect(await latchProc.stop()).toBe(0);
    backend.stop();
  });

  test("download: the backend sends 100 MiB fast, the client reads slowly", async () => {
    const base = rssOf(latchProc.pid);
    const rss = sampler(() => rssOf(latchProc.pid));
    const reader = new SlowReader();
    let head = Buffer.alloc(0);
    let headDone = false;
    let finished!: () => void;
    const done = new Promise<void>((r) => (finished = r));
    let closedEarly = false;
    const sock = await Bun.connect({
      hostname: "127.0.0.1",
      port: latchProc.port,
      socket: {
        data(s, d) {
          if (!headDone) {
            head = Buffer.concat([head, d]);
            const he = head.indexOf("\r\n\r\n");
            if (he < 0) return;
            headDone = true;
            const rest = head.subarray(he + 4);
            head = head.subarray(0, he);
            if (rest.length > 0) reader.take(s as Socket<unknown>, rest);
          } else reader.take(s as Socket<unknown>, d);
          if (reader.count >= TOTAL) finished();
        },
        close() {
          closedEarly = reader.count < TOTAL;
          finished();
        },
      },
    });
    sock.write("GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    await done;
    const max = rss.stop();
    sock.end();
    expect(closedEarly).toBe(false);
    expect(head.toString()).toBe(`HTTP/1.1 200 OK\r\nContent-Length: ${TOTAL}`);
    expect(reader.count).toBe(TOTAL);
    expect(reader.digest()).toBe(digest);
    const growth = max - base;
    console.log(`download: latch RSS ${(base / 2 ** 20).toFixed(1)} MiB -> max ${(max / 2 ** 20).toFixed(1)} MiB`);
    expect(growth).toBeLessThan(RSS_GROWTH_LIMIT);
  }, 60_000);

  test("upload: the client sends 100 MiB fast, the backend reads slowly", async () => {
    const base = rssOf(latchProc.pid);
    const rss = sampler(() => rssOf(latchProc.pid));
    let resp = Buffer.alloc(0);
    let sender!: BulkSender;
    let finished!: () => void;
    const done = new Promise<void>((r) => (finished = r));
    const sock = await Bun.connect({
      hostname: "127.0.0.1",
      port: latchProc.port,
      socket: {
        data(_s, d) {
          resp = Buffer.concat([resp, d]);
          if (takeResponse(resp) !== null) finished();
        },
        drain() {
          sender.onDrain();
        },
        close() {
          finished();
        },
      },
    });
    sender = new BulkSender(sock, BLOCKS);
    const head = `POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: ${TOTAL}\r\n\r\n`;
    expect(sock.write(head)).toBe(head.length);
    sender.pump();
    await done;
    const max = rss.stop();
    sock.end();
    const r = takeResponse(resp);
    expect(r).not.toBeNull();
    expect(r!.res.status).toBe(200);
    expect(r!.res.body.toString()).toBe(`${TOTAL} ${digest}`);
    const growth = max - base;
    console.log(`upload: latch RSS ${(base / 2 ** 20).toFixed(1)} MiB -> max ${(max / 2 ** 20).toFixed(1)} MiB`);
    expect(growth).toBeLessThan(RSS_GROWTH_LIMIT);
  }, 60_000);
});
