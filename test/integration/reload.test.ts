// Hot reload (SIGHUP) and graceful stop (SIGTERM) of a real Latch process, over real sockets:
// the config file is rewritten under a bounded load and no request fails; a bad config keeps
// the running one and says why (file:line); requests and WebSocket tunnels in flight finish
// on the configuration they started with; learned tables and server state survive; SIGTERM
// finishes every request in flight, refuses new connections and exits 0.

import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { freePort, simpleConfig, startLatch, type Running } from "../helpers/latch.ts";
import { RawClient, recordingBackend, request } from "../helpers/raw.ts";
import { ok, scriptedBackend } from "../helpers/backends.ts";
import { wsEchoBackend, WsClient } from "../helpers/ws.ts";
import { failures, runLoad, type Outcome } from "../helpers/load.ts";
import { startReloadable, type Reloadable } from "../helpers/reloadable.ts";
import { loadConfigText } from "../../src/config/index.ts";

// loads run for seconds and subprocesses start and stop: more than the 5 s default
setDefaultTimeout(20_000);

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function backend(name: string, respond?: Parameters<typeof recordingBackend>[1]) {
  const b = recordingBackend(name, respond);
  cleanups.push(() => b.stop());
  return b;
}

async function latch(toml: string): Promise<Reloadable> {
  const l = await startReloadable(toml);
  cleanups.push(() => l.dispose());
  return l;
}

interface Srv {
  id: string;
  port: number;
  extra?: string;
}

/**
 * One listener on `port`: route /v2 to backend `next` when `v2` is set, everything else to
 * backend `app`. Both backends are always defined.
 */
function conf(o: { port: number; app: Srv[]; next: Srv[]; v2?: boolean; persist?: string; appExtra?: string }): string {
  const servers = (b: string, list: Srv[]) =>
    list.map((s) => `[[backend.${b}.server]]\nid = "${s.id}"\naddress = "127.0.0.1:${s.port}"\n${s.extra ?? ""}\n`).join("\n");
  return `[global]
snapshot_interval = "0s"

[[listen]]
name = "web"
bind = "127.0.0.1:${o.port}"
${o.v2 ? `
  [[listen.route]]
  path = "/v2"
  backend = "next"
` : ""}
  [[listen.route]]
  path = "/"
  backend = "app"

[backend.app]
balance = "roundrobin"
${o.appExtra ?? ""}
${o.persist ? `[backend.app.persist]\n${o.persist}\n` : ""}
${servers("app", o.app)}

[backend.next]
balance = "roundrobin"

${servers("next", o.next)}
`;
}

const get = (port: number, path = "/", extra = "") => request(port, `GET ${path} HTTP/1.1\r\nHost: r.example\r\n${extra}\r\n`);

/** A PHP-like application: the first response of a session sets PHPSESSID=<server>-<n>. */
function phpBackend(name: string) {
  let n = 0;
  return backend(name, ({ head }) => {
    const has = /\r\ncookie:[^\r]*PHPSESSID=/i.test(head);
    const set = has ? "" : `Set-Cookie: PHPSESSID=${name}-${++n}; path=/\r\n`;
    return `HTTP/1.1 200 OK\r\nContent-Length: ${name.length}\r\nX-Server: ${name}\r\n${set}\r\n${name}`;
  });
}

// ------------------------------------------------------------------------------------------

describe("SIGHUP under load", () => {
  test("servers added, weights changed, a route added, a server removed, SIGHUP many times: zero failed requests, new requests follow each new config", async () => {
    const [a1, a2, a3, nx] = [backend("ap01"), backend("ap02"), backend("ap03"), backend("nx")];
    const port = await freePort();
    const next = [{ id: "nx", port: nx.port }];
    const l = await latch(conf({ port, app: [{ id: "ap01", port: a1.port }, { id: "ap02", port: a2.port }], next }));

    // the operator's script, while the load runs
    const marks: Record<string, { sent: number; seen: number }> = {};
    const hup = async (name: string) => {
      const sent = Date.now();
      const r = await l.hup();
      expect(r.ok).toBe(true);
      marks[name] = { sent, seen: Date.now() };
    };
    const operator = (async () => {
      await Bun.sleep(400);
      // B: a third server, with weight 3
      l.write(conf({ port, app: [{ id: "ap01", port: a1.port }, { id: "ap02", port: a2.port }, { id: "ap03", port: a3.port, extra: "weight = 3" }], next }));
      await hup("B");
      await Bun.sleep(400);
      await hup("B again"); // the same file again: nothing changes, nothing breaks
      await Bun.sleep(400);
      // C: /v2 now goes to backend next
      l.write(conf({ port, v2: true, app: [{ id: "ap01", port: a1.port }, { id: "ap02", port: a2.port }, { id: "ap03", port: a3.port, extra: "weight = 3" }], next }));
      await hup("C");
      await Bun.sleep(400);
      // D: ap01 removed, equal weights
      l.write(conf({ port, v2: true, app: [{ id: "ap02", port: a2.port }, { id: "ap03", port: a3.port }], next }));
      await hup("D");
      await Bun.sleep(300);
      for (let i = 0; i < 3; i++) await hup(`D${i}`); // back to back
    })();

    const outcomes = await runLoad({
      port,
      ms: 3200,
      clients: 6, // even: keep-alive, odd: a new connection per request
      request: (i, n) => ({ path: n % 2 === 0 ? `/load/${i}/${n}` : `/v2/${i}/${n}` }),
    });
    await operator;
    expect(failures(outcomes)).toEqual([]);
    expect(outcomes.length).toBeGreaterThan(300);
    expect(outcomes.some((o) => o.keepAlive)).toBe(true);
    expect(outcomes.some((o) => !o.keepAlive)).toBe(true);

    const between = (from: number, to: number) => outcomes.filter((o) => o.sent > from && o.done < to);
    const isV2 = (o: Outcome) => o.n % 2 === 1; // see `request` above

    // A: two servers, /v2 goes to app
    const A = between(0, marks.B.sent);
    expect(new Set(A.map((o) => o.server))).toEqual(new Set(["ap01", "ap02"]));
    // B: ap03 takes 3/5 of app's traffic (smooth weighted roundrobin), /v2 still to app
    const B = between(marks.B.seen, marks.C.sent);
    expect(B.length).toBeGreaterThan(50);
    expect(B.some((o) => o.server === "nx")).toBe(false);
    const share3 = B.filter((o) => o.server === "ap03").length / B.length;
    expect(share3).toBeGreaterThan(0.45);
    expect(share3).toBeLessThan(0.75);
    // C: /v2 to nx, the rest to app
    const C = between(marks.C.seen, marks.D.sent);
    expect(C.length).toBeGreaterThan(30);
    for (const o of C) expect([o.n, isV2(o) ? o.server === "nx" : /^ap0[123]$/.test(o.server)]).toEqual([o.n, true]);
    // D: ap01 gone
    const D = outcomes.filter((o) => o.sent > marks.D.seen);
    expect(D.length).toBeGreaterThan(50);
    expect(D.some((o) => o.server === "ap01")).toBe(false);
    expect(new Set(D.filter((o) => !isV2(o)).map((o) => o.server))).toEqual(new Set(["ap02", "ap03"]));
    expect(new Set(D.filter(isV2).map((o) => o.server))).toEqual(new Set(["nx"]));
    expect(l.output()).not.toContain("reload failed");
    expect(await l.stop()).toBe(0);
  });
});

describe("a reload that fails", () => {
  test("an invalid config keeps the running one; the log says why, with file:line; a fixed file then loads", async () => {
    const [a1, a2] = [backend("ap01"), backend("ap02")];
    const port = await freePort();
    const l = await latch(conf({ port, app: [{ id: "ap01", port: a1.port }], next: [{ id: "nx", port: a2.port }] }));
    expect((await get(port)).get("x-server")).toBe("ap01");

    // a schema error: the file says ap02 and an unknown algorithm
    const bad = conf({ port, app: [{ id: "ap02", port: a2.port }], next: [{ id: "nx", port: a2.port }] }).replace(
      'balance = "roundrobin"',
      'balance = "fastest"',
    );
    l.write(bad);
    const line = bad.split("\n").findIndex((x) => x.includes('"fastest"')) + 1;
    const r1 = await l.hup();
    expect(r1.ok).toBe(false);
    expect(l.output()).toContain("reload failed, keeping the running configuration");
    expect(l.output()).toContain(`${l.file}:${line}: backend.app.balance`);
    for (let i = 0; i < 4; i++) expect((await get(port)).get("x-server")).toBe("ap01");

    // a TOML syntax error
    l.write(`[[listen]]\nname = "web\nbind = "127.0.0.1:${port}"\n`);
    const r2 = await l.hup();
    expect(r2.ok).toBe(false);
    expect(l.output()).toContain(`${l.file}:2: TOML syntax error`);
    for (let i = 0; i < 4; i++) expect((await get(port)).get("x-server")).toBe("ap01");

    // fixed: the next SIGHUP applies it
    l.write(conf({ port, app: [{ id: "ap02", port: a2.port }], next: [{ id: "nx", port: a2.port }] }));
    expect((await l.hup()).ok).toBe(true);
    for (let i = 0; i < 4; i++) expect((await get(port)).get("x-server")).toBe("ap02");
    expect(a1.requests).toHaveLength(9);
    expect(await l.stop()).toBe(0);
  });
});

describe("what was under way at the reload finishes on the old configuration", () => {
  test("a slow request started before SIGHUP completes with the old backend; the next request on its connection uses the new config", async () => {
    const slow = scriptedBackend(async (req) => {
      await Bun.sleep(1000);
      return ok(`slow answer to ${req.target}`, "X-Server: slow\r\n");
    });
    cleanups.push(() => slow.stop());
    const fast = backend("fast");
    const port = await freePort();
    const l = await latch(conf({ port, app: [{ id: "slow", port: slow.port }], next: [{ id: "nx", port: fast.port }] }));
    const c = await RawClient.connect(port);
    cleanups.push(() => c.close());
    c.write("GET /inflight HTTP/1.1\r\nHost: r.example\r\n\r\n");
    while (slow.requests.length === 0) await Bun.sleep(10);
    l.write(conf({ port, app: [{ id: "fast", port: fast.port }], next: [{ id: "nx", port: fast.port }] }));
    expect((await l.hup()).ok).toBe(true);
    expect((await get(port, "/new")).get("x-server")).toBe("fast"); // answered while the old one is still running
    const r = await c.response();
    expect(r.status).toBe(200);
    expect(r.get("x-server")).toBe("slow");
    expect(r.body.toString()).toBe("slow answer to /inflight");
    expect(r.get("connection")).toBeUndefined(); // kept alive
    c.write("GET /after HTTP/1.1\r\nHost: r.example\r\n\r\n");
    expect((await c.response()).get("x-server")).toBe("fast");
    expect(slow.requests.map((q) => q.target)).toEqual(["/inflight"]);
    expect(await l.stop()).toBe(0);
  });

  test("an established WebSocket tunnel survives reloads and still echoes; new upgrades use the new backend", async () => {
    const [ws1, ws2] = [wsEchoBackend("ws1"), wsEchoBackend("ws2")];
    cleanups.push(() => ws1.stop(), () => ws2.stop());
    const port = await freePort();
    const l = await latch(conf({ port, app: [{ id: "ws1", port: ws1.port }], next: [{ id: "nx", port: ws2.port }] }));
    const w = await WsClient.open(`ws://127.0.0.1:${port}/chat`);
    cleanups.push(() => w.ws.close());
    expect(await w.ask("whoami")).toBe("ws1");
    l.write(conf({ port, app: [{ id: "ws2", port: ws2.port }], next: [{ id: "nx", port: ws2.port }] }));
    expect((await l.hup()).ok).toBe(true);
    expect((await l.hup()).ok).toBe(true);
    expect(await w.ask("still there?")).toBe("still there?");
    expect(await w.ask("whoami")).toBe("ws1");
    const big = "x".repeat(200_000);
    expect(await w.ask(big)).toBe(big);
    const w2 = await WsClient.open(`ws://127.0.0.1:${port}/chat`);
    cleanups.push(() => w2.ws.close());
    expect(await w2.ask("whoami")).toBe("ws2");
    expect(w.closeEvent).toBeNull();
    expect(ws1.open.size).toBe(1);
    w.ws.close();
    w2.ws.close();
    await w.closed;
    await w2.closed;
    expect(await l.stop()).toBe(0);
  });
});

describe("state kept across a reload", () => {
  test("learned sessions of an unchanged backend still route after SIGHUP (no new Set-Cookie, no move)", async () => {
    const [a1, a2, nx] = [phpBackend("ap01"), phpBackend("ap02"), backend("nx")];
    const port = await freePort();
    const app = [{ id: "ap01", port: a1.port }, { id: "ap02", port: a2.port }];
    const persist = 'mode = "learn"\ncookie = "PHPSESSID"\nrequest_learn = false';
    const l = await latch(conf({ port, app, next: [{ id: "nx", port: nx.port }], persist }));
    const sessions: { sid: string; server: string }[] = [];
    for (let i = 0; i < 6; i++) {
      const r = await get(port);
      sessions.push({ sid: /PHPSESSID=([^;]+)/.exec(r.get("set-cookie")!)![1], server: r.get("x-server")! });
    }
    expect(new Set(sessions.map((s) => s.server))).toEqual(new Set(["ap01", "ap02"]));
    const revisit = async () => {
      for (const s of sessions) {
        for (let k = 0; k < 2; k++) {
          const r = await get(port, "/", `Cookie: PHPSESSID=${s.sid}\r\n`);
          expect([s.sid, r.get("x-server")]).toEqual([s.sid, s.server]);
          expect(r.get("set-cookie")).toBeUndefined();
        }
      }
    };
    await revisit();
    // another backend and the routes change; app does not
    l.write(conf({ port, app, next: [{ id: "nx", port: nx.port, extra: "weight = 2" }], v2: true, persist }));
    expect((await l.hup()).ok).toBe(true);
    await revisit();
    expect((await l.hup()).ok).toBe(true);
    await revisit();
    expect(await l.stop()).toBe(0);
  });

  test("a server a health check marked down stays down across a reload (no traffic to it right after SIGHUP)", async () => {
    const sick = (name: string) =>
      backend(name, ({ head }) =>
        head.startsWith("GET /healthz")
          ? "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
          : `HTTP/1.1 200 OK\r\nContent-Length: ${name.length}\r\nX-Server: ${name}\r\n\r\n${name}`,
      );
    const [a1, a2, nx] = [backend("ap01"), sick("ap02"), backend("nx")];
    const port = await freePort();
    const app = [{ id: "ap01", port: a1.port }, { id: "ap02", port: a2.port }];
    const health = (interval: string) => `[backend.app.health]\npath = "/healthz"\ninterval = "${interval}"\nfall = 1\nrise = 2\n`;
    const l = await latch(conf({ port, app, next: [{ id: "nx", port: nx.port }], appExtra: "", persist: undefined }).replace("[backend.next]", `${health("200ms")}\n[backend.next]`));
    const until = Date.now() + 5000;
    while (!/server ap02 DOWN/.test(l.output()) && Date.now() < until) await Bun.sleep(20);
    expect(l.output()).toMatch(/server ap02 DOWN/);
    const served = () => a2.requests.filter((r) => !r.head.startsWith("GET /healthz")).length;
    const before = served();
    // the new config checks far less often: were `up` reset, ap02 would take half the traffic for seconds
    l.write(conf({ port, app, next: [{ id: "nx", port: nx.port, extra: "weight = 2" }] }).replace("[backend.next]", `${health("10s")}\n[backend.next]`));
    expect((await l.hup()).ok).toBe(true);
    for (let i = 0; i < 10; i++) expect((await get(port)).get("x-server")).toBe("ap01");
    expect(served()).toBe(before);
    expect(await l.stop()).toBe(0);
  });

  test("in-process reload: per-server totals, up/down and failure counts are carried by server id; admin comes from the new config", async () => {
    const [a1, a2] = [backend("ap01"), backend("ap02")];
    const toml = (extra2: string) => simpleConfig({ servers: [{ id: "ap01", port: a1.port }, { id: "ap02", port: a2.port, extra: extra2 }] });
    const running: Running = startLatch(toml(""));
    cleanups.push(() => running.stop());
    for (let i = 0; i < 6; i++) expect((await get(running.port)).status).toBe(200);
    const old = running.proxy.config.backends.get("app")!;
    expect(old.servers.map((s) => s.state.total)).toEqual([3, 3]);
    old.servers[0].state.failures = 7;
    running.proxy.reload(loadConfigText(toml('weight = 2\ndrain = true'), "test.toml"));
    const now = running.proxy.config.backends.get("app")!;
    expect(now).not.toBe(old);
    expect(now.servers.map((s) => s.state.total)).toEqual([3, 3]);
    expect(now.servers[0].state.failures).toBe(7);
    expect(now.servers[1].state.admin).toBe("drain");
    for (let i = 0; i < 2; i++) expect((await get(running.port)).get("x-server")).toBe("ap01");
    expect(now.servers.map((s) => s.state.total)).toEqual([5, 3]);
    // a server taken down (as a health check would) stays down through a reload
    now.servers[0].state.up = false;
    running.proxy.reload(loadConfigText(toml(""), "test.toml"));
    const third = running.proxy.config.backends.get("app")!;
    expect(third.servers[0].state.up).toBe(false);
    for (let i = 0; i < 3; i++) expect((await get(running.port)).get("x-server")).toBe("ap02");
  });
});

describe("SIGTERM", () => {
  test("requests in flight all complete with their full bodies, new connections are refused, exit 0 well within the grace period", async () => {
    const SIZE = 256 * 1024;
    const bodyFor = (target: string) => Buffer.alloc(SIZE, `${target};`).toString("latin1");
    // the head and half the body now, the rest 800 ms later
    const slow = scriptedBackend(async (req, sock) => {
      const body = bodyFor(req.target);
      sock.write(`HTTP/1.1 200 OK\r\nContent-Length: ${SIZE}\r\nX-Server: slow\r\n\r\n${body.slice(0, SIZE / 2)}`);
      await Bun.sleep(800);
      return body.slice(SIZE / 2);
    });
    cleanups.push(() => slow.stop());
    const port = await freePort();
    const l = await latch(conf({ port, app: [{ id: "slow", port: slow.port }], next: [{ id: "nx", port: slow.port }] }));
    const clients: RawClient[] = [];
    for (let i = 0; i < 6; i++) {
      const c = await RawClient.connect(port);
      cleanups.push(() => c.close());
      c.write(`GET /slow/${i} HTTP/1.1\r\nHost: r.example\r\n${i % 2 === 0 ? "" : "Connection: close\r\n"}\r\n`);
      clients.push(c);
    }
    while (slow.requests.length < 6) await Bun.sleep(10);
    const t0 = Date.now();
    const exited = l.stop("SIGTERM");
    while (!l.output().includes("stopping")) await Bun.sleep(10);
    // the listener is closed: a new connection is refused
    let refused = false;
    try {
      const late = await RawClient.connect(port);
      late.write("GET / HTTP/1.1\r\nHost: r.example\r\n\r\n");
      refused = (await late.waitClosed(2000)) && late.buf.length === 0;
    } catch (e) {
      refused = /ECONNREFUSED|refused/i.test(String((e as Error).message ?? e) + String((e as { code?: string }).code));
    }
    expect(refused).toBe(true);
    const responses = await Promise.all(clients.map((c) => c.response({ ms: 5000 })));
    responses.forEach((r, i) => {
      expect(r.status).toBe(200);
      expect(r.body.length).toBe(SIZE);
      expect(r.body.toString("latin1")).toBe(bodyFor(`/slow/${i}`));
    });
    expect(await exited).toBe(0);
    expect(Date.now() - t0).toBeLessThan(4000); // the grace period is 5 s: it waited for the work, not the clock
    // keep-alive or not, each connection was closed after its response (its head had gone out before the stop)
    for (const c of clients) expect(await c.waitClosed(1000)).toBe(true);
  });
});
