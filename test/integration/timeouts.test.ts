// Timeouts over real sockets: connect (to a loopback blackhole), server response (504 before
// the response, a close after it started), client idle on keep-alive, head (slowloris: 408),
// and a stalled request body. Margins are generous: the deadlines are swept every 100 ms, the
// tests only check that the timeout fires, with its status and log line, and not too early.

import { afterEach, describe, expect, test } from "bun:test";
import { reported, simpleConfig, startLatch, type Running } from "../helpers/latch.ts";
import { RawClient, recordingBackend, takeResponse } from "../helpers/raw.ts";
import { scriptedBackend } from "../helpers/backends.ts";
import { blackhole } from "../helpers/blackhole.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function latch(toml: string): Running {
  const l = startLatch(toml);
  cleanups.push(() => l.stop());
  return l;
}

async function client(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  cleanups.push(() => c.close());
  return c;
}

const GET = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";

describe("backend timeouts", () => {
  test("timeout.connect: a connect that never completes gets 504 and a log line", async () => {
    const hole = await blackhole();
    cleanups.push(() => hole.close());
    const l = latch(
      simpleConfig({ servers: [{ id: "s1", port: hole.port }], backendExtra: 'timeout = { connect = "300ms", server = "30s" }' }),
    );
    const from = reported.length;
    const c = await client(l.port);
    const t0 = Date.now();
    c.write(GET);
    const r = await c.response({ ms: 5000 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
    expect(r.status).toBe(504);
    expect(r.get("connection")).toBe("close");
    expect(r.body.length).toBeGreaterThan(0);
    expect(reported.slice(from).some((x) => x.includes("504") && x.includes("connect timeout") && x.includes(`127.0.0.1:${hole.port}`))).toBe(true);
    expect(await c.waitClosed()).toBe(true);
  });

  test("timeout.server: a backend that accepts but never answers gets 504 and a log line", async () => {
    const b = scriptedBackend(() => null);
    cleanups.push(() => b.stop());
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: b.port }], backendExtra: 'timeout = { server = "300ms" }' }));
    const from = reported.length;
    const c = await client(l.port);
    const t0 = Date.now();
    c.write(GET);
    const r = await c.response({ ms: 5000 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
    expect(r.status).toBe(504);
    expect(b.requests.length).toBe(1); // it did reach the backend
    expect(reported.slice(from).some((x) => x.includes("504") && x.includes("response timeout"))).toBe(true);
    expect(await c.waitClosed()).toBe(true);
  });

  test("timeout.server between body bytes: a response that stalls midway closes the client", async () => {
    const b = scriptedBackend(() => "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + "x".repeat(40));
    cleanups.push(() => b.stop());
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: b.port }], backendExtra: 'timeout = { server = "300ms" }' }));
    const from = reported.length;
    const c = await client(l.port);
    c.write(GET);
    expect(await c.waitClosed(5000)).toBe(true);
    expect(c.buf.subarray(c.buf.indexOf("\r\n\r\n") + 4).length).toBe(40);
    expect(takeResponse(c.buf)).toBeNull();
    expect(reported.slice(from).some((x) => x.includes("timeout mid-response"))).toBe(true);
  });

  test("timeout.pool_idle: an idle pooled backend connection is closed by Latch", async () => {
    let opened = 0;
    let closed = 0;
    const server = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open() {
          opened++;
        },
        data(s) {
          s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        },
        close() {
          closed++;
        },
      },
    });
    cleanups.push(() => server.stop(true));
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: server.port }], backendExtra: 'timeout = { pool_idle = "300ms" }' }));
    const c = await client(l.port);
    c.write(GET);
    expect((await c.response()).status).toBe(200);
    expect(opened).toBe(1);
    expect(closed).toBe(0); // pooled
    const until = Date.now() + 5000;
    while (closed === 0 && Date.now() < until) await Bun.sleep(20);
    expect(closed).toBe(1);
    // the client connection is unaffected and the next request opens a new backend connection
    c.write(GET);
    expect((await c.response()).status).toBe(200);
    expect(opened).toBe(2);
  });

  test("a slow but steady response is not cut by timeout.server (the timeout is between bytes)", async () => {
    const b = scriptedBackend(async (_req, sock) => {
      sock.write("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n");
      for (let i = 0; i < 8; i++) {
        await Bun.sleep(150); // 1.2 s in all, with a 500 ms timeout
        sock.write(String(i));
      }
      return null;
    });
    cleanups.push(() => b.stop());
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: b.port }], backendExtra: 'timeout = { server = "500ms" }' }));
    const c = await client(l.port);
    c.write(GET);
    const r = await c.response({ ms: 5000 });
    expect(r.body.toString()).toBe("01234567");
  });
});

describe("client timeouts", () => {
  test("global.timeout.client closes a keep-alive client that stays idle", async () => {
    const b = recordingBackend("b");
    cleanups.push(() => b.stop());
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: b.port }], global: 'timeout = { client = "300ms", head = "10s" }' }));
    const c = await client(l.port);
    c.write(GET);
    expect((await c.response()).status).toBe(200);
    const t0 = Date.now();
    expect(await c.waitClosed(5000)).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
    expect(c.buf.length).toBe(0); // closed quietly: no response to a request that was never sent
  });

  test("global.timeout.client closes a connection that never sends anything", async () => {
    const b = recordingBackend("b");
    cleanups.push(() => b.stop());
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: b.port }], global: 'timeout = { client = "300ms" }' }));
    const c = await client(l.port);
    expect(await c.waitClosed(5000)).toBe(true);
    expect(c.buf.length).toBe(0);
  });

  test("a keep-alive client active within the idle timeout keeps its connection", async () => {
    const b = recordingBackend("b");
    cleanups.push(() => b.stop());
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: b.port }], global: 'timeout = { client = "600ms" }' }));
    const c = await client(l.port);
    for (let i = 0; i < 5; i++) {
      c.write(GET);
      expect((await c.response()).status).toBe(200);
      await Bun.sleep(250); // 1.25 s in all, never 600 ms idle
    }
    expect(c.closed).toBe(false);
  });

  test("global.timeout.head: a slowloris head (partial, then nothing) gets 408", async () => {
    const b = recordingBackend("b");
    cleanups.push(() => b.stop());
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: b.port }], global: 'timeout = { client = "30s", head = "400ms" }' }));
    const c = await client(l.port);
    c.write("GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ");
    const t0 = Date.now();
    const r = await c.response({ ms: 5000 });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(r.status).toBe(408);
    expect(r.get("connection")).toBe("close");
    expect(await c.waitClosed()).toBe(true);
    expect(b.rec.conns.length).toBe(0);
  });

  test("global.timeout.head: trickling bytes does not extend the deadline", async () => {
    const b = recordingBackend("b");
    cleanups.push(() => b.stop());
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: b.port }], global: 'timeout = { client = "30s", head = "500ms" }' }));
    const c = await client(l.port);
    c.write("GET / HTTP/1.1\r\n");
    const t0 = Date.now();
    let i = 0;
    while (!c.closed && Date.now() - t0 < 5000) {
      c.write(`X-${i++}: a\r\n`); // one header line every 100 ms, never the end of the head
      await Bun.sleep(100);
    }
    const r = takeResponse(c.buf, false, true);
    expect(r).not.toBeNull();
    expect(r!.res.status).toBe(408);
    expect(b.rec.conns.length).toBe(0);
  });

  test("the head timeout applies to the next request on a keep-alive connection too", async () => {
    const b = recordingBackend("b");
    cleanups.push(() => b.stop());
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: b.port }], global: 'timeout = { client = "30s", head = "400ms" }' }));
    const c = await client(l.port);
    c.write(GET);
    expect((await c.response()).status).toBe(200);
    c.write("GET /second HTTP/1.1\r\nHo");
    const r = await c.response({ ms: 5000 });
    expect(r.status).toBe(408);
  });

  test("a request body that stops arriving: the client is closed after the idle timeout, the backend too", async () => {
    let backendClosed = false;
    let got = 0;
    const server = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(_s, d) {
          got += d.length;
        },
        close() {
          backendClosed = true;
        },
      },
    });
    cleanups.push(() => server.stop(true));
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: server.port }], global: 'timeout = { client = "400ms" }' }));
    const from = reported.length;
    const c = await client(l.port);
    c.write("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789");
    expect(await c.waitClosed(5000)).toBe(true);
    expect(got).toBeGreaterThan(10);
    const until = Date.now() + 2000;
    while (!backendClosed && Date.now() < until) await Bun.sleep(10);
    expect(backendClosed).toBe(true);
    expect(reported.slice(from).some((x) => x.includes("request body not received in time"))).toBe(true);
  });
});
