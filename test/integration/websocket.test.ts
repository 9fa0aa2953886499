// WebSocket / Upgrade tunnels over real sockets: a real WebSocket echo backend (Bun.serve
// with `websocket` handlers) and real clients (Bun's global WebSocket, and raw clients that
// do the handshake byte for byte). Routing and persistence of upgrades, handshake checks,
// the byte pipe (echo, order, 16 MB messages through slow consumers with Latch's RSS
// bounded, 1,000 concurrent tunnels), close / half-close / backend death / idle timeout,
// set_headers (the SESSIONID cookie becomes X-Session-ID, as in the mod_proxy_wstunnel
// article), and the limits (origins, max_per_client, max_tunnels, enabled = false).

import { afterEach, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { freePort, rssOf, simpleConfig, spawnLatch, startLatch, type Running } from "../helpers/latch.ts";
import { RawClient, recordingBackend } from "../helpers/raw.ts";
import { BLOCK, block, sampler } from "../helpers/bulk.ts";
import { counters } from "../../src/core/counters.ts";
import {
  OP_BIN, OP_TEXT, RawWs, WsClient, encodeFrame, rawWsBackend, wsAccept, wsEchoBackend,
  type WsBackend, type WsBackendOptions,
} from "../helpers/ws.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) {
    try {
      await cleanups.pop()!();
    } catch {
      // best effort
    }
  }
  // tunnels are counted per process: the next test starts from none
  const until = Date.now() + 5000;
  while (counters.tunnelsOpen > 0 && Date.now() < until) await Bun.sleep(20);
  expect(counters.tunnelsOpen).toBe(0);
});

function backend(name: string, opts?: WsBackendOptions): WsBackend {
  const b = wsEchoBackend(name, opts);
  cleanups.push(() => b.stop());
  return b;
}

function latch(toml: string): Running {
  const l = startLatch(toml);
  cleanups.push(() => l.stop());
  return l;
}

/** Latch over the given ws backends (server id = backend name). */
function latchOver(bs: WsBackend[], opts: Omit<Parameters<typeof simpleConfig>[0], "servers"> = {}): Running {
  return latch(simpleConfig({ ...opts, servers: bs.map((b) => ({ id: b.name, port: b.port })) }));
}

async function ws(port: number, path = "/ws", headers?: Record<string, string>): Promise<WsClient> {
  const c = new WsClient(`ws://127.0.0.1:${port}${path}`, headers);
  cleanups.push(() => c.ws.close());
  await c.opened;
  return c;
}

async function raw(port: number, opts: Parameters<typeof RawWs.connect>[1] = {}): Promise<RawWs> {
  const c = await RawWs.connect(port, opts);
  cleanups.push(() => c.terminate());
  return c;
}

async function rawHttp(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  cleanups.push(() => c.close());
  return c;
}

async function until(pred: () => boolean, ms = 5000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timeout waiting for ${what}`);
    await Bun.sleep(10);
  }
}

const upgradeHead = (extra = "", opts: { method?: string; version?: string; key?: boolean; path?: string } = {}) =>
  `${opts.method ?? "GET"} ${opts.path ?? "/ws"} HTTP/${opts.version ?? "1.1"}\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
  `Sec-WebSocket-Version: 13\r\n${opts.key === false ? "" : "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"}${extra}\r\n`;

// ------------------------------------------------------------------------------------

describe("echo through the tunnel", () => {
  test("text and binary messages come back intact, small and large", async () => {
    const b = backend("echo");
    const l = latchOver([b]);
    const c = await ws(l.port);
    expect(await c.ask("hello, tunnel")).toBe("hello, tunnel");
    expect(await c.ask("héllo wörld ✓ 日本語")).toBe("héllo wörld ✓ 日本語");
    const all = new Uint8Array(256).map((_, i) => i);
    expect(Buffer.compare((await c.ask(all)) as Buffer, Buffer.from(all))).toBe(0);
    // larger than a socket chunk: crosses many reads on both sides
    const big = Buffer.from(crypto.getRandomValues(new Uint8Array(65536)));
    const large = Buffer.concat(Array.from({ length: 12 }, () => big));
    const back = (await c.ask(large, 10_000)) as Buffer;
    expect(Buffer.isBuffer(back)).toBe(true);
    expect(back.length).toBe(large.length);
    expect(Buffer.compare(back, large)).toBe(0);
    expect(b.upgrades.length).toBe(1);
    expect(counters.tunnelsOpen).toBe(1);
  });

  test("many messages in both directions arrive complete and in order", async () => {
    const N = 2000;
    const b = backend("echo", {
      onText(w, m) {
        if (!m.startsWith("flood:")) return false;
        const n = Number(m.slice(6));
        for (let i = 0; i < n; i++) w.send(`s${i}`);
        return true;
      },
    });
    const l = latchOver([b]);
    const c = await ws(l.port);
    // the backend pushes N messages while the client sends N (echoed back, interleaved)
    c.ws.send(`flood:${N}`);
    for (let i = 0; i < N; i++) c.ws.send(i % 2 === 0 ? `c${i}` : Buffer.from(`b${i}`));
    await c.waitFor(() => c.messages.length >= 2 * N, 15_000);
    const pushed = c.messages.filter((m) => typeof m === "string" && m.startsWith("s"));
    const echoed = c.messages.filter((m) => !(typeof m === "string" && m.startsWith("s")));
    expect(pushed).toEqual(Array.from({ length: N }, (_, i) => `s${i}`));
    expect(echoed.map((m) => (typeof m === "string" ? m : `bin:${m.toString()}`))).toEqual(
      Array.from({ length: N }, (_, i) => (i % 2 === 0 ? `c${i}` : `bin:b${i}`)),
    );
  }, 20_000);

  test("frames sent together with the upgrade request reach the backend after the 101", async () => {
    const b = backend("echo");
    const l = latchOver([b]);
    const early = Buffer.concat([encodeFrame(OP_TEXT, "early-1", true), encodeFrame(OP_TEXT, "early-2", true)]);
    const c = await raw(l.port, { early });
    const r = await c.response();
    expect(r.status).toBe(101);
    const msgs = await c.waitMessages(2);
    expect(msgs.map((m) => m.data.toString())).toEqual(["early-1", "early-2"]);
  });
});

// ------------------------------------------------------------------------------------

describe("upgrades go through routing and persistence", () => {
  test("host and path routes choose the backend of an upgrade", async () => {
    const chat = backend("chat");
    const game = backend("game");
    const web = backend("web");
    const l = latch(`
[[listen]]
name = "web"
bind = "127.0.0.1:0"
  [[listen.route]]
  host = "chat.example"
  backend = "chat"
  [[listen.route]]
  path = "/game"
  backend = "game"
  [[listen.route]]
  path = "/"
  backend = "web"
[backend.chat]
[[backend.chat.server]]
id = "c1"
address = "127.0.0.1:${chat.port}"
[backend.game]
[[backend.game.server]]
id = "g1"
address = "127.0.0.1:${game.port}"
[backend.web]
[[backend.web.server]]
id = "w1"
address = "127.0.0.1:${web.port}"
`);
    const a = await ws(l.port, "/game/lobby", { Host: "chat.example" });
    expect(await a.ask("whoami")).toBe("chat");
    const g = await ws(l.port, "/game/lobby", { Host: "other.example" });
    expect(await g.ask("whoami")).toBe("game");
    const w = await ws(l.port, "/news", { Host: "other.example" });
    expect(await w.ask("whoami")).toBe("web");
    // the upgrade request was rewritten like any request: Host for the server, X-Forwarded-Host kept
    expect(chat.upgrades[0]["x-forwarded-host"]).toBe("chat.example");
    expect(game.upgrades[0]["x-forwarded-host"]).toBe("other.example");
    expect(game.upgrades[0]["host"]).toBe(`127.0.0.1:${game.port}`);
    expect(web.upgrades.length + chat.upgrades.length + game.upgrades.length).toBe(3);
  });

  test("insert: the 101 carries Set-Cookie SRV=<server>; reconnects with the cookie stick to it", async () => {
    const bs = ["ws1", "ws2", "ws3"].map((n) => backend(n));
    const l = latchOver(bs, { persist: `mode = "insert"\ncookie = "SRV"\nindirect = true\nnocache = true` });
    // byte-level handshake: the 101 keeps what the WebSocket needs and gains the cookie
    const first = await raw(l.port);
    const r = await first.response();
    expect(r.status).toBe(101);
    expect(r.get("sec-websocket-accept")).toBe(wsAccept(first.key));
    expect(r.get("upgrade")?.toLowerCase()).toBe("websocket");
    expect(r.get("connection")?.toLowerCase()).toBe("upgrade");
    const server = r.get("x-server")!;
    expect(r.all("set-cookie")).toEqual([`SRV=${server}; Path=/`]);
    // and the pipe works after the rewritten head
    first.sendText("after the cookie");
    expect((await first.waitMessages(1))[0].data.toString()).toBe("after the cookie");

    // a browser-style client sends the cookie back on every reconnect
    for (let i = 0; i < 6; i++) {
      const c = await ws(l.port, "/ws", { Cookie: `SRV=${server}; other=1` });
      expect(await c.ask("whoami")).toBe(server);
      c.ws.close();
      await c.closed;
    }
    // indirect: the backend never saw SRV; the other cookie went through
    const owner = bs.find((b) => b.name === server)!;
    expect(owner.upgrades.at(-1)!["cookie"]).toBe("other=1");
    // without the cookie, roundrobin spreads the reconnects
    const seen = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const c = await ws(l.port);
      seen.add((await c.ask("whoami")) as string);
      c.ws.close();
    }
    expect(seen.size).toBeGreaterThan(1);
  });

  test("header: reconnects carrying the same X-User stick to one server", async () => {
    const bs = ["ws1", "ws2", "ws3"].map((n) => backend(n));
    const l = latchOver(bs, { persist: `mode = "header"\nheader = "X-User"` });
    const where: Record<string, Set<string>> = { alice: new Set(), bob: new Set(), carol: new Set() };
    for (let round = 0; round < 4; round++) {
      for (const user of Object.keys(where)) {
        const c = await ws(l.port, "/ws", { "X-User": user });
        where[user].add((await c.ask("whoami")) as string);
        c.ws.close();
        await c.closed;
      }
    }
    for (const user of Object.keys(where)) expect([user, where[user].size]).toEqual([user, 1]);
    // the three users were spread by roundrobin before being learnt
    expect(new Set(Object.values(where).map((s) => [...s][0])).size).toBe(3);
  });

  test("source: reconnects from one address stick to one server", async () => {
    const bs = ["ws1", "ws2", "ws3"].map((n) => backend(n));
    const l = latchOver(bs, { persist: `mode = "source"` });
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const c = await ws(l.port);
      seen.add((await c.ask("whoami")) as string);
      c.ws.close();
      await c.closed;
    }
    expect(seen.size).toBe(1);
    // control: without persistence the same reconnects rotate
    const l2 = latchOver(bs);
    const rot = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const c = await ws(l2.port);
      rot.add((await c.ask("whoami")) as string);
      c.ws.close();
    }
    expect(rot.size).toBe(3);
  });
});

// ------------------------------------------------------------------------------------

describe("handshake checks", () => {
  test("a WebSocket upgrade without Sec-WebSocket-Key gets 400 and never reaches the backend", async () => {
    const b = backend("echo");
    const l = latchOver([b]);
    for (const extra of ["", "Sec-WebSocket-Key: \r\n"]) {
      const c = await raw(l.port, { rawHead: upgradeHead(extra, { key: false }) });
      expect((await c.response()).status).toBe(400);
    }
    expect(b.upgrades.length + b.plain.length).toBe(0);
  });

  test("a POST upgrade and an HTTP/1.0 upgrade get 400", async () => {
    const b = backend("echo");
    const l = latchOver([b]);
    const post = await raw(l.port, { rawHead: upgradeHead("Content-Length: 0\r\n", { method: "POST" }) });
    expect((await post.response()).status).toBe(400);
    const old = await raw(l.port, { rawHead: upgradeHead("", { version: "1.0" }) });
    expect((await old.response()).status).toBe(400);
    expect(b.upgrades.length + b.plain.length).toBe(0);
  });

  test("a backend 101 without Sec-WebSocket-Accept gets 502", async () => {
    const rb = rawWsBackend({
      answer: () => "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    });
    cleanups.push(() => rb.stop());
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: rb.port }] }));
    const c = await raw(l.port);
    const r = await c.response();
    expect(r.status).toBe(502);
    expect(await c.waitEnded()).toBe(true);
    expect(counters.tunnelsOpen).toBe(0);
  });

  test("a backend answering the upgrade with 200 keeps the client connection in HTTP", async () => {
    const rb = recordingBackend("plain");
    cleanups.push(() => rb.stop());
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: rb.port }] }));
    const c = await rawHttp(l.port);
    c.write(upgradeHead());
    const r1 = await c.response();
    expect(r1.status).toBe(200);
    expect(r1.body.toString()).toBe("plain");
    expect(r1.get("upgrade")).toBeUndefined();
    // the same connection still speaks HTTP
    c.write("GET /second HTTP/1.1\r\nHost: ws.example\r\n\r\n");
    const r2 = await c.response();
    expect(r2.status).toBe(200);
    expect(r2.body.toString()).toBe("plain");
    expect(rb.requests.map((q) => q.head.split("\r\n")[0])).toEqual(["GET /ws HTTP/1.1", "GET /second HTTP/1.1"]);
    // the upgrade request itself went to the backend as an upgrade
    expect(rb.requests[0].head).toMatch(/\r\nUpgrade: websocket/i);
    expect(counters.tunnelsOpen).toBe(0);
  });

  test("Upgrade: h2c is never tunnelled: the backend sees no upgrade, the client a normal response", async () => {
    // a backend that would switch to h2c if asked
    const rb = recordingBackend("h2", ({ head }) =>
      /\r\nupgrade:/i.test(head)
        ? "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        : "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    cleanups.push(() => rb.stop());
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: rb.port }] }));
    const c = await rawHttp(l.port);
    c.write("GET /h2 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n");
    const r = await c.response();
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe("ok");
    const head = rb.requests[0].head;
    expect(head).not.toMatch(/\r\nupgrade:/i);
    expect(head).not.toMatch(/\r\nconnection:[^\r]*upgrade/i);
    expect(head).not.toMatch(/\r\nhttp2-settings:/i); // listed in Connection: hop-by-hop
    // still HTTP afterwards
    c.write("GET /again HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await c.response()).body.toString()).toBe("ok");
    expect(counters.tunnelsOpen).toBe(0);
  });
});

// ------------------------------------------------------------------------------------

const MSG = 16 * BLOCK; // 16 MiB
const MSGS = 5; // 80 MiB each way
const RSS_GROWTH_LIMIT = 64 * 1024 * 1024;

/** message k of the big stream: 16 stamped 1 MiB blocks */
function bigMessage(k: number): Buffer {
  return Buffer.concat(Array.from({ length: 16 }, (_, j) => block(k * 16 + j)));
}

describe("16 MB messages through a slow consumer (Latch subprocess, RSS bounded)", () => {
  test("backend -> slow client: 5 x 16 MiB messages arrive intact, Latch RSS stays bounded", async () => {
    // the backend sends the big messages one after another, each when the previous left its buffer
    let sent = 0;
    const pump = (w: Parameters<NonNullable<WsBackendOptions["onDrain"]>>[0]) => {
      while (sent < MSGS) {
        const r = w.send(bigMessage(sent));
        if (r === 0) throw new Error("backend dropped a message");
        sent++;
        if (r === -1) return; // backpressure: the rest on drain
      }
    };
    const b = backend("big", {
      onText(w, m) {
        if (m !== "big") return false;
        pump(w);
        return true;
      },
      onDrain: (w) => pump(w),
    });
    const port = await freePort();
    const proc = await spawnLatch(simpleConfig({ port, servers: [{ id: "big", port: b.port }] }), port);
    cleanups.push(() => proc.stop());
    const expected = Array.from({ length: MSGS }, (_, k) => new Bun.CryptoHasher("sha256").update(bigMessage(k)).digest("hex"));

    // warm-up tunnel, so the baseline includes a live tunnel's worth of state
    const warm = await raw(port);
    expect((await warm.response()).status).toBe(101);
    warm.sendText("warm");
    await warm.waitMessages(1);
    warm.terminate();
    await Bun.sleep(200);

    const base = rssOf(proc.pid);
    const rss = sampler(() => rssOf(proc.pid), 25);
    // a slow reader: after every MiB the socket is paused for 40 ms
    let nextPause = BLOCK;
    const c = await raw(port, {
      hashOnly: true,
      onData(s: Socket<undefined>) {
        if (c.reader.bytes >= nextPause) {
          nextPause = c.reader.bytes + BLOCK;
          s.pause();
          void Bun.sleep(40).then(() => s.resume());
        }
      },
    });
    expect((await c.response()).status).toBe(101);
    c.sendText("big");
    await c.reader.waitFor(() => c.reader.digests.length >= MSGS, 50_000, () => c.ended);
    const max = rss.stop();
    expect(c.reader.sizes).toEqual(Array(MSGS).fill(MSG));
    expect(c.reader.digests).toEqual(expected);
    console.log(`ws download: latch RSS ${(base / 2 ** 20).toFixed(1)} MiB -> max ${(max / 2 ** 20).toFixed(1)} MiB over ${(MSGS * MSG) / 2 ** 20} MiB`);
    expect(MSGS * MSG).toBeGreaterThanOrEqual(64 * 2 ** 20);
    expect(max - base).toBeLessThan(RSS_GROWTH_LIMIT);
  }, 60_000);

  test("client -> slow backend: 5 x 16 MiB frames arrive byte for byte, Latch RSS stays bounded", async () => {
    // a raw backend that hashes every byte after the handshake, pausing 40 ms per MiB
    const hash = new Bun.CryptoHasher("sha256");
    let count = 0;
    let nextPause = BLOCK;
    let expectedBytes = Infinity;
    let done!: () => void;
    const received = new Promise<void>((r) => (done = r));
    const rb = rawWsBackend({
      data(s, d) {
        hash.update(d);
        count += d.length;
        if (count >= expectedBytes) done();
        if (count >= nextPause) {
          nextPause = count + BLOCK;
          s.pause();
          void Bun.sleep(40).then(() => s.resume());
        }
      },
    });
    cleanups.push(() => rb.stop());
    const port = await freePort();
    const proc = await spawnLatch(simpleConfig({ port, servers: [{ id: "slow", port: rb.port }] }), port);
    cleanups.push(() => proc.stop());

    const warm = await raw(port);
    expect((await warm.response()).status).toBe(101);
    warm.terminate();
    await Bun.sleep(200);

    const base = rssOf(proc.pid);
    const rss = sampler(() => rssOf(proc.pid), 25);
    const c = await raw(port);
    expect((await c.response()).status).toBe(101);
    const sentHash = new Bun.CryptoHasher("sha256");
    let sentBytes = 0;
    for (let k = 0; k < MSGS; k++) {
      const f = encodeFrame(OP_BIN, bigMessage(k), true);
      sentHash.update(f);
      sentBytes += f.length;
      c.write(f);
      await c.flushed(); // one frame at a time in the client's own memory
    }
    expectedBytes = sentBytes;
    if (count >= expectedBytes) done();
    await Promise.race([received, Bun.sleep(50_000)]);
    const max = rss.stop();
    expect(count).toBe(sentBytes);
    expect(hash.digest("hex")).toBe(sentHash.digest("hex"));
    console.log(`ws upload: latch RSS ${(base / 2 ** 20).toFixed(1)} MiB -> max ${(max / 2 ** 20).toFixed(1)} MiB over ${sentBytes / 2 ** 20} MiB`);
    expect(max - base).toBeLessThan(RSS_GROWTH_LIMIT);
  }, 60_000);
});

// ------------------------------------------------------------------------------------

describe("1,000 concurrent tunnels", () => {
  test("1,000 clients each get an echo over their own tunnel; all close back to zero", async () => {
    const N = 1000;
    const b = backend("many");
    const l = latchOver([b]);
    const clients: WsClient[] = [];
    // open in waves, all held open together
    for (let i = 0; i < N; i += 100) {
      const wave = Array.from({ length: 100 }, () => new WsClient(`ws://127.0.0.1:${l.port}/ws`));
      clients.push(...wave);
      await Promise.all(wave.map((c) => c.opened));
    }
    for (const c of clients) cleanups.push(() => c.ws.close());
    expect(counters.tunnelsOpen).toBe(N);
    await until(() => b.open.size === N, 5000, "backend sees all tunnels");
    const replies = await Promise.all(clients.map((c, i) => c.ask(`hello ${i}`, 10_000)));
    expect(replies).toEqual(Array.from({ length: N }, (_, i) => `hello ${i}`));
    for (const c of clients) c.ws.close(1000, "done");
    const codes = await Promise.all(clients.map((c) => c.closed));
    expect(codes.every((e) => e.code === 1000)).toBe(true);
    await until(() => counters.tunnelsOpen === 0, 5000, "tunnelsOpen back to 0");
    await until(() => b.open.size === 0, 5000, "backend sockets closed");
    expect(b.closes.filter((x) => x.code === 1000 && x.reason === "done").length).toBe(N);
  }, 25_000);
});

// ------------------------------------------------------------------------------------

describe("close, half-close, backend death, idle timeout", () => {
  test("a client close code and reason reach the backend", async () => {
    const b = backend("echo");
    const l = latchOver([b]);
    const c = await ws(l.port);
    expect(await c.ask("x")).toBe("x");
    c.ws.close(4001, "bye");
    const e = await c.closed;
    expect(e.code).toBe(4001);
    await until(() => b.closes.length === 1, 5000, "backend close");
    expect(b.closes[0]).toEqual({ code: 4001, reason: "bye" });
    await until(() => counters.tunnelsOpen === 0, 5000, "tunnel closed");
  });

  test("a backend close code and reason reach the client", async () => {
    const b = backend("echo");
    const l = latchOver([b]);
    const c = await ws(l.port);
    c.ws.send("close:4002:server says bye");
    const e = await c.closed;
    expect(e).toEqual({ code: 4002, reason: "server says bye" });
    await until(() => counters.tunnelsOpen === 0, 5000, "tunnel closed");
  });

  test("half-close: after the client's FIN the backend still answers, then the tunnel closes", async () => {
    let backendSawFin = false;
    let got = Buffer.alloc(0);
    const rb = rawWsBackend({
      data(_s, d) {
        got = Buffer.concat([got, d]);
      },
      end(s) {
        backendSawFin = true;
        // answer well after the FIN, then close
        void Bun.sleep(150).then(() => {
          s.write(encodeFrame(OP_TEXT, `late reply to ${got.length} bytes`, false));
          s.end();
        });
      },
    });
    cleanups.push(() => rb.stop());
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: rb.port }] }));
    const c = await raw(l.port, { allowHalfOpen: true });
    expect((await c.response()).status).toBe(101);
    const frame = encodeFrame(OP_TEXT, "last words", true);
    c.write(frame);
    await c.flushed();
    c.shutdown();
    const msgs = await c.waitMessages(1);
    expect(msgs[0].data.toString()).toBe(`late reply to ${frame.length} bytes`);
    expect(backendSawFin).toBe(true);
    expect(Buffer.compare(got, frame)).toBe(0);
    expect(await c.waitEnded()).toBe(true);
    await until(() => counters.tunnelsOpen === 0, 5000, "tunnel closed");
  });

  test("a backend that dies closes the client (server stopped; socket killed)", async () => {
    const b = wsEchoBackend("mortal");
    cleanups.push(() => b.stop());
    const l = latchOver([b]);
    const c = await ws(l.port);
    expect(await c.ask("alive?")).toBe("alive?");
    b.server.stop(true);
    expect(await c.closedWithin(5000)).not.toBeNull();
    await until(() => counters.tunnelsOpen === 0, 5000, "tunnel closed");

    // a raw backend whose socket is terminated mid-tunnel
    const rb = rawWsBackend({ data: (s) => s.terminate() });
    cleanups.push(() => rb.stop());
    const l2 = latch(simpleConfig({ servers: [{ id: "s1", port: rb.port }] }));
    const r = await raw(l2.port);
    expect((await r.response()).status).toBe(101);
    r.sendText("kill me");
    expect(await r.waitEnded()).toBe(true);
    await until(() => counters.tunnelsOpen === 0, 5000, "tunnel closed");
  });

  test("tunnel idle timeout: an idle tunnel closes after ~1 s, an active one stays open", async () => {
    const b = backend("echo");
    const l = latchOver([b], { backendExtra: `timeout = { tunnel = "1s" }` });
    const before = counters.tunnelTimeouts;
    const idle = await ws(l.port);
    const active = await ws(l.port);
    const t0 = Date.now();
    let n = 0;
    const ticker = setInterval(() => active.ws.send(`tick ${n++}`), 300);
    cleanups.push(() => clearInterval(ticker));
    const closed = await idle.closedWithin(5000);
    expect(closed).not.toBeNull();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(800);
    // the active tunnel outlives several timeouts
    await Bun.sleep(Math.max(0, 3500 - (Date.now() - t0)));
    clearInterval(ticker);
    expect(active.closeEvent).toBeNull();
    await active.waitFor(() => active.messages.length >= n, 2000);
    expect(active.messages).toEqual(Array.from({ length: n }, (_, i) => `tick ${i}`));
    expect(counters.tunnelTimeouts - before).toBe(1);
    // once quiet, it times out too
    expect(await active.closedWithin(5000)).not.toBeNull();
    expect(counters.tunnelTimeouts - before).toBe(2);
  }, 15_000);
});

// ------------------------------------------------------------------------------------

const HEADER_RULES = `set_headers = { "X-Session-ID" = "cookie:SESSIONID", "X-Env" = "literal" }\n  remove_headers = ["X-Debug"]`;

describe("set_headers / remove_headers", () => {
  test("WebSocket: the SESSIONID cookie becomes X-Session-ID; client copies replaced; literal set; X-Debug removed", async () => {
    const b = backend("echo");
    const l = latchOver([b], { routeExtra: HEADER_RULES });
    const c = await ws(l.port, "/ws", {
      Cookie: "theme=dark; SESSIONID=abc123; lang=ja",
      "X-Session-ID": "injected",
      "X-Env": "client-claimed",
      "X-Debug": "1",
    });
    expect(await c.ask("still a tunnel")).toBe("still a tunnel");
    const h = b.upgrades[0];
    expect(h["x-session-id"]).toBe("abc123");
    expect(h["x-env"]).toBe("literal");
    expect(h["x-debug"]).toBeUndefined();
    expect(h["cookie"]).toBe("theme=dark; SESSIONID=abc123; lang=ja");
    expect(h["upgrade"]).toBe("websocket");

    // no SESSIONID cookie: no header, whatever the client claims
    const d = await ws(l.port, "/ws", { Cookie: "theme=dark", "X-Session-ID": "injected" });
    expect(await d.ask("x")).toBe("x");
    expect(b.upgrades[1]["x-session-id"]).toBeUndefined();
    expect(b.upgrades[1]["x-env"]).toBe("literal");
    const e = await ws(l.port, "/ws");
    expect(await e.ask("y")).toBe("y");
    expect(b.upgrades[2]["x-session-id"]).toBeUndefined();
  });

  test("plain HTTP: the same rules, byte-exact on the backend side", async () => {
    const rb = recordingBackend("app");
    cleanups.push(() => rb.stop());
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: rb.port }], routeExtra: HEADER_RULES }));
    const c = await rawHttp(l.port);
    c.write(
      "GET /a HTTP/1.1\r\nHost: h\r\nx-session-id: injected-1\r\nCookie: SESSIONID=s3cr3t-42\r\nX-Debug: on\r\nX-SESSION-ID: injected-2\r\nX-Env: x\r\n\r\n",
    );
    expect((await c.response()).status).toBe(200);
    c.write("GET /b HTTP/1.1\r\nHost: h\r\nX-Session-ID: injected\r\nCookie: other=1\r\n\r\n");
    expect((await c.response()).status).toBe(200);
    const lines = (i: number, name: string) =>
      rb.requests[i].head.split("\r\n").filter((x) => x.toLowerCase().startsWith(name.toLowerCase() + ":"));
    expect(lines(0, "X-Session-ID")).toEqual(["X-Session-ID: s3cr3t-42"]);
    expect(lines(0, "X-Env")).toEqual(["X-Env: literal"]);
    expect(lines(0, "X-Debug")).toEqual([]);
    expect(lines(0, "Cookie")).toEqual(["Cookie: SESSIONID=s3cr3t-42"]);
    expect(lines(1, "X-Session-ID")).toEqual([]);
    expect(lines(1, "X-Env")).toEqual(["X-Env: literal"]);
  });
});

// ------------------------------------------------------------------------------------

describe("limits", () => {
  test("websocket.origins: an allowed origin tunnels; another origin or none gets 403", async () => {
    const b = backend("echo");
    const l = latchOver([b], { routeExtra: `websocket = { enabled = true, origins = ["https://example.com"] }` });
    const ok = await ws(l.port, "/ws", { Origin: "https://example.com" });
    expect(await ok.ask("hi")).toBe("hi");
    const okCase = await raw(l.port, { headers: { Origin: "https://Example.COM" } });
    expect((await okCase.response()).status).toBe(101);
    const evil = await raw(l.port, { headers: { Origin: "https://evil.example" } });
    expect((await evil.response()).status).toBe(403);
    const sub = await raw(l.port, { headers: { Origin: "https://example.com.evil.example" } });
    expect((await sub.response()).status).toBe(403);
    const none = await raw(l.port);
    expect((await none.response()).status).toBe(403);
    // the Bun client with a wrong origin fails to open
    const bad = new WsClient(`ws://127.0.0.1:${l.port}/ws`, { Origin: "https://evil.example" });
    cleanups.push(() => bad.ws.close());
    await expect(bad.opened).rejects.toThrow();
    expect(b.upgrades.length).toBe(2);
  });

  test("websocket.max_per_client = 2: a third concurrent tunnel gets 503; after a close a new one is accepted", async () => {
    const b = backend("echo");
    const l = latchOver([b], { routeExtra: `websocket = { max_per_client = 2 }` });
    const refusedBefore = counters.tunnelsRefused;
    const a = await ws(l.port);
    const c2 = await ws(l.port);
    expect(await a.ask("a")).toBe("a");
    const third = await raw(l.port);
    expect((await third.response()).status).toBe(503);
    expect(counters.tunnelsRefused - refusedBefore).toBe(1);
    // plain HTTP is not limited
    const h = await rawHttp(l.port);
    h.write("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    expect((await h.response()).status).toBe(200);
    a.ws.close();
    await a.closed;
    await until(() => counters.tunnelsOpen === 1, 5000, "one tunnel left");
    const again = await ws(l.port);
    expect(await again.ask("again")).toBe("again");
    expect(await c2.ask("still")).toBe("still");
    const fourth = await raw(l.port);
    expect((await fourth.response()).status).toBe(503);
  });

  test("[global] max_tunnels = 2: beyond it 503, freed slots are reused", async () => {
    const b = backend("echo");
    const l = latchOver([b], { global: "max_tunnels = 2" });
    const a = await ws(l.port);
    const c2 = await ws(l.port, "/other");
    const third = await raw(l.port);
    expect((await third.response()).status).toBe(503);
    expect(b.upgrades.length).toBe(2);
    c2.ws.close();
    await until(() => counters.tunnelsOpen === 1, 5000, "one tunnel left");
    const d = await ws(l.port);
    expect(await d.ask("in")).toBe("in");
    expect(await a.ask("a")).toBe("a");
  });

  test("websocket = { enabled = false }: the upgrade is not tunnelled; the request is plain HTTP", async () => {
    const b = backend("echo");
    const l = latchOver([b], { routeExtra: `websocket = { enabled = false }` });
    const c = await raw(l.port);
    const r = await c.response();
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe("plain echo");
    expect(b.upgrades.length).toBe(0);
    expect(b.plain.length).toBe(1);
    expect(b.plain[0]["upgrade"]).toBeUndefined();
    expect(b.plain[0]["connection"] ?? "").not.toMatch(/upgrade/i);
    expect(counters.tunnelsOpen).toBe(0);
    const bun = new WsClient(`ws://127.0.0.1:${l.port}/ws`);
    cleanups.push(() => bun.ws.close());
    await expect(bun.opened).rejects.toThrow();
  });
});
