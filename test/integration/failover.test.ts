// Failover, backup servers, drain and the maxconn queue, over real sockets: an in-process
// Latch in front of backends that are killed (listener and connections closed), disabled,
// marked down or held on purpose. HAProxy is the reference: `option redispatch` re-persists a
// client whose server failed, `cookie ... insert` names the server that really answered,
// backup servers serve only when no primary is up (their own persisted clients stay while
// they are up), `maxconn` queues FIFO with `timeout queue` -> 503.

import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { Socket } from "bun";
import { freePort, reported, simpleConfig, startLatch, type Running } from "../helpers/latch.ts";
import { RawClient, recordingBackend, request, type RawResponse } from "../helpers/raw.ts";
import { ok, scriptedBackend, until, type ScriptedBackend } from "../helpers/backends.ts";
import { failures, runLoad, type Outcome } from "../helpers/load.ts";
import { loadConfigText } from "../../src/config/index.ts";
import { clock } from "../../src/core/clock.ts";
import type { CompiledBackend, TablePersist } from "../../src/core/types.ts";

type Backend = ReturnType<typeof recordingBackend>;
// loads run for seconds and subprocesses start and stop: more than the 5 s default
setDefaultTimeout(20_000);

const cleanups: (() => unknown)[] = [];
let running: Running | null = null;

afterEach(async () => {
  await running?.stop();
  running = null;
  while (cleanups.length > 0) await cleanups.pop()!();
});

function backend(name: string, respond?: Parameters<typeof recordingBackend>[1]): Backend {
  const b = recordingBackend(name, respond);
  cleanups.push(() => b.stop());
  return b;
}

function scripted(respond: Parameters<typeof scriptedBackend>[0]): ScriptedBackend {
  const b = scriptedBackend(respond);
  cleanups.push(() => b.stop());
  return b;
}

function latch(toml: string): Running {
  running = startLatch(toml);
  return running;
}

function app(): CompiledBackend {
  return running!.proxy.config.backends.get("app")!;
}

async function client(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  cleanups.push(() => c.close());
  return c;
}

const get = (port: number, opts: { cookie?: string; path?: string; extra?: string } = {}) =>
  request(
    port,
    `GET ${opts.path ?? "/page"} HTTP/1.1\r\nHost: shop.example\r\n${opts.cookie !== undefined ? `Cookie: ${opts.cookie}\r\n` : ""}${opts.extra ?? ""}\r\n`,
  );

/** A PHP-like application: the first response of a session sets PHPSESSID=<server>-<n>. */
function phpBackend(name: string): Backend {
  let n = 0;
  return backend(name, ({ head }) => {
    const has = /\r\ncookie:[^\r]*PHPSESSID=/i.test(head);
    const set = has ? "" : `Set-Cookie: PHPSESSID=${name}-${++n}; path=/\r\n`;
    return `HTTP/1.1 200 OK\r\nContent-Length: ${name.length}\r\nX-Server: ${name}\r\n${set}\r\n${name}`;
  });
}

const INSERT = `mode = "insert"\ncookie = "SRV"\nindirect = true`;

/** A short error answer: the status, a body of a line or two, and no persistence cookie. */
function expectShortError(r: RawResponse, status: number): void {
  expect(r.status).toBe(status);
  expect(r.body.length).toBeGreaterThan(0);
  expect(r.body.length).toBeLessThan(200);
  expect(r.get("set-cookie")).toBeUndefined();
}

/** Runs the load and kills `victim` (listener and open connections) after `killAfter` ms. */
async function loadWithKill(port: number, victim: Backend, opts: Parameters<typeof runLoad>[0] & { killAfter: number }) {
  let killedAt = Infinity;
  const timer = setTimeout(() => {
    killedAt = Date.now();
    victim.stop();
  }, opts.killAfter);
  const outcomes = await runLoad(opts);
  clearTimeout(timer);
  return { outcomes, killedAt };
}

// ------------------------------------------------------------------------------------------

describe("a backend killed mid-run", () => {
  test("requests sent after the kill are all answered by the other server: connection failures are retried, never a 502", async () => {
    const [a, b] = [backend("ap01"), backend("ap02")];
    const l = latch(simpleConfig({ servers: [{ id: "ap01", port: a.port }, { id: "ap02", port: b.port }] }));
    const from = reported.length;
    const { outcomes, killedAt } = await loadWithKill(l.port, b, { port: l.port, ms: 1500, clients: 6, killAfter: 500 });
    const before = outcomes.filter((o) => o.done < killedAt);
    const after = outcomes.filter((o) => o.sent > killedAt);
    // both served before the kill (roundrobin), only ap01 after it
    expect(new Set(before.map((o) => o.server))).toEqual(new Set(["ap01", "ap02"]));
    expect(after.length).toBeGreaterThan(50);
    expect(failures(after)).toEqual([]);
    expect(new Set(after.map((o) => o.server))).toEqual(new Set(["ap01"]));
    // ap02 is still "up" (no health check here): roundrobin keeps trying it, every try is retried
    expect(reported.slice(from).some((x) => x.includes("ap02") && x.includes("retrying the request on another server"))).toBe(true);
    // the only requests allowed to fail are those already on their way to ap02 when it died
    const lost = outcomes.filter((o) => o.status !== 200);
    for (const o of lost) expect(o.sent).toBeLessThan(killedAt);
    expect(lost.length).toBeLessThanOrEqual(6);
  });

  test("a server that dies on a reused keep-alive connection: the GET is replayed, refused, then retried on the other server", async () => {
    // ap02 answers once, then dies (listener and connections) as the next request reaches it
    const dying = scripted((req) => {
      if (req.n === 0 && req.conn === 0) return ok("ap02", "X-Server: ap02\r\n");
      dying.stop();
      return null;
    });
    const live = backend("ap01");
    const l = latch(simpleConfig({ balance: "first", servers: [{ id: "ap02", port: dying.port }, { id: "ap01", port: live.port }] }));
    expect((await get(l.port)).get("x-server")).toBe("ap02"); // leaves a pooled connection to ap02
    const r = await get(l.port, { path: "/second" });
    expect(r.status).toBe(200);
    expect(r.get("x-server")).toBe("ap01");
    expect(dying.requests.map((q) => q.target)).toEqual(["/page", "/second"]);
    expect(live.requests.map((q) => q.head.split(" ")[1])).toEqual(["/second"]);
  });

  test("insert: persisted clients of the dead server are answered by the live one with Set-Cookie naming it, once", async () => {
    const [a, b] = [backend("ap01"), backend("ap02")];
    const l = latch(simpleConfig({ servers: [{ id: "ap01", port: a.port }, { id: "ap02", port: b.port }], persist: INSERT }));
    // pinned the way a browser is: by a real response
    let pin = await get(l.port);
    while (pin.get("x-server") !== "ap02") pin = await get(l.port);
    expect(pin.get("set-cookie")).toBe("SRV=ap02; Path=/");
    const { outcomes, killedAt } = await loadWithKill(l.port, b, {
      port: l.port,
      ms: 1500,
      clients: 6,
      killAfter: 500,
      cookies: (i) => (i < 4 ? "SRV=ap02" : ""), // 4 persisted clients, 2 new ones that keep their cookie
    });
    for (let i = 0; i < 4; i++) {
      const mine = outcomes.filter((o) => o.client === i);
      expect(mine.filter((o) => o.done < killedAt).every((o) => o.server === "ap02")).toBe(true);
      const after = mine.filter((o) => o.sent > killedAt);
      expect(after.length).toBeGreaterThan(5);
      expect(failures(after)).toEqual([]);
      expect(after.every((o) => o.server === "ap01")).toBe(true);
      // re-persisted exactly once: the first answer from ap01 sets SRV=ap01, the cookie then routes
      const setCookies = mine.flatMap((o) => o.res?.all("set-cookie") ?? []);
      expect(setCookies).toEqual(["SRV=ap01; Path=/"]);
    }
    for (const o of outcomes.filter((o) => o.sent > killedAt)) expect(o.status).toBe(200);
    // nothing of SRV reaches the application (indirect), retried or not
    expect(a.requests.some((r) => /SRV=/.test(r.head))).toBe(false);
  });

  test("learn: the table now points the session at the live server", async () => {
    const [a, b] = [phpBackend("ap01"), phpBackend("ap02")];
    const l = latch(
      simpleConfig({ servers: [{ id: "ap01", port: a.port }, { id: "ap02", port: b.port }], persist: 'mode = "learn"\ncookie = "PHPSESSID"' }),
    );
    const table = (app().persist as TablePersist).table;
    let first = await get(l.port);
    while (first.get("x-server") !== "ap02") first = await get(l.port);
    const sid = /PHPSESSID=([^;]+)/.exec(first.get("set-cookie")!)![1];
    expect(table.lookupString(sid, clock.sec)).toBe(1);
    for (let i = 0; i < 3; i++) expect((await get(l.port, { cookie: `PHPSESSID=${sid}` })).get("x-server")).toBe("ap02");
    b.stop();
    for (let i = 0; i < 4; i++) {
      const r = await get(l.port, { cookie: `PHPSESSID=${sid}` });
      expect(r.status).toBe(200);
      expect(r.get("x-server")).toBe("ap01");
    }
    expect(table.lookupString(sid, clock.sec)).toBe(0);
    // the application on ap01 got the session cookie (it would now look the session up in its store)
    expect(a.requests.filter((r) => r.head.includes(`PHPSESSID=${sid}`)).length).toBe(4);
  });

  test("source: the client's address is re-persisted to the live server", async () => {
    const [a, b] = [backend("ap01"), backend("ap02")];
    const l = latch(simpleConfig({ servers: [{ id: "ap01", port: a.port }, { id: "ap02", port: b.port }], persist: 'mode = "source"' }));
    const table = (app().persist as TablePersist).table;
    const first = await get(l.port);
    const pinned = first.get("x-server")!;
    const [dead, live] = pinned === "ap01" ? [a, b] : [b, a];
    const liveName = pinned === "ap01" ? "ap02" : "ap01";
    expect(table.lookupString("127.0.0.1", clock.sec)).toBe(pinned === "ap01" ? 0 : 1);
    for (let i = 0; i < 3; i++) expect((await get(l.port)).get("x-server")).toBe(pinned);
    dead.stop();
    for (let i = 0; i < 4; i++) {
      const r = await get(l.port);
      expect(r.status).toBe(200);
      expect(r.get("x-server")).toBe(liveName);
    }
    expect(table.lookupString("127.0.0.1", clock.sec)).toBe(pinned === "ap01" ? 1 : 0);
    expect(live.requests.length).toBe(4);
  });

  test('failover = "strict": the persisted client gets 503 (nothing reaches a server), a new client is still served', async () => {
    const [a, b] = [backend("ap01"), backend("ap02")];
    const l = latch(
      simpleConfig({
        servers: [{ id: "ap01", port: a.port }, { id: "ap02", port: b.port }],
        persist: INSERT,
        backendExtra: 'failover = "strict"',
      }),
    );
    expect((await get(l.port, { cookie: "SRV=ap02" })).get("x-server")).toBe("ap02");
    b.stop();
    const seenByA = a.requests.length;
    for (let i = 0; i < 3; i++) expectShortError(await get(l.port, { cookie: "SRV=ap02" }), 503);
    expect(a.requests.length).toBe(seenByA);
    // new clients: roundrobin still tries ap02 half of the time, and those tries are retried
    for (let i = 0; i < 4; i++) {
      const r = await get(l.port);
      expect(r.status).toBe(200);
      expect(r.get("x-server")).toBe("ap01");
      expect(r.get("set-cookie")).toBe("SRV=ap01; Path=/");
    }
    // and the persisted clients of the live server are untouched
    const r = await get(l.port, { cookie: "SRV=ap01" });
    expect(r.get("x-server")).toBe("ap01");
    expect(r.get("set-cookie")).toBeUndefined();
  });

  test("a POST whose connection failed is retried on the other server, which gets its body exactly once", async () => {
    const dead = await freePort();
    const live = backend("ap02");
    // "first": every request tries the dead server first
    const l = latch(simpleConfig({ balance: "first", servers: [{ id: "ap01", port: dead }, { id: "ap02", port: live.port }] }));
    const c = await client(l.port);
    for (let i = 0; i < 3; i++) {
      const body = `amount=${100 + i}&nonce=${crypto.randomUUID()}`;
      c.write(`POST /pay HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      const r = await c.response();
      expect(r.status).toBe(200);
      expect(r.get("x-server")).toBe("ap02");
      expect(live.requests.filter((q) => q.body.toString() === body).length).toBe(1);
    }
    const fresh = await request(l.port, "POST /pay HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
    expect(fresh.status).toBe(200);
    expect(live.requests.filter((q) => q.head.startsWith("POST")).map((q) => q.body.length)).toHaveLength(4);
  });
});

describe("all servers down", () => {
  test("every port closed: 503 with a short body and no Set-Cookie, for new and persisted clients", async () => {
    const [p1, p2] = [await freePort(), await freePort()];
    const l = latch(simpleConfig({ servers: [{ id: "ap01", port: p1 }, { id: "ap02", port: p2 }], persist: INSERT }));
    expectShortError(await get(l.port), 503);
    expectShortError(await get(l.port, { cookie: "SRV=ap01" }), 503);
    expectShortError(await get(l.port, { cookie: "SRV=ap02" }), 503);
  });

  test("every server disabled (or marked down): 503, no Set-Cookie, nothing reaches a server", async () => {
    const [a, b] = [backend("ap01"), backend("ap02")];
    const l = latch(
      simpleConfig({
        servers: [{ id: "ap01", port: a.port, extra: "disabled = true" }, { id: "ap02", port: b.port, extra: "disabled = true" }],
        persist: INSERT,
      }),
    );
    expectShortError(await get(l.port), 503);
    expectShortError(await get(l.port, { cookie: "SRV=ap02" }), 503);
    // back in service at run time, then marked down (as a health check would)
    for (const s of app().servers) s.state.admin = "ready";
    expect((await get(l.port)).status).toBe(200);
    for (const s of app().servers) s.state.up = false;
    expectShortError(await get(l.port), 503);
    expectShortError(await get(l.port, { cookie: "SRV=ap01" }), 503);
    expect(a.requests.length + b.requests.length).toBe(1);
  });
});

describe("backup servers", () => {
  const config = (a: number, b: number, bk: number, extra: [string, string] = ["", ""]) =>
    simpleConfig({
      servers: [
        { id: "ap01", port: a, extra: extra[0] },
        { id: "ap02", port: b, extra: extra[1] },
        { id: "bk", port: bk, extra: "backup = true" },
      ],
      persist: INSERT,
    });

  test("a backup gets nothing while a primary is up; takes every client when all primaries are down; persisted clients of the backup stay on it after the primaries return", async () => {
    const [a, b, bk] = [backend("ap01"), backend("ap02"), backend("bk")];
    const l = latch(config(a.port, b.port, bk.port));
    for (let i = 0; i < 6; i++) expect((await get(l.port)).get("x-server")).toMatch(/^ap0[12]$/);
    // one primary down: still no backup
    app().servers[0].state.up = false;
    for (let i = 0; i < 4; i++) expect((await get(l.port)).get("x-server")).toBe("ap02");
    expect(bk.requests).toHaveLength(0);

    // every primary down: the backup takes new clients and the primaries' persisted ones
    app().servers[1].state.up = false;
    const fresh = await get(l.port);
    expect(fresh.get("x-server")).toBe("bk");
    expect(fresh.get("set-cookie")).toBe("SRV=bk; Path=/");
    const moved = await get(l.port, { cookie: "SRV=ap01" });
    expect(moved.get("x-server")).toBe("bk");
    expect(moved.get("set-cookie")).toBe("SRV=bk; Path=/");
    const stays = await get(l.port, { cookie: "SRV=bk" });
    expect(stays.get("x-server")).toBe("bk");
    expect(stays.get("set-cookie")).toBeUndefined();

    // the primaries return: new clients go back to them; the backup keeps its persisted
    // clients while it is up (HAProxy: a cookie naming a usable server is honoured, backup or not)
    for (const s of app().servers) if (!s.backup) s.state.up = true;
    for (let i = 0; i < 4; i++) {
      const r = await get(l.port);
      expect(r.get("x-server")).toMatch(/^ap0[12]$/);
      expect(r.get("set-cookie")).toMatch(/^SRV=ap0[12]; Path=\/$/);
    }
    for (let i = 0; i < 3; i++) {
      const r = await get(l.port, { cookie: "SRV=bk" });
      expect(r.get("x-server")).toBe("bk");
      expect(r.get("set-cookie")).toBeUndefined();
    }
    // until the backup itself goes away: then they are redispatched to a primary
    app().servers[2].state.up = false;
    const back = await get(l.port, { cookie: "SRV=bk" });
    expect(back.get("x-server")).toMatch(/^ap0[12]$/);
    expect(back.get("set-cookie")).toBe(`SRV=${back.get("x-server")}; Path=/`);
  });

  test("primaries disabled in the config: the backup serves; a reload that enables them sends new clients back", async () => {
    const [a, b, bk] = [backend("ap01"), backend("ap02"), backend("bk")];
    const l = latch(config(a.port, b.port, bk.port, ["disabled = true", "disabled = true"]));
    for (let i = 0; i < 3; i++) {
      const r = await get(l.port);
      expect(r.get("x-server")).toBe("bk");
      expect(r.get("set-cookie")).toBe("SRV=bk; Path=/");
    }
    l.proxy.reload(loadConfigText(config(a.port, b.port, bk.port), "test.toml"));
    for (let i = 0; i < 4; i++) expect((await get(l.port)).get("x-server")).toMatch(/^ap0[12]$/);
    expect((await get(l.port, { cookie: "SRV=bk" })).get("x-server")).toBe("bk");
    expect(bk.requests).toHaveLength(4);
  });

  test("the only primary is killed: its connection failure is retried on the backup", async () => {
    const [a, bk] = [backend("ap01"), backend("bk")];
    const l = latch(
      simpleConfig({ servers: [{ id: "ap01", port: a.port }, { id: "bk", port: bk.port, extra: "backup = true" }], persist: INSERT }),
    );
    expect((await get(l.port)).get("x-server")).toBe("ap01");
    a.stop();
    for (const cookie of [undefined, "SRV=ap01"]) {
      const r = await get(l.port, { cookie });
      expect(r.status).toBe(200);
      expect(r.get("x-server")).toBe("bk");
      expect(r.get("set-cookie")).toBe("SRV=bk; Path=/");
    }
  });
});

describe("drain", () => {
  test("a draining server keeps its persisted clients (insert and learn) and takes no new ones", async () => {
    const [a, b] = [phpBackend("ap01"), phpBackend("ap02")];
    const l = latch(
      simpleConfig({ servers: [{ id: "ap01", port: a.port }, { id: "ap02", port: b.port }], persist: 'mode = "learn"\ncookie = "PHPSESSID"' }),
    );
    let pinned = await get(l.port);
    while (pinned.get("x-server") !== "ap02") pinned = await get(l.port);
    const sid = /PHPSESSID=([^;]+)/.exec(pinned.get("set-cookie")!)![1];
    const before = b.requests.length;
    app().servers[1].state.admin = "drain";
    for (let i = 0; i < 6; i++) expect((await get(l.port)).get("x-server")).toBe("ap01");
    for (let i = 0; i < 3; i++) expect((await get(l.port, { cookie: `PHPSESSID=${sid}` })).get("x-server")).toBe("ap02");
    expect(b.requests.length).toBe(before + 3);
    // the other server going down leaves new clients nowhere to go, the drained ones still served
    app().servers[0].state.up = false;
    expectShortError(await get(l.port), 503);
    expect((await get(l.port, { cookie: `PHPSESSID=${sid}` })).get("x-server")).toBe("ap02");
    // maintenance (disabled) is not drain: the persisted client is redispatched
    app().servers[0].state.up = true;
    app().servers[1].state.admin = "maint";
    expect((await get(l.port, { cookie: `PHPSESSID=${sid}` })).get("x-server")).toBe("ap01");
  });

  test("drain = true in the config, insert: the cookie still routes, no new client gets it", async () => {
    const [a, b] = [backend("ap01"), backend("ap02")];
    const l = latch(
      simpleConfig({ servers: [{ id: "ap01", port: a.port }, { id: "ap02", port: b.port, extra: "drain = true" }], persist: INSERT }),
    );
    for (let i = 0; i < 6; i++) {
      const r = await get(l.port);
      expect(r.get("x-server")).toBe("ap01");
      expect(r.get("set-cookie")).toBe("SRV=ap01; Path=/");
    }
    const r = await get(l.port, { cookie: "SRV=ap02" });
    expect(r.get("x-server")).toBe("ap02");
    expect(r.get("set-cookie")).toBeUndefined();
  });
});

// ------------------------------------------------------------------------------------------

/**
 * A backend for the queue: /hold/* waits until released, anything else answers after `ms`.
 * `events` records "in <target>" when a request arrives and "out <target>" when it is answered.
 */
function queueBackend(ms = 0) {
  const events: string[] = [];
  const gates = new Map<string, () => void>();
  const b = scripted(async (req) => {
    events.push(`in ${req.target}`);
    if (req.target.startsWith("/hold")) await new Promise<void>((r) => gates.set(req.target, r));
    else if (ms > 0) await Bun.sleep(ms);
    events.push(`out ${req.target}`);
    return ok(`done ${req.target}`, "X-Server: s1\r\n");
  });
  const release = async (target: string) => {
    await until(() => gates.has(target), 5000, `${target} at the backend`);
    gates.get(target)!();
  };
  return { b, events, release };
}

const GET = (path: string) => `GET ${path} HTTP/1.1\r\nHost: q.example\r\n\r\n`;

describe("maxconn queueing", () => {
  test("maxconn = 1: a second concurrent request waits until the first is answered, then succeeds", async () => {
    const { b, events } = queueBackend(400);
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: b.port, extra: "maxconn = 1" }] }));
    const [c1, c2] = [await client(l.port), await client(l.port)];
    c1.write(GET("/first"));
    await until(() => b.requests.length === 1);
    c2.write(GET("/second"));
    await until(() => app().queue.length === 1, 2000, "the second request queued");
    const [r1, r2] = [await c1.response(), await c2.response()];
    expect([r1.status, r1.body.toString()]).toEqual([200, "done /first"]);
    expect([r2.status, r2.body.toString()]).toEqual([200, "done /second"]);
    expect(events).toEqual(["in /first", "out /first", "in /second", "out /second"]);
    expect(app().servers[0].state.active).toBe(0);
  });

  test('timeout = { queue = "500ms" }: a request queued behind a longer one gets 503 after about 0.5 s', async () => {
    const { b, release } = queueBackend();
    const l = latch(
      simpleConfig({ servers: [{ id: "s1", port: b.port, extra: "maxconn = 1" }], backendExtra: 'timeout = { queue = "500ms" }' }),
    );
    const [c1, c2] = [await client(l.port), await client(l.port)];
    c1.write(GET("/hold/1"));
    await until(() => b.requests.length === 1);
    const t0 = Date.now();
    c2.write(GET("/queued"));
    const r2 = await c2.response({ ms: 5000 });
    const waited = Date.now() - t0;
    expectShortError(r2, 503);
    expect(waited).toBeGreaterThanOrEqual(350); // the clock sweeps every 100 ms (deadlines are coarse)
    expect(waited).toBeLessThan(2500);
    expect(b.requests.map((r) => r.target)).toEqual(["/hold/1"]); // never reached the backend
    expect(app().queue).toHaveLength(0);
    await release("/hold/1");
    expect((await c1.response()).status).toBe(200);
    expect(b.requests.map((r) => r.target)).toEqual(["/hold/1"]);
  });

  test("queued requests are served in arrival order", async () => {
    const { b, events, release } = queueBackend();
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: b.port, extra: "maxconn = 1" }] }));
    const holder = await client(l.port);
    holder.write(GET("/hold/0"));
    await until(() => b.requests.length === 1);
    const waiting: RawClient[] = [];
    for (let i = 1; i <= 5; i++) {
      const c = await client(l.port);
      c.write(GET(`/hold/${i}`));
      await until(() => app().queue.length === i, 2000, `request ${i} queued`);
      waiting.push(c);
    }
    for (let i = 0; i <= 5; i++) {
      await release(`/hold/${i}`);
      const r = await (i === 0 ? holder : waiting[i - 1]).response();
      expect(r.body.toString()).toBe(`done /hold/${i}`);
    }
    expect(events.filter((e) => e.startsWith("in "))).toEqual([0, 1, 2, 3, 4, 5].map((i) => `in /hold/${i}`));
    // one at a time: each arrived after the previous one was answered
    expect(events).toEqual([0, 1, 2, 3, 4, 5].flatMap((i) => [`in /hold/${i}`, `out /hold/${i}`]));
  });

  test("a client that disconnects while queued leaves the queue: the next one gets the slot, the backend never sees it", async () => {
    const { b, release } = queueBackend();
    const l = latch(simpleConfig({ servers: [{ id: "s1", port: b.port, extra: "maxconn = 1" }] }));
    const holder = await client(l.port);
    holder.write(GET("/hold/0"));
    await until(() => b.requests.length === 1);
    const gone = await client(l.port);
    gone.write(GET("/hold/gone"));
    await until(() => app().queue.length === 1);
    const next = await client(l.port);
    next.write(GET("/hold/next"));
    await until(() => app().queue.length === 2);
    (gone as unknown as { sock: Socket }).sock.terminate(); // the client is gone (reset)
    await until(() => app().queue.length === 1, 2000, "the gone client out of the queue");
    await release("/hold/0");
    expect((await holder.response()).status).toBe(200);
    await release("/hold/next");
    expect((await next.response()).body.toString()).toBe("done /hold/next");
    expect(b.requests.map((r) => r.target)).toEqual(["/hold/0", "/hold/next"]);
  });

  test("two servers at maxconn: the queue drains into whichever frees first; no request fails", async () => {
    const { b: b1 } = queueBackend(150);
    const { b: b2 } = queueBackend(150);
    const l = latch(
      simpleConfig({
        servers: [
          { id: "s1", port: b1.port, extra: "maxconn = 2" },
          { id: "s2", port: b2.port, extra: "maxconn = 2" },
        ],
      }),
    );
    const outcomes: Outcome[] = await runLoad({ port: l.port, ms: 800, clients: 10, keepAlive: () => true });
    expect(failures(outcomes)).toEqual([]);
    expect(outcomes.length).toBeGreaterThan(20);
    expect(b1.requests.length + b2.requests.length).toBe(outcomes.length);
    expect(app().servers.map((s) => s.state.active)).toEqual([0, 0]);
  });
});
