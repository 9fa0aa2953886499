// Persistence modes other than insert (SPEC §4 2-7), over real sockets: a real Latch in front
// of recording backends that behave like the applications the modes were made for (PHP
// sessions, Tomcat jvmRoute, an Engine.IO server), with assertions on what the client and
// each backend received.
//
//   prefix   HAProxy `cookie PHPSESSID prefix`
//   rewrite  HAProxy `cookie SRV rewrite`
//   learn    HAProxy `appsession PHPSESSID len 32 timeout 30m request-learn`, Pound COOKIE
//   route    Apache `stickysession=JSESSIONID|jsessionid` with BalancerMember route=
//   source   Pound IP session, HAProxy `stick on src`
//   header   a request header (X-Session-ID), also learned from the response
//   param    a URL parameter (Engine.IO `sid`), learned from the cookie the backend sets

import { afterEach, describe, expect, test } from "bun:test";
import { startLatch, simpleConfig, type Running } from "../helpers/latch.ts";
import { recordingBackend, request, RawClient, type RawResponse } from "../helpers/raw.ts";
import { clock } from "../../src/core/clock.ts";
import type { CompiledServer, TablePersist } from "../../src/core/types.ts";

type Backend = ReturnType<typeof recordingBackend>;
type Req = { head: string; body: Buffer; conn: number };
/** An application: answers one request for server `id`. */
type App = (id: string, req: Req) => string;

let running: Running | null = null;
let backends: Backend[] = [];

afterEach(async () => {
  await running?.stop();
  running = null;
  backends.forEach((b) => b.stop());
  backends = [];
});

function setup(o: { persist: string; ids?: string[]; app?: App; backendExtra?: string; serverExtra?: string[] }): number {
  const ids = o.ids ?? ["ap01", "ap02"];
  backends = ids.map((id) => recordingBackend(id, o.app === undefined ? undefined : (req) => o.app!(id, req)));
  running = startLatch(
    simpleConfig({
      servers: backends.map((b, i) => ({ id: ids[i]!, port: b.port, extra: o.serverExtra?.[i] })),
      persist: o.persist,
      backendExtra: o.backendExtra,
    }),
  );
  return running.port;
}

const backendCfg = () => running!.proxy.config.backends.get("app")!;
const table = () => (backendCfg().persist as TablePersist).table;
const servers = (): readonly CompiledServer[] => backendCfg().servers;

/** A 200 response naming the server, with extra header lines. */
function reply(id: string, headers: string[] = [], body = id): string {
  return `HTTP/1.1 200 OK\r\nX-Server: ${id}\r\n${headers.map((h) => `${h}\r\n`).join("")}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

/** The value of cookie `name` in a request head, or undefined. */
function cookieIn(head: string, name: string): string | undefined {
  for (const line of head.split("\r\n")) {
    if (!/^cookie:/i.test(line)) continue;
    for (const pair of line.slice(7).split(";")) {
      const p = pair.trim();
      if (p.startsWith(`${name}=`)) return p.slice(name.length + 1);
    }
  }
  return undefined;
}

function headerIn(head: string, name: string): string | undefined {
  const line = head.split("\r\n").find((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`));
  return line === undefined ? undefined : line.slice(name.length + 1).trim();
}

const cookieLines = (head: string) => head.split("\r\n").filter((l) => /^cookie:/i.test(l));
const requestLine = (head: string) => head.split("\r\n")[0];
const lastHead = (i: number) => backends[i]!.requests.at(-1)!.head;
const served = (r: RawResponse) => r.get("x-server");

function get(port: number, o: { path?: string; cookie?: string; headers?: string[] } = {}): Promise<RawResponse> {
  const lines = [`GET ${o.path ?? "/page"} HTTP/1.1`, "Host: shop.example"];
  if (o.cookie !== undefined) lines.push(`Cookie: ${o.cookie}`);
  lines.push(...(o.headers ?? []));
  return request(port, `${lines.join("\r\n")}\r\n\r\n`);
}

/** Total requests the backends received. */
const received = () => backends.reduce((n, b) => n + b.requests.length, 0);

/**
 * Session tables count whole seconds of clock.sec (refreshed every 100 ms). A check that an
 * entry is still alive right after it was learned must not straddle a second boundary when
 * the timeout is "1s": start such a sequence early in a second.
 */
async function earlyInSecond(): Promise<void> {
  for (;;) {
    const ms = Date.now() % 1000;
    if (ms >= 150 && ms < 400) return;
    await Bun.sleep(ms < 150 ? 150 - ms : 1150 - ms);
  }
}

// ---------------------------------------------------------------------------------------------
// A PHP-like application: issues PHPSESSID when the request carries none it knows.

function phpApp(opts: { extraCookies?: string[]; issue?: (id: string, n: number) => string; strict?: boolean } = {}): App {
  const known = new Map<string, Set<string>>();
  const counts = new Map<string, number>();
  return (id, req) => {
    const mine = known.get(id) ?? new Set<string>();
    known.set(id, mine);
    const sent = cookieIn(req.head, "PHPSESSID");
    // PHP with session.use_strict_mode: an id this server never issued starts a new session
    if (sent !== undefined && (!opts.strict || mine.has(sent))) return reply(id);
    const n = (counts.get(id) ?? 0) + 1;
    counts.set(id, n);
    const sid = opts.issue?.(id, n) ?? `${id}-sess-${n}`;
    mine.add(sid);
    return reply(id, [`Set-Cookie: PHPSESSID=${sid}; Path=/`, ...(opts.extraCookies ?? [])]);
  };
}

// ---------------------------------------------------------------------------------------------

describe("prefix (HAProxy cookie PHPSESSID prefix)", () => {
  const PREFIX = `mode = "prefix"\ncookie = "PHPSESSID"`;

  test("the backend's PHPSESSID=xyz123 reaches the client as PHPSESSID=ap01~xyz123; other cookies untouched", async () => {
    const port = setup({
      persist: PREFIX,
      app: phpApp({
        issue: (id) => (id === "ap01" ? "xyz123" : "abc789"),
        extraCookies: ["Set-Cookie: theme=dark; Path=/", "Set-Cookie: PHPSESSID2=keep; Path=/", "Set-Cookie: XPHPSESSID=keep2"],
      }),
    });
    const r = await get(port);
    expect(served(r)).toBe("ap01");
    expect(r.head).toContain("\r\nSet-Cookie: PHPSESSID=ap01~xyz123; Path=/\r\n");
    expect(r.all("set-cookie")).toEqual(["PHPSESSID=ap01~xyz123; Path=/", "theme=dark; Path=/", "PHPSESSID2=keep; Path=/", "XPHPSESSID=keep2"]);
    const r2 = await get(port);
    expect(served(r2)).toBe("ap02");
    expect(r2.all("set-cookie")[0]).toBe("PHPSESSID=ap02~abc789; Path=/");
  });

  test("the request's ap01~ routes to ap01 whatever roundrobin says, and the backend sees its own value", async () => {
    const port = setup({ persist: PREFIX, app: phpApp() });
    const rr: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await get(port, { cookie: "a=1; PHPSESSID=ap01~xyz123; b=2" });
      expect(served(r)).toBe("ap01");
      expect(r.get("set-cookie")).toBeUndefined(); // the application knows the session
      expect(cookieLines(lastHead(0))).toEqual(["Cookie: a=1; PHPSESSID=xyz123; b=2"]);
      rr.push(served(await get(port))!); // a new client in between moves roundrobin on
    }
    expect(rr).toEqual(["ap01", "ap02", "ap01", "ap02"]);
    for (let i = 0; i < 3; i++) {
      expect(served(await get(port, { cookie: "PHPSESSID=ap02~xyz123" }))).toBe("ap02");
      expect(cookieLines(lastHead(1))).toEqual(["Cookie: PHPSESSID=xyz123"]);
    }
    // the cookie in a second Cookie header line, others on both lines untouched
    const r = await request(port, "GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: c=3;PHPSESSID=ap02~q9;d=4\r\n\r\n");
    expect(served(r)).toBe("ap02");
    expect(cookieLines(lastHead(1))).toEqual(["Cookie: a=1", "Cookie: c=3;PHPSESSID=q9;d=4"]);
  });

  test("as HAProxy: an unknown prefix is balanced and still stripped; a value without ~ passes untouched", async () => {
    const port = setup({ persist: PREFIX, app: phpApp() });
    for (const [value, seenByBackend] of [
      ["plainvalue", "plainvalue"],
      ["ap09~xyz123", "xyz123"],
      ["~xyz123", "xyz123"],
      ["AP01~xyz123", "xyz123"],
    ]) {
      const seen: string[] = [];
      for (let i = 0; i < 4; i++) {
        const r = await get(port, { cookie: `a=1; PHPSESSID=${value}` });
        seen.push(served(r)!);
        const i0 = served(r) === "ap01" ? 0 : 1;
        expect(cookieLines(lastHead(i0))).toEqual([`Cookie: a=1; PHPSESSID=${seenByBackend}`]);
      }
      expect(seen.sort()).toEqual(["ap01", "ap01", "ap02", "ap02"]);
    }
  });

  test("as HAProxy: a value without ~ equal to a server's value routes there", async () => {
    const port = setup({ persist: PREFIX, app: phpApp() });
    for (let i = 0; i < 3; i++) expect(served(await get(port, { cookie: "PHPSESSID=ap02" }))).toBe("ap02");
  });

  test("persisted server down: redispatched, and the new server's Set-Cookie gets the new prefix", async () => {
    const port = setup({ persist: PREFIX, app: phpApp({ strict: true }) });
    servers()[0]!.state.up = false;
    const r = await get(port, { cookie: "PHPSESSID=ap01~xyz123; b=2" });
    expect(served(r)).toBe("ap02");
    expect(backends[0]!.requests.length).toBe(0);
    expect(cookieLines(lastHead(1))).toEqual(["Cookie: PHPSESSID=xyz123; b=2"]);
    // ap02 never issued xyz123: a new session, prefixed with ap02
    expect(r.all("set-cookie")).toEqual(["PHPSESSID=ap02~ap02-sess-1; Path=/"]);
    const again = await get(port, { cookie: "PHPSESSID=ap02~ap02-sess-1; b=2" });
    expect(served(again)).toBe("ap02");
    expect(again.get("set-cookie")).toBeUndefined();
    expect(cookieLines(lastHead(1))).toEqual(["Cookie: PHPSESSID=ap02-sess-1; b=2"]);
  });

  test('failover = "strict": persisted server down -> 503, nothing reaches a backend', async () => {
    const port = setup({ persist: PREFIX, app: phpApp(), backendExtra: 'failover = "strict"' });
    servers()[0]!.state.up = false;
    const r = await get(port, { cookie: "PHPSESSID=ap01~xyz123" });
    expect(r.status).toBe(503);
    expect(received()).toBe(0);
    // a new client still gets a server
    expect(served(await get(port))).toBe("ap02");
  });
});

describe("rewrite (HAProxy cookie SRV rewrite)", () => {
  const REWRITE = `mode = "rewrite"\ncookie = "SRV"`;
  const app: App = (id, req) =>
    cookieIn(req.head, "SRV") !== undefined
      ? reply(id)
      : reply(id, ["Set-Cookie: SRV=anything; Path=/", "Set-Cookie: PHPSESSID=abc; Path=/", "Set-Cookie: SRVX=1"]);

  test("the backend's SRV=anything becomes SRV=<server that answered>; other cookies untouched", async () => {
    const port = setup({ persist: REWRITE, app });
    const r1 = await get(port);
    expect(served(r1)).toBe("ap01");
    expect(r1.head).toContain("\r\nSet-Cookie: SRV=ap01; Path=/\r\n");
    expect(r1.all("set-cookie")).toEqual(["SRV=ap01; Path=/", "PHPSESSID=abc; Path=/", "SRVX=1"]);
    const r2 = await get(port);
    expect(served(r2)).toBe("ap02");
    expect(r2.all("set-cookie")).toEqual(["SRV=ap02; Path=/", "PHPSESSID=abc; Path=/", "SRVX=1"]);
  });

  test("a value without attributes is rewritten too", async () => {
    const port = setup({ persist: REWRITE, app: (id) => reply(id, ["Set-Cookie: SRV=x"]) });
    expect((await get(port)).all("set-cookie")).toEqual(["SRV=ap01"]);
  });

  test("the request's SRV=ap02 routes there whatever roundrobin says; unknown values are balanced", async () => {
    const port = setup({ persist: REWRITE, app });
    const rr: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await get(port, { cookie: "a=1; SRV=ap02" });
      expect(served(r)).toBe("ap02");
      expect(cookieLines(lastHead(1))).toEqual(["Cookie: a=1; SRV=ap02"]); // not indirect: the backend sees it
      expect(r.get("set-cookie")).toBeUndefined();
      rr.push(served(await get(port))!);
    }
    expect(rr).toEqual(["ap01", "ap02", "ap01", "ap02"]);
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) seen.add(served(await get(port, { cookie: "SRV=anything" }))!);
    expect(seen.size).toBe(2);
  });
});

describe("learn (HAProxy appsession, Pound COOKIE)", () => {
  const LEARN = `mode = "learn"\ncookie = "PHPSESSID"`;

  test("the first response binds: the very next request with that cookie goes to the same server", async () => {
    const port = setup({ persist: LEARN, app: phpApp(), ids: ["ap01", "ap02", "ap03"] });
    const first = await get(port);
    expect(served(first)).toBe("ap01");
    // learn does not touch the application's cookie
    expect(first.head).toContain("\r\nSet-Cookie: PHPSESSID=ap01-sess-1; Path=/\r\n");
    for (let i = 0; i < 4; i++) {
      const r = await get(port, { cookie: "lang=ja; PHPSESSID=ap01-sess-1" });
      expect(served(r)).toBe("ap01");
      expect(r.get("set-cookie")).toBeUndefined();
      expect(cookieLines(lastHead(0))).toEqual(["Cookie: lang=ja; PHPSESSID=ap01-sess-1"]);
    }
    // roundrobin was at ap02 all along: the persisted requests did not consume it
    expect(served(await get(port))).toBe("ap02");
    expect(served(await get(port))).toBe("ap03");
    for (const [sid, id] of [["ap01-sess-1", "ap01"], ["ap02-sess-1", "ap02"], ["ap03-sess-1", "ap03"]]) {
      expect(served(await get(port, { cookie: `PHPSESSID=${sid}` }))).toBe(id);
    }
    expect(table().stats).toMatchObject({ size: 3, inserts: 3, rebinds: 0 });
  });

  test("a re-issued value re-binds: the new value routes to the server that set it (Pound)", async () => {
    let expire = false;
    const port = setup({
      persist: LEARN,
      app: (id, req) => {
        const sent = cookieIn(req.head, "PHPSESSID");
        if (sent === undefined) return reply(id, ["Set-Cookie: PHPSESSID=old-A; Path=/"]);
        if (expire && sent === "old-A") return reply(id, ["Set-Cookie: PHPSESSID=new-B; Path=/"]); // session expired
        return reply(id);
      },
    });
    expect(served(await get(port))).toBe("ap01");
    expect(served(await get(port, { cookie: "PHPSESSID=old-A" }))).toBe("ap01");
    expire = true;
    const r = await get(port, { cookie: "PHPSESSID=old-A" });
    expect(served(r)).toBe("ap01");
    expect(r.all("set-cookie")).toEqual(["PHPSESSID=new-B; Path=/"]);
    // request_learn is off: only the response can have bound new-B; roundrobin would say ap02
    for (let i = 0; i < 3; i++) expect(served(await get(port, { cookie: "PHPSESSID=new-B" }))).toBe("ap01");
    expect(table().stats.inserts).toBe(2);
  });

  test('a quoted value (PHPSESSID="q-123", RFC 6265) is the same session set and sent back', async () => {
    const port = setup({
      persist: LEARN,
      app: (id, req) => (cookieIn(req.head, "PHPSESSID") === undefined ? reply(id, ['Set-Cookie: PHPSESSID="q-123"; Path=/']) : reply(id)),
    });
    const r = await get(port);
    expect(served(r)).toBe("ap01");
    expect(r.all("set-cookie")).toEqual(['PHPSESSID="q-123"; Path=/']);
    for (let i = 0; i < 3; i++) {
      expect(served(await get(port, { cookie: 'PHPSESSID="q-123"' }))).toBe("ap01");
      expect(cookieLines(lastHead(0)).at(-1)).toBe('Cookie: PHPSESSID="q-123"');
    }
  });

  test("request_learn = false: a cookie the table never saw is balanced and not learned", async () => {
    const port = setup({ persist: LEARN, app: phpApp() });
    const seen: string[] = [];
    for (let i = 0; i < 4; i++) seen.push(served(await get(port, { cookie: "PHPSESSID=never-seen" }))!);
    expect(seen).toEqual(["ap01", "ap02", "ap01", "ap02"]);
    expect(table().stats.size).toBe(0);
  });

  test("request_learn = true: a cookie the table never saw is learned from the request (HAProxy request-learn)", async () => {
    const port = setup({ persist: `${LEARN}\nrequest_learn = true`, app: phpApp() });
    expect(served(await get(port, { cookie: "PHPSESSID=from-before-restart" }))).toBe("ap01");
    for (let i = 0; i < 4; i++) {
      expect(served(await get(port, { cookie: "PHPSESSID=from-before-restart" }))).toBe("ap01");
    }
    expect(served(await get(port))).toBe("ap02"); // roundrobin moved once only
    expect(table().stats.size).toBe(2); // the request's key, and ap02's new session
  });

  test("the key is the first `len` bytes of the value", async () => {
    const port = setup({
      persist: `${LEARN}\nlen = 8`,
      app: (id, req) => (cookieIn(req.head, "PHPSESSID") === undefined ? reply(id, ["Set-Cookie: PHPSESSID=abcdefgh-first; Path=/"]) : reply(id)),
    });
    expect(served(await get(port))).toBe("ap01");
    for (let i = 0; i < 3; i++) {
      expect(served(await get(port, { cookie: "PHPSESSID=abcdefgh-other-tail" }))).toBe("ap01");
      expect(cookieLines(lastHead(0))).toEqual(["Cookie: PHPSESSID=abcdefgh-other-tail"]); // the backend sees it whole
    }
    // differs within the first 8 bytes: another session (unknown: balanced)
    const seen: string[] = [];
    for (let i = 0; i < 2; i++) seen.push(served(await get(port, { cookie: "PHPSESSID=abcdefgX-first" }))!);
    expect(seen).toEqual(["ap02", "ap01"]);
    const keys = [...table().entries()].map(([k, s]) => [Buffer.from(k).toString("latin1"), s]);
    expect(keys).toEqual([["abcdefgh", 0]]);
  });

  test("the key is also read from a ;PHPSESSID= path parameter and a ?PHPSESSID= query parameter", async () => {
    const port = setup({ persist: `${LEARN}\nurl_param = "PHPSESSID"`, app: phpApp() });
    expect(served(await get(port))).toBe("ap01"); // ap01 issues ap01-sess-1
    const paths = [
      "/cart;PHPSESSID=ap01-sess-1",
      "/cart;PHPSESSID=ap01-sess-1?item=3",
      "/cart;PHPSESSID=ap01-sess-1/more",
      "/cart?PHPSESSID=ap01-sess-1",
      "/cart?item=3&PHPSESSID=ap01-sess-1",
      "/cart?PHPSESSID=ap01-sess-1&item=3",
    ];
    for (const path of paths) {
      const r = await get(port, { path });
      expect(served(r)).toBe("ap01");
      expect(requestLine(lastHead(0))).toBe(`GET ${path} HTTP/1.1`);
    }
    // the same value under another parameter name is no key
    expect(served(await get(port, { path: "/cart?XPHPSESSID=ap01-sess-1" }))).toBe("ap02");
    expect(served(await get(port))).toBe("ap01");
  });

  test('idle timeout: after `timeout = "1s"` idle the cookie is balanced again', async () => {
    const port = setup({ persist: `${LEARN}\ntimeout = "1s"`, app: phpApp() });
    await earlyInSecond();
    expect(served(await get(port))).toBe("ap01");
    expect(served(await get(port, { cookie: "PHPSESSID=ap01-sess-1" }))).toBe("ap01");
    await Bun.sleep(2200);
    // roundrobin's next is ap02; without expiry the table would still say ap01
    expect(served(await get(port, { cookie: "PHPSESSID=ap01-sess-1" }))).toBe("ap02");
    expect(table().stats.expirations).toBe(1);
    // not re-learned (request_learn = false): balanced again
    expect(served(await get(port, { cookie: "PHPSESSID=ap01-sess-1" }))).toBe("ap01");
    expect(table().stats.size).toBe(0);
  });

  test("fixed capacity: the stalest entries are evicted and counted; size never exceeds capacity", async () => {
    const port = setup({ persist: `${LEARN}\ncapacity = 4`, app: phpApp() });
    const issued: [string, string][] = [];
    for (let i = 0; i < 10; i++) {
      const r = await get(port);
      issued.push([/PHPSESSID=([^;]+)/.exec(r.get("set-cookie")!)![1]!, served(r)!]);
      expect(table().stats.size).toBeLessThanOrEqual(4);
    }
    expect(table().stats).toMatchObject({ size: 4, inserts: 10, evictions: 6 });
    // the newest sessions are still bound: each goes to its server though roundrobin alternates
    for (const [sid, id] of issued.slice(-2)) {
      for (let i = 0; i < 2; i++) expect(served(await get(port, { cookie: `PHPSESSID=${sid}` }))).toBe(id);
    }
  });

  test("the same value set by two servers binds their clients together, counted in stats.rebinds (Pound's warning)", async () => {
    // a home-made session cookie that is not random: both servers hand out "hoge"
    const port = setup({
      persist: LEARN,
      app: (id, req) => (cookieIn(req.head, "PHPSESSID") === undefined ? reply(id, ["Set-Cookie: PHPSESSID=hoge; Path=/"]) : reply(id)),
    });
    expect(served(await get(port))).toBe("ap01"); // client 1
    expect(served(await get(port, { cookie: "PHPSESSID=hoge" }))).toBe("ap01");
    expect(table().stats.rebinds).toBe(0);
    expect(served(await get(port))).toBe("ap02"); // client 2 gets "hoge" from ap02
    expect(table().stats.rebinds).toBe(1);
    // client 1 has moved to ap02
    expect(served(await get(port, { cookie: "PHPSESSID=hoge" }))).toBe("ap02");
  });

  test("persisted server down: redispatched and re-bound to the new server", async () => {
    const port = setup({ persist: LEARN, app: phpApp() });
    expect(served(await get(port))).toBe("ap01");
    servers()[0]!.state.up = false;
    expect(served(await get(port, { cookie: "PHPSESSID=ap01-sess-1" }))).toBe("ap02");
    servers()[0]!.state.up = true;
    // the session now lives on ap02
    for (let i = 0; i < 3; i++) expect(served(await get(port, { cookie: "PHPSESSID=ap01-sess-1" }))).toBe("ap02");
    expect(table().stats.rebinds).toBe(1);
  });
});

describe("route (Apache stickysession=JSESSIONID|jsessionid, Tomcat jvmRoute)", () => {
  const ROUTE = `mode = "route"\ncookie = "JSESSIONID"\nurl_param = "jsessionid"`;
  const setupRoute = (backendExtra?: string) =>
    setup({ persist: ROUTE, serverExtra: ['route = "node1"', 'route = "node2"'], backendExtra });

  test("JSESSIONID=abc.node2 goes to node2 whatever roundrobin says; the backend sees the cookie as sent", async () => {
    const port = setupRoute();
    const rr: string[] = [];
    for (let i = 0; i < 4; i++) {
      expect(served(await get(port, { cookie: "a=1; JSESSIONID=ABC123DEF.node2" }))).toBe("ap02");
      expect(cookieLines(lastHead(1))).toEqual(["Cookie: a=1; JSESSIONID=ABC123DEF.node2"]);
      expect(served(await get(port, { cookie: "JSESSIONID=ABC123DEF.node1" }))).toBe("ap01");
      rr.push(served(await get(port))!);
    }
    expect(rr).toEqual(["ap01", "ap02", "ap01", "ap02"]);
  });

  test(";jsessionid= path parameter and ?jsessionid= query parameter", async () => {
    const port = setupRoute();
    const cases: [string, number][] = [
      ["/app/page;jsessionid=abc.node2", 1],
      ["/app/page;jsessionid=abc.node2?x=1", 1],
      ["/app/page?jsessionid=abc.node2", 1],
      ["/app/page?x=1&jsessionid=abc.node2", 1],
      ["/app/page;jsessionid=abc.node1", 0],
      ["/app/page?jsessionid=abc.node1&x=1", 0],
    ];
    for (let round = 0; round < 2; round++) {
      for (const [path, idx] of cases) {
        expect(served(await get(port, { path }))).toBe(idx === 0 ? "ap01" : "ap02");
        expect(requestLine(lastHead(idx))).toBe(`GET ${path} HTTP/1.1`);
      }
    }
  });

  test("the URL parameter wins over the cookie (Apache find_session_route looks at the URL first)", async () => {
    const port = setupRoute();
    for (let i = 0; i < 3; i++) {
      expect(served(await get(port, { path: "/app;jsessionid=abc.node2", cookie: "JSESSIONID=abc.node1" }))).toBe("ap02");
      expect(served(await get(port, { path: "/app?jsessionid=abc.node1", cookie: "JSESSIONID=abc.node2" }))).toBe("ap01");
    }
  });

  test("a value with several dots: the route is the part after the last dot", async () => {
    const port = setupRoute();
    for (let i = 0; i < 3; i++) {
      expect(served(await get(port, { cookie: "JSESSIONID=abc.def.node2" }))).toBe("ap02");
      expect(served(await get(port, { cookie: "JSESSIONID=a.b.c.node1" }))).toBe("ap01");
      expect(served(await get(port, { path: "/x;jsessionid=v.1.node2" }))).toBe("ap02");
    }
  });

  test("an unknown route or a value without a route is balanced", async () => {
    const port = setupRoute();
    for (const cookie of ["JSESSIONID=abc.node9", "JSESSIONID=abc", "JSESSIONID=abc.", "JSESSIONID=abc.NODE2"]) {
      const seen: string[] = [];
      for (let i = 0; i < 4; i++) seen.push(served(await get(port, { cookie }))!);
      expect(seen.sort()).toEqual(["ap01", "ap01", "ap02", "ap02"]);
    }
  });

  test("route server down: redispatched by default, 503 with failover = strict (Apache nofailover=On)", async () => {
    let port = setupRoute();
    servers()[1]!.state.up = false;
    expect(served(await get(port, { cookie: "JSESSIONID=abc.node2" }))).toBe("ap01");
    await running!.stop();
    backends.forEach((b) => b.stop());

    port = setupRoute('failover = "strict"');
    servers()[1]!.state.up = false;
    expect((await get(port, { cookie: "JSESSIONID=abc.node2" })).status).toBe(503);
    expect((await get(port, { path: "/p;jsessionid=abc.node2" })).status).toBe(503);
    expect(received()).toBe(0);
    expect(served(await get(port, { cookie: "JSESSIONID=abc.node1" }))).toBe("ap01");
  });
});

describe("source (Pound IP session, HAProxy stick on src)", () => {
  test("the client address binds to the server first chosen, even with roundrobin", async () => {
    const port = setup({ persist: `mode = "source"`, ids: ["ap01", "ap02", "ap03"] });
    const seen = new Set<string>();
    for (let i = 0; i < 8; i++) seen.add(served(await get(port))!);
    expect([...seen]).toEqual(["ap01"]);
    expect(table().stats.size).toBe(1);
    // a keep-alive connection too
    const c = await RawClient.connect(port);
    for (let i = 0; i < 3; i++) {
      c.write("GET /k HTTP/1.1\r\nHost: x\r\n\r\n");
      expect(served(await c.response())).toBe("ap01");
    }
    c.close();
    expect(table().stats.size).toBe(1);
  });

  test("idle timeout expiry re-balances", async () => {
    const port = setup({ persist: `mode = "source"\ntimeout = "1s"` });
    await earlyInSecond();
    expect(served(await get(port))).toBe("ap01");
    expect(served(await get(port))).toBe("ap01");
    await Bun.sleep(2200);
    expect(served(await get(port))).toBe("ap02"); // roundrobin's next
    expect(served(await get(port))).toBe("ap02"); // and bound there now
    expect(table().stats).toMatchObject({ size: 1, expirations: 1 });
  });
});

describe("header (X-Session-ID)", () => {
  const HEADER = `mode = "header"\nheader = "X-Session-ID"`;

  test("learned from the request: the second request with the same header goes to the same server", async () => {
    const port = setup({ persist: HEADER });
    expect(served(await get(port, { headers: ["X-Session-ID: ws-1"] }))).toBe("ap01");
    for (let i = 0; i < 4; i++) {
      expect(served(await get(port, { headers: ["X-Session-ID: ws-1"] }))).toBe("ap01");
      expect(headerIn(lastHead(0), "X-Session-ID")).toBe("ws-1");
    }
    expect(served(await get(port, { headers: ["x-session-id: ws-2"] }))).toBe("ap02");
    expect(served(await get(port, { headers: ["X-SESSION-ID: ws-2"] }))).toBe("ap02");
    expect(served(await get(port))).toBe("ap01");
    expect(table().stats.size).toBe(2);
  });

  test("learned from a response header the backend sets, before any request carried it", async () => {
    const port = setup({
      persist: HEADER,
      app: (id, req) => (id === "ap02" && headerIn(req.head, "X-Session-ID") === undefined ? reply(id, ["X-Session-ID: s-42"]) : reply(id)),
    });
    expect(served(await get(port))).toBe("ap01");
    const r = await get(port);
    expect(served(r)).toBe("ap02");
    expect(r.head).toContain("\r\nX-Session-ID: s-42\r\n");
    // roundrobin would say ap01 now
    for (let i = 0; i < 3; i++) expect(served(await get(port, { headers: ["X-Session-ID: s-42"] }))).toBe("ap02");
    expect(served(await get(port))).toBe("ap01");
  });
});

describe("param + an Engine.IO / Socket.IO client", () => {
  const PARAM = `mode = "param"\nurl_param = "sid"\ncookie = "io"`;
  const EIO = "/socket.io/?EIO=4";

  /** Just enough of an Engine.IO v4 server: handshake, polling GET/POST, the websocket probe. */
  function engineIo(issued: Map<string, string>): App {
    const sessions = new Map<string, Set<string>>();
    return (id, req) => {
      const mine = sessions.get(id) ?? new Set<string>();
      sessions.set(id, mine);
      const target = requestLine(req.head).split(" ")[1]!;
      const url = new URL(target, "http://x");
      const sid = url.searchParams.get("sid");
      if (sid === null) {
        const fresh = Buffer.from(crypto.getRandomValues(new Uint8Array(15))).toString("base64url");
        mine.add(fresh);
        issued.set(fresh, id);
        const body = `0{"sid":"${fresh}","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`;
        return reply(id, ["Content-Type: text/plain; charset=UTF-8", `Set-Cookie: io=${fresh}; Path=/; HttpOnly; SameSite=Lax`], body);
      }
      if (!mine.has(sid)) {
        const body = `{"code":1,"message":"Session ID unknown"}`;
        return `HTTP/1.1 400 Bad Request\r\nX-Server: ${id}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
      }
      if (url.searchParams.get("transport") === "websocket") return reply(id, [], "ws");
      if (requestLine(req.head).startsWith("POST")) return reply(id, ["Content-Type: text/html"], "ok");
      return reply(id, ["Content-Type: text/plain; charset=UTF-8"], "6");
    };
  }

  async function client(port: number): Promise<{ sid: string; statuses: number[] }> {
    const statuses: number[] = [];
    const hs = await get(port, { path: `${EIO}&transport=polling&t=${Math.random().toString(36).slice(2, 9)}` });
    statuses.push(hs.status);
    const m = /^0(\{.*\})$/.exec(hs.body.toString("latin1"));
    expect(m).not.toBeNull();
    const sid = JSON.parse(m![1]!).sid as string;
    // the cookie reaches the client as the backend set it
    expect(hs.all("set-cookie")).toEqual([`io=${sid}; Path=/; HttpOnly; SameSite=Lax`]);
    const cookie = `io=${sid}`;
    // polling on one keep-alive connection, as the browser does
    const c = await RawClient.connect(port);
    const t = () => Math.random().toString(36).slice(2, 9);
    const post = "40";
    c.write(
      `POST ${EIO}&transport=polling&t=${t()}&sid=${sid} HTTP/1.1\r\nHost: shop.example\r\nContent-Type: text/plain;charset=UTF-8\r\nCookie: ${cookie}\r\nContent-Length: ${post.length}\r\n\r\n${post}`,
    );
    statuses.push((await c.response()).status);
    for (let i = 0; i < 3; i++) {
      c.write(`GET ${EIO}&transport=polling&t=${t()}&sid=${sid} HTTP/1.1\r\nHost: shop.example\r\nCookie: ${cookie}\r\n\r\n`);
      statuses.push((await c.response()).status);
      await Bun.sleep(Math.random() * 5); // let the clients interleave
    }
    c.close();
    // one more poll on its own connection, then the upgrade
    statuses.push((await get(port, { path: `${EIO}&transport=polling&t=${t()}&sid=${sid}`, cookie })).status);
    const ws = await request(
      port,
      `GET ${EIO}&transport=websocket&sid=${sid} HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: ${cookie}\r\n\r\n`,
    );
    statuses.push(ws.status);
    return { sid, statuses };
  }

  // 8 clients, not a multiple of 3: were the sid not learned from the handshake's cookie, the
  // first polls would be balanced onto other servers than the handshakes (and get a 400)
  test("every request of each client lands on the server that issued its sid (8 clients, 3 servers, concurrently)", async () => {
    const issued = new Map<string, string>();
    const port = setup({ persist: PARAM, ids: ["io1", "io2", "io3"], app: engineIo(issued) });
    const results = await Promise.all(Array.from({ length: 8 }, () => client(port)));
    for (const r of results) expect(r.statuses).toEqual([200, 200, 200, 200, 200, 200, 200]);
    // handshakes were balanced across the three servers
    const per = new Map<string, number>();
    for (const id of issued.values()) per.set(id, (per.get(id) ?? 0) + 1);
    expect([...per.entries()].sort()).toEqual([["io1", 3], ["io2", 3], ["io3", 2]]);
    // each request carrying a sid reached the server that issued it; the upgrade request too
    const bySid = new Map<string, { server: string; line: string }[]>();
    for (const b of backends) {
      const id = headerOfServer(b);
      for (const req of b.requests) {
        const line = requestLine(req.head);
        const sid = /[?&]sid=([^& ]+)/.exec(line)?.[1];
        if (sid === undefined) continue;
        bySid.set(sid, [...(bySid.get(sid) ?? []), { server: id, line }]);
      }
    }
    expect(bySid.size).toBe(8);
    for (const { sid } of results) {
      const reqs = bySid.get(sid)!;
      expect(reqs.length).toBe(6);
      expect(new Set(reqs.map((r) => r.server))).toEqual(new Set([issued.get(sid)!]));
      expect(reqs.some((r) => r.line.includes("transport=websocket"))).toBe(true);
    }
    expect(table().stats).toMatchObject({ size: 8, inserts: 8, rebinds: 0 });
  });

  // which server a recording backend is (its port identifies it in this test's setup)
  function headerOfServer(b: Backend): string {
    return servers().find((s) => s.port === b.port)!.id;
  }
});

describe("ignore_persist / force_persist with session tables", () => {
  const IGNORE = `\n[[backend.app.ignore_persist]]\nheader = "User-Agent"\ncontains = "ApacheBench"\n`;
  const AB = "User-Agent: ApacheBench/2.3";

  test("source: ignored requests neither create nor use the client's entry", async () => {
    const port = setup({ persist: `mode = "source"${IGNORE}` });
    const seen = new Set<string>();
    for (let i = 0; i < 20; i++) seen.add(served(await get(port, { headers: [AB] }))!);
    expect(seen.size).toBe(2); // balanced
    expect(table().stats.size).toBe(0);
    expect(served(await get(port, { headers: ["User-Agent: Mozilla/5.0"] }))).toBe("ap01");
    expect(table().stats.size).toBe(1);
    seen.clear();
    for (let i = 0; i < 4; i++) seen.add(served(await get(port, { headers: [AB] }))!);
    expect(seen.size).toBe(2); // the entry for 127.0.0.1 is not used either
    expect(table().stats.size).toBe(1);
  });

  test("header: 20 ignored requests with fresh keys create nothing, even when the backend echoes the key", async () => {
    // an application that answers with the session header (as a session-aware app does)
    const echo: App = (id, req) => {
      const sid = headerIn(req.head, "X-Session-ID");
      return reply(id, sid === undefined ? [] : [`X-Session-ID: ${sid}`]);
    };
    const port = setup({ persist: `mode = "header"\nheader = "X-Session-ID"${IGNORE}`, app: echo });
    for (let i = 0; i < 20; i++) await get(port, { headers: [AB, `X-Session-ID: ab-${i}`] });
    expect(table().stats.size).toBe(0);
    expect(served(await get(port, { headers: ["X-Session-ID: real-1"] }))).toBe("ap01");
    expect(table().stats.size).toBe(1);
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) seen.add(served(await get(port, { headers: [AB, "X-Session-ID: real-1"] }))!);
    expect(seen.size).toBe(2);
    expect(table().stats.size).toBe(1);
  });

  test("learn: the Set-Cookie answering an ignored request is not learned", async () => {
    const port = setup({ persist: `mode = "learn"\ncookie = "PHPSESSID"${IGNORE}`, app: phpApp() });
    for (let i = 0; i < 6; i++) expect((await get(port, { headers: [AB] })).get("set-cookie")).toStartWith("PHPSESSID=");
    expect(table().stats.size).toBe(0);
    const r = await get(port);
    expect(table().stats.size).toBe(1);
    const sid = /PHPSESSID=([^;]+)/.exec(r.get("set-cookie")!)![1]!;
    for (let i = 0; i < 3; i++) expect(served(await get(port, { cookie: `PHPSESSID=${sid}` }))).toBe(served(r));
  });

  test("force_persist: a matching request goes to its learned server even when it is down", async () => {
    const FORCE = `\n[[backend.app.force_persist]]\nheader = "X-Debug-Persist"\ncontains = "yes"\n`;
    const port = setup({ persist: `mode = "header"\nheader = "X-Session-ID"${FORCE}` });
    expect(served(await get(port, { headers: ["X-Session-ID: k1"] }))).toBe("ap01");
    servers()[0]!.state.up = false;
    for (let i = 0; i < 3; i++) {
      expect(served(await get(port, { headers: ["X-Session-ID: k1", "X-Debug-Persist: yes"] }))).toBe("ap01");
    }
    expect(table().stats.rebinds).toBe(0);
    // without the rule: redispatched (and re-bound)
    expect(served(await get(port, { headers: ["X-Session-ID: k1"] }))).toBe("ap02");
    expect(table().stats.rebinds).toBe(1);
  });
});

describe("drain", () => {
  const HEADER = `mode = "header"\nheader = "X-Session-ID"`;

  test("a server set to drain keeps its learned clients and gets no new ones", async () => {
    const port = setup({ persist: HEADER });
    expect(served(await get(port, { headers: ["X-Session-ID: a"] }))).toBe("ap01");
    expect(served(await get(port, { headers: ["X-Session-ID: b"] }))).toBe("ap02");
    servers()[1]!.state.admin = "drain";
    for (let i = 0; i < 4; i++) expect(served(await get(port, { headers: [`X-Session-ID: new-${i}`] }))).toBe("ap01");
    for (let i = 0; i < 3; i++) expect(served(await get(port, { headers: ["X-Session-ID: b"] }))).toBe("ap02");
    expect(served(await get(port))).toBe("ap01");
    expect(table().stats.rebinds).toBe(0);
  });

  test("drain = true in the config: an entry bound to it (e.g. restored from a snapshot) is honoured", async () => {
    const port = setup({ persist: HEADER, serverExtra: ["", "drain = true"] });
    table().storeString("restored", 1, clock.sec);
    for (let i = 0; i < 3; i++) expect(served(await get(port, { headers: ["X-Session-ID: restored"] }))).toBe("ap02");
    for (let i = 0; i < 4; i++) expect(served(await get(port, { headers: [`X-Session-ID: fresh-${i}`] }))).toBe("ap01");
    expect(served(await get(port, { headers: ["X-Session-ID: fresh-0"] }))).toBe("ap01");
  });
});
