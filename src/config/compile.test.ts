// compile: the rejections that need more than one key, and the snapshot the core reads.
import { describe, expect, test } from "bun:test";
import { createHmac } from "node:crypto";
import { buildRing } from "../core/balance.ts";
import type { PrefixPersist, RewritePersist, TablePersist } from "../core/types.ts";
import type { CompiledConfig, InsertPersist } from "../core/types.ts";
import { ConfigError, type ConfigIssue, loadConfigText } from "./index.ts";

const BASE = `#TOP
[global]
#GLOBAL

[[listen]]
name = "web"
bind = "127.0.0.1:8080"
#LISTEN

  [[listen.route]]
  backend = "app"
  #ROUTE

[backend.app]
#BACKEND

  [backend.app.persist]
  mode = "insert"
  cookie = "SRV"
  #PERSIST

  [[backend.app.server]]
  id = "ap01"
  address = "127.0.0.1:9001"
  #SERVER0

  [[backend.app.server]]
  id = "ap02"
  address = "127.0.0.1:9002"
  #SERVER1
`;

function configWith(parts: Record<string, string>, text = BASE): string {
  for (const [marker, lines] of Object.entries(parts)) text = text.replace(`#${marker}`, lines);
  return text;
}

function load(text: string): CompiledConfig {
  return loadConfigText(text, "t.toml", "/etc/latch");
}

function issuesOf(text: string): ConfigIssue[] {
  try {
    load(text);
  } catch (e) {
    if (e instanceof ConfigError) return [...e.issues];
    throw e;
  }
  throw new Error("expected a ConfigError");
}

function lineOf(text: string, needle: string, from = 0): number {
  const i = text.split("\n").findIndex((l, n) => n >= from && l.includes(needle));
  if (i === -1) throw new Error(`"${needle}" not in text`);
  return i + 1;
}

/** One issue, at the line of `needle` */
function expectOne(text: string, needle: string, path: string, message: string | RegExp): void {
  const issues = issuesOf(text);
  expect(issues).toHaveLength(1);
  expect(issues[0]!.path).toBe(path);
  expect(issues[0]!.line).toBe(lineOf(text, needle));
  if (typeof message === "string") expect(issues[0]!.message).toBe(message);
  else expect(issues[0]!.message).toMatch(message);
}

describe("features not available in this build are refused with their key and line", () => {
  test("shared (Redis) learned tables", () => {
    const text = configWith({ PERSIST: 'request_learn = true\nshared = "redis://127.0.0.1:6379"' }).replace('mode = "insert"', 'mode = "learn"');
    expectOne(text, "shared", "backend.app.persist.shared", "shared tables (Redis) are not available yet in this build");
  });

  test("[session.NAME] compiles (details in compile-session.test.ts)", () => {
    const text = `${BASE}
[session.main]
store = "cookie"
cookie = "session"
passphrases = ["current secret, long enough", "previous secret, long enough"]
max_age = "1h"
idle = "30m"
header = "X-Session"
update_header = "X-Replace-Session"
`;
    expect(load(text).sessions.get("main")?.name).toBe("main");
  });

  test("route session = gets the session's runtime; an unknown name is an error", () => {
    const text = `${configWith({ ROUTE: 'session = "main"' })}
[session.main]
passphrases = ["a passphrase of thirty characters"]
`;
    const r = load(text).listeners[0]!.routes[0]!;
    expect(r.session?.name).toBe("main");
    expect(r.session?.store).toBe("cookie");
    expectOne(configWith({ ROUTE: 'session = "nope"' }), 'session = "nope"', "listen[0].route[0].session", /no \[session.nope\]/);
  });

  test("route set_headers / remove_headers / websocket compile", () => {
    const text = configWith({
      ROUTE: 'set_headers = { "X-Session-ID" = "cookie:SESSIONID", "X-Env" = "prod" }\nremove_headers = ["X-Debug"]\nwebsocket = { origins = ["https://Example.com"], max_per_client = 20 }',
    });
    const r = load(text).listeners[0]!.routes[0]!;
    expect(r.headerRules.map((h) => [Buffer.from(h.nameLower).toString(), h.prefix && Buffer.from(h.prefix).toString(), h.literal && Buffer.from(h.literal).toString(), h.cookie && Buffer.from(h.cookie).toString()])).toEqual([
      ["x-session-id", "X-Session-ID: ", null, "SESSIONID"],
      ["x-env", "X-Env: ", "prod", null],
      ["x-debug", null, null, null],
    ]);
    expect(r.websocket).toEqual({ enabled: true, origins: ["https://example.com"], maxPerClient: 20 });
    expectOne(configWith({ ROUTE: 'set_headers = { "X-A" = "cookie:bad name" }' }), "set_headers", 'listen[0].route[0].set_headers.X-A', /after "cookie:" comes a cookie name/);
  });

});

describe("global.workers (several processes: see compile-workers.ts)", () => {
  test('a number, or "auto" = one per core', () => {
    expect(load(configWith({ GLOBAL: "workers = 4" })).workers).toBe(4);
    expect(load(configWith({ GLOBAL: 'workers = "auto"' })).workers).toBe(navigator.hardwareConcurrency);
  });

  test("modes that carry the server in the request work with any number of workers", () => {
    for (const mode of ['mode = "insert"', 'mode = "prefix"', 'mode = "rewrite"']) {
      expect(load(configWith({ GLOBAL: "workers = 2" }).replace('mode = "insert"', mode)).workers).toBe(2);
    }
  });

  test("learned-table modes work with workers > 1 (the tables are replicated between workers)", () => {
    const learn = configWith({ GLOBAL: "workers = 2", PERSIST: "request_learn = true" }).replace('mode = "insert"', 'mode = "learn"');
    expect(load(learn).workers).toBe(2);
    const source = configWith({ GLOBAL: 'workers = "auto"' }).replace('mode = "insert"\n  cookie = "SRV"', 'mode = "source"');
    expect(load(source).backends.get("app")!.persist!.mode).toBe("source");
    for (const mode of ["header", "param"] as const) {
      const text = configWith({ GLOBAL: "workers = 3" }).replace('mode = "insert"\n  cookie = "SRV"', `mode = "${mode}"\n  header = "X-Session"${mode === "param" ? '\n  url_param = "sid"' : ""}`);
      expect(load(text).backends.get("app")!.persist!.mode).toBe(mode);
    }
  });

  test("port 0 with workers > 1 is refused (each worker would get its own port)", () => {
    const text = configWith({ GLOBAL: "workers = 2" }).replace("127.0.0.1:8080", "127.0.0.1:0");
    expectOne(text, "127.0.0.1:0", "listen[0].bind", "port 0 with workers = 2: each worker would get a different free port; give the port");
  });
});

describe("references and duplicates", () => {
  test("a route to a backend that does not exist", () => {
    const text = configWith({ ROUTE: '[[listen.route]]\npath = "/x"\nbackend = "x"' });
    expectOne(text, 'backend = "x"', "listen[0].route[1].backend", 'no backend named "x"');
  });

  test("duplicate server ids", () => {
    const text = BASE.replace('id = "ap02"', 'id = "ap01"');
    // reported where the second one is written, once (not again as a duplicate cookie value)
    expect(issuesOf(text)).toEqual([
      { file: "t.toml", line: lineOf(text, 'id = "ap01"', lineOf(text, 'id = "ap01"')), path: "backend.app.server[1].id", message: 'duplicate server id "ap01" (also server[0])' },
    ]);
  });

  test("duplicate listener names", () => {
    const text = configWith({ LISTEN: "" }).replace("[backend.app]", '[[listen]]\nname = "web"\nbind = ":8081"\nredirect = "https"\n\n[backend.app]');
    const issues = issuesOf(text);
    expect(issues).toEqual([{ file: "t.toml", line: lineOf(text, 'name = "web"', 6), path: "listen[1].name", message: 'duplicate listener name "web" (also listen[0])' }]);
  });

  test("two listeners on one address, and admin on a listener's address", () => {
    const text = `[admin]\nbind = "127.0.0.1:8080"\n${BASE}`.replace("[backend.app]", '[[listen]]\nname = "b"\nbind = "127.0.0.1:8080"\nredirect = "https"\n\n[backend.app]');
    expect(issuesOf(text).map((i) => [i.path, i.message])).toEqual([
      ["admin.bind", "port 8080 on 127.0.0.1 is already taken by listen[0] (127.0.0.1:8080)"],
      ["listen[1].bind", "port 8080 on 127.0.0.1 is already taken by listen[0] (127.0.0.1:8080)"],
    ]);
  });

  test("a wildcard bind takes the port on every address; other ports and port 0 are fine", () => {
    const second = (bind: string) =>
      BASE.replace("[backend.app]", `[[listen]]\nname = "b"\nbind = "${bind}"\nredirect = "https"\n\n[backend.app]`);
    expect(issuesOf(second(":8080")).map((i) => [i.path, i.message])).toEqual([
      ["listen[1].bind", "port 8080 on 0.0.0.0 is already taken by listen[0] (127.0.0.1:8080)"],
    ]);
    expect(() => load(second("127.0.0.2:8081"))).not.toThrow();
    expect(() => load(second("127.0.0.2:8080"))).not.toThrow();
    expect(() => load(second("127.0.0.1:0").replace('"127.0.0.1:8080"', '"127.0.0.1:0"'))).not.toThrow();
  });

  test("duplicate cookie values", () => {
    const text = configWith({ SERVER1: 'cookie = "ap01"' });
    expectOne(text, 'cookie = "ap01"', "backend.app.server[1].cookie", 'cookie value "ap01" is also used by server "ap01": persistence could not tell them apart');
  });

  test("a cookie value that cannot be written in a cookie", () => {
    const text = configWith({ SERVER1: 'cookie = "a|b"' });
    expectOne(text, 'cookie = "a|b"', "backend.app.server[1].cookie", /cannot be a cookie value/);
  });

  test("two routes with the same host and path", () => {
    const text = configWith({ ROUTE: '[[listen.route]]\npath = "/"\nbackend = "app"' });
    const issues = issuesOf(text);
    expect(issues).toEqual([
      { file: "t.toml", line: lineOf(text, "[[listen.route]]", 10), path: "listen[0].route[1]", message: "same host and path as route[0]; this route could never match" },
    ]);
    expect(issues[0]!.line).toBe(12);
  });
});

describe("addresses, hosts and listeners", () => {
  test.each([
    ['address = "127.0.0.1:9002"', 'address = "127.0.0.1"', "backend.app.server[1].address", /missing port/],
    ['address = "127.0.0.1:9002"', 'address = "127.0.0.1:99999"', "backend.app.server[1].address", /port must be a number from 1 to 65535/],
    ['address = "127.0.0.1:9002"', 'address = "gopher://h:70"', "backend.app.server[1].address", /unsupported scheme/],
    ['bind = "127.0.0.1:8080"', 'bind = "localhost"', "listen[0].bind", /missing port/],
    ['bind = "127.0.0.1:8080"', 'bind = "::1:8080"', "listen[0].bind", /brackets/],
  ])("%p -> %p", (from, to, path, message) => {
    const text = BASE.replace(from, to);
    expectOne(text, to, path, message);
  });

  test.each([
    ['host = "exa mple.com"', /is not a host name/],
    ['host = "example.com:8080"', /without a port/],
    ['host = "www.*.com"', /is not a host name/],
  ])("route %p", (line, message) => {
    const text = configWith({ ROUTE: line });
    expectOne(text, line, "listen[0].route[0].host", message);
  });

  test("weight outside 0..256", () => {
    const text = configWith({ SERVER0: "weight = -1" });
    expectOne(text, "weight", "backend.app.server[0].weight", "must be from 0 to 256, got -1");
  });

  test("a listener without routes and without redirect", () => {
    const text = BASE.replace('  [[listen.route]]\n  backend = "app"\n  #ROUTE\n', "");
    expectOne(text, "[[listen]]", "listen[0]", 'no [[listen.route]]: add one, or set redirect = "https"');
  });

  test("redirect to https on a TLS listener", () => {
    const text = configWith({ LISTEN: `redirect = "https"\ntls = { cert = "${import.meta.path}", key = "${import.meta.path}" }` });
    expectOne(text, "redirect", "listen[0].redirect", /redirect to itself/);
  });

  test("TLS files that do not exist, resolved against the config directory", () => {
    const text = configWith({ LISTEN: 'tls = { cert = "cert.pem", key = "/nowhere/key.pem" }' });
    expect(issuesOf(text).map((i) => [i.line, i.path, i.message])).toEqual([
      [lineOf(text, "tls ="), "listen[0].tls.cert", "file not found: /etc/latch/cert.pem"],
      [lineOf(text, "tls ="), "listen[0].tls.key", "file not found: /nowhere/key.pem"],
    ]);
  });

  test("a bad CIDR in a rule", () => {
    const text = configWith({ PERSIST: '[[backend.app.ignore_persist]]\nsrc = "10.0.0.0/40"' });
    expectOne(text, "src =", "backend.app.ignore_persist[0].src", /prefix length must be 0 to 32/);
  });
});

// ---------------------------------------------------------------------------------------------

const FULL = `[global]
workers = 1
state_dir = "state"
max_head_size = "16KB"
max_url_size = "4KB"
max_headers = 50
timeout = { client = "30s", head = "5s" }

[admin]
bind = "127.0.0.1:9090"
token = "t0k"

[log]
access = true
format = "json"

[[listen]]
name = "web"
bind = ":8080"
via = "latch"
forwarded_for = false

  [[listen.route]]
  backend = "app"

  [[listen.route]]
  host = "*.Example.com"
  path = "/"
  backend = "app"

  [[listen.route]]
  host = "www.example.com"
  path = "/"
  backend = "app"
  preserve_host = true

  [[listen.route]]
  path = "/api"
  backend = "api"

  [[listen.route]]
  host = "*.a.example.com"
  path = "/"
  backend = "api"

[[listen]]
bind = "[::1]:8081"
redirect = "https"

[backend.app]
balance = "roundrobin"
failover = "strict"
timeout = { connect = "1s", server = "2s", tunnel = "3s", queue = "4s", pool_idle = "5s" }

  [backend.app.persist]
  mode = "insert"
  cookie = "SRV"
  indirect = true
  nocache = true
  postonly = true
  preserve = true
  httponly = true
  samesite = "none"
  domain = "example.com"
  path = "/app"
  maxidle = "30m"
  maxlife = "8h"

  [[backend.app.ignore_persist]]
  header = "User-Agent"
  contains = "ApacheBench"

  [[backend.app.force_persist]]
  src = "2001:db8::/32"

  [[backend.app.force_persist]]
  path = "/admin"

  [[backend.app.server]]
  id = "ap01"
  address = "127.0.0.1:9001"
  weight = 3

  [[backend.app.server]]
  id = "ap02"
  address = "https://app2.internal"
  cookie = "b"
  maxconn = 10
  drain = true

  [[backend.app.server]]
  id = "ap03"
  address = "127.0.0.1:9003"
  backup = true
  disabled = true
  drain = true

[backend.api]
balance = "hdr:X-User"
hash_balance_factor = 1.5

  [[backend.api.server]]
  id = "api1"
  address = "http://[::1]:7001"

  [[backend.api.server]]
  id = "api2"
  address = "127.0.0.1:7002"
  weight = 0
`;

const bytes = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, "latin1"));

describe("a full config compiles to the expected snapshot", () => {
  const c = loadConfigText(FULL, "full.toml", "/etc/latch");
  const app = c.backends.get("app")!;
  const api = c.backends.get("api")!;

  test("global, admin, log", () => {
    expect(c.source).toBe("full.toml");
    expect(c.workers).toBe(1);
    expect(c.stateDir).toBe("/etc/latch/state");
    expect(c.limits).toEqual({ maxHeadBytes: 16384, maxUrlBytes: 4096, maxHeaders: 50, clientIdle: 30_000, clientHead: 5000, maxTunnels: 0 });
    expect(c.admin).toEqual({ host: "127.0.0.1", port: 9090, token: "t0k" });
    expect(c.log).toEqual({ access: true, format: "json", file: null });
    expect([...c.backends.keys()]).toEqual(["app", "api"]);
  });

  test("listeners and routes: exact host, wildcard (longest first), any host; longest path first within each", () => {
    const [web, redirect] = c.listeners;
    expect(web).toMatchObject({ name: "web", host: "0.0.0.0", port: 8080, tls: null, redirectHttps: false, xForwardedFor: false, via: "latch" });
    expect(web!.routes.map((r) => [r.host, r.hostWildcard, r.path, r.backend.name, r.preserveHost])).toEqual([
      ["www.example.com", false, "/", "app", true],
      [".a.example.com", true, "/", "api", false],
      [".example.com", true, "/", "app", false],
      ["", false, "/api", "api", false],
      ["", false, "/", "app", false],
    ]);
    expect(web!.routes[3]!.pathBytes).toEqual(bytes("/api"));
    expect(web!.routes[3]!.backend).toBe(api); // the very object in backends, not a copy
    expect(redirect).toMatchObject({ name: "[::1]:8081", host: "::1", port: 8081, redirectHttps: true, routes: [], xForwardedFor: true, via: "" });
  });

  test("backend app", () => {
    expect(app).toMatchObject({
      name: "app",
      balance: { kind: "roundrobin" },
      hashBalance: false,
      failover: "strict",
      timeouts: { connect: 1000, server: 2000, tunnel: 3000, queue: 4000, poolIdle: 5000 },
      hashBoundFactor: 1.25,
      rr: { next: 0 },
    });
    expect(app.ringPoints).toHaveLength(0);
    expect(app.ringServers).toHaveLength(0);
    expect(app.ignorePersist).toEqual([{ header: { nameLower: bytes("user-agent"), contains: bytes("ApacheBench") } }]);
    expect(app.forcePersist).toEqual([
      { cidr: { v6: true, addr: new Uint8Array([0x20, 0x01, 0x0d, 0xb8, ...new Array(12).fill(0)]), bits: 32 } },
      { pathPrefix: "/admin" },
    ]);
  });

  test("servers", () => {
    expect(app.servers).toEqual([
      {
        index: 0, id: "ap01", host: "127.0.0.1", port: 9001, tls: false, authority: "127.0.0.1:9001", hostLine: bytes("Host: 127.0.0.1:9001\r\n"),
        weight: 3, backup: false, maxconn: 0, slowstart: 0, cookieValue: "ap01",
        state: { up: true, admin: "ready", active: 0, total: 0, failures: 0, rrCurrent: 0, upSince: expect.any(Number), lastChange: expect.any(Number), checks: 0, checkFailures: 0, lastCheck: "", downs: 0, failStreak: 0 },
      },
      {
        index: 1, id: "ap02", host: "app2.internal", port: 443, tls: true, authority: "app2.internal", hostLine: bytes("Host: app2.internal\r\n"),
        weight: 1, backup: false, maxconn: 10, slowstart: 0, cookieValue: "b",
        state: { up: true, admin: "drain", active: 0, total: 0, failures: 0, rrCurrent: 0, upSince: expect.any(Number), lastChange: expect.any(Number), checks: 0, checkFailures: 0, lastCheck: "", downs: 0, failStreak: 0 },
      },
      {
        index: 2, id: "ap03", host: "127.0.0.1", port: 9003, tls: false, authority: "127.0.0.1:9003", hostLine: bytes("Host: 127.0.0.1:9003\r\n"),
        weight: 1, backup: true, maxconn: 0, slowstart: 0, cookieValue: "ap03",
        state: { up: true, admin: "maint", active: 0, total: 0, failures: 0, rrCurrent: 0, upSince: expect.any(Number), lastChange: expect.any(Number), checks: 0, checkFailures: 0, lastCheck: "", downs: 0, failStreak: 0 },
      },
    ]);
    expect(api.servers[0]).toMatchObject({ host: "::1", port: 7001, authority: "[::1]:7001" });
  });

  test("insert persistence", () => {
    const p = app.persist as InsertPersist;
    const attributes = "; Path=/app; Domain=example.com; HttpOnly; Secure; SameSite=None";
    expect(p).toEqual({
      mode: "insert",
      cookie: "SRV",
      cookieBytes: bytes("SRV"),
      indirect: true,
      nocache: true,
      postonly: true,
      preserve: true,
      attributes,
      maxidle: 1_800_000,
      maxlife: 28_800_000,
      dynamic: false,
      byValue: new Map([["ap01", 0], ["b", 1], ["ap03", 2]]),
      setCookieLine: [
        bytes(`Set-Cookie: SRV=ap01${attributes}\r\n`),
        bytes(`Set-Cookie: SRV=b${attributes}\r\n`),
        bytes(`Set-Cookie: SRV=ap03${attributes}\r\n`),
      ],
    });
  });

  test("hash balancing: header name bytes, consistent-hash ring from buildRing", () => {
    expect(api.balance).toEqual({ kind: "hdr", name: "X-User", nameLower: bytes("x-user") });
    expect(api.hashBalance).toBe(true);
    expect(api.hashBoundFactor).toBe(1.5);
    expect(api.persist).toBeNull();
    const ring = buildRing(api.servers);
    expect(api.ringPoints).toEqual(ring.points);
    expect(api.ringServers).toEqual(ring.servers);
    expect(api.ringPoints.length).toBeGreaterThan(0);
  });

  test("config objects are frozen; ServerState and rr stay mutable", () => {
    const frozen: object[] = [
      c, c.limits, c.listeners, c.backends, c.admin!, c.log,
      ...c.listeners, ...c.listeners.map((l) => l.routes), ...c.listeners.flatMap((l) => l.routes),
      app, api, app.servers, ...app.servers, app.timeouts, app.balance, api.balance, app.persist!,
      (app.persist as InsertPersist).setCookieLine, app.ignorePersist, ...app.ignorePersist, app.ignorePersist[0]!.header!, app.forcePersist[0]!.cidr!,
    ];
    for (const o of frozen) expect(Object.isFrozen(o)).toBe(true);
    for (const s of app.servers) expect(Object.isFrozen(s.state)).toBe(false);
    expect(Object.isFrozen(app.rr)).toBe(false);
    app.servers[0]!.state.active++;
    app.rr.next = 2;
    expect(app.servers[0]!.state.active).toBe(1);
    expect(() => {
      (app as { name: string }).name = "x";
    }).toThrow();
  });
});

describe("insert details", () => {
  test("dynamic_key: value is the first 16 chars of base64url(HMAC-SHA256(key, id))", () => {
    const c = load(configWith({ PERSIST: 'dynamic_key = "s3cret"' }));
    const p = c.backends.get("app")!.persist as InsertPersist;
    const want = (id: string) => createHmac("sha256", "s3cret").update(id).digest("base64url").slice(0, 16);
    expect(p.dynamic).toBe(true);
    expect(c.backends.get("app")!.servers.map((s) => s.cookieValue)).toEqual([want("ap01"), want("ap02")]);
    expect(want("ap01")).toHaveLength(16);
    expect(p.byValue.get(want("ap02"))).toBe(1);
    expect(Buffer.from(p.setCookieLine[0]!).toString("latin1")).toBe(`Set-Cookie: SRV=${want("ap01")}; Path=/\r\n`);
  });

  test("dynamic_key: a server's explicit cookie wins, as in HAProxy", () => {
    const c = load(configWith({ PERSIST: 'dynamic_key = "s3cret"', SERVER1: 'cookie = "two"' }));
    const want = createHmac("sha256", "s3cret").update("ap01").digest("base64url").slice(0, 16);
    expect(c.backends.get("app")!.servers.map((s) => s.cookieValue)).toEqual([want, "two"]);
  });

  test("defaults: a session cookie with Path=/ and nothing else", () => {
    const p = load(BASE).backends.get("app")!.persist as InsertPersist;
    expect(p).toMatchObject({ attributes: "; Path=/", indirect: false, nocache: false, postonly: false, preserve: false, maxidle: 0, maxlife: 0, dynamic: false });
  });

  test("secure without samesite; samesite is written canonically", () => {
    expect((load(configWith({ PERSIST: "secure = true" })).backends.get("app")!.persist as InsertPersist).attributes).toBe("; Path=/; Secure");
    expect((load(configWith({ PERSIST: 'samesite = "STRICT"' })).backends.get("app")!.persist as InsertPersist).attributes).toBe("; Path=/; SameSite=Strict");
  });

  test("cookie hash balancing", () => {
    const b = load(configWith({ BACKEND: 'balance = "cookie:JSESSIONID"' })).backends.get("app")!;
    expect(b.balance).toEqual({ kind: "cookie", name: "JSESSIONID", nameBytes: bytes("JSESSIONID") });
    expect(b.hashBalance).toBe(true);
  });

  test("defaults of a minimal config", () => {
    const c = load(BASE);
    expect(c.workers).toBe(1);
    expect(c.stateDir).toBe("/etc/latch/.latch");
    expect(c.limits).toEqual({ maxHeadBytes: 32768, maxUrlBytes: 8192, maxHeaders: 100, clientIdle: 60_000, clientHead: 10_000, maxTunnels: 0 });
    expect(c.admin).toBeNull();
    expect(c.log).toEqual({ access: false, format: "combined", file: null });
    const b = c.backends.get("app")!;
    expect(b.timeouts).toEqual({ connect: 5000, server: 30_000, tunnel: 3_600_000, queue: 5000, poolIdle: 30_000 });
    expect(b.failover).toBe("redispatch");
    expect(b.hashBoundFactor).toBe(1.25);
    expect(c.listeners[0]).toMatchObject({ xForwardedFor: true, via: "", redirectHttps: false });
    expect(c.listeners[0]!.routes[0]).toMatchObject({ host: "", hostWildcard: false, path: "/", preserveHost: false });
  });

  test("each compile gets its own mutable state", () => {
    const a = load(BASE).backends.get("app")!;
    const b = load(BASE).backends.get("app")!;
    a.servers[0]!.state.total = 5;
    expect(b.servers[0]!.state.total).toBe(0);
    expect(a.rr).not.toBe(b.rr);
  });
});

describe("every persistence mode compiles", () => {
  const withMode = (mode: string, keys: string, cookie = true) =>
    configWith({ PERSIST: keys }).replace('mode = "insert"' + (cookie ? "" : '\n  cookie = "SRV"'), `mode = "${mode}"`);

  test("prefix and rewrite: value maps and the bytes spliced per server", () => {
    const pre = load(withMode("prefix", "")).backends.get("app")!.persist as PrefixPersist;
    expect(pre.mode).toBe("prefix");
    expect([...pre.byValue.entries()]).toEqual([["ap01", 0], ["ap02", 1]]);
    expect(pre.prefixBytes.map((b) => Buffer.from(b).toString())).toEqual(["ap01~", "ap02~"]);
    const rw = load(withMode("rewrite", "")).backends.get("app")!.persist as RewritePersist;
    expect(rw.valueBytes.map((b) => Buffer.from(b).toString())).toEqual(["ap01", "ap02"]);
  });

  test("learn: table sized from capacity and len, timeout in seconds", () => {
    const p = load(withMode("learn", 'len = 32\nrequest_learn = true\ncapacity = 1000\ntimeout = "10m"\nurl_param = "PHPSESSID"')).backends.get("app")!.persist as TablePersist;
    expect(p).toMatchObject({ mode: "learn", len: 32, requestLearn: true, timeoutSec: 600 });
    expect(Buffer.from(p.cookieBytes!).toString()).toBe("SRV");
    expect(Buffer.from(p.urlParam!).toString()).toBe("PHPSESSID");
    expect(p.table.capacity).toBe(1000);
    expect(p.table.maxKeyLen).toBe(32);
  });

  test("source, header and param", () => {
    expect(load(withMode("source", 'timeout = "5m"', false)).backends.get("app")!.persist).toMatchObject({ mode: "source", timeoutSec: 300, len: 64 });
    const h = load(withMode("header", 'header = "X-Session-ID"', false)).backends.get("app")!.persist as TablePersist;
    expect(Buffer.from(h.headerLower!).toString()).toBe("x-session-id");
    const q = load(withMode("param", 'url_param = "sid"\ncookie = "io"', false)).backends.get("app")!.persist as TablePersist;
    expect(Buffer.from(q.urlParam!).toString()).toBe("sid");
    expect(Buffer.from(q.cookieBytes!).toString()).toBe("io");
  });

  test("route: servers without `route` take no part; none at all is an error", () => {
    expectOne(withMode("route", 'url_param = "jsessionid"'), 'mode = "route"', "backend.app.persist.mode", /needs servers with a `route`/);
  });
});

describe("[backend.NAME.health]", () => {
  const health = (lines: string) => configWith({ BACKEND: `[backend.app.health]\n${lines}` });

  test("defaults: GET / every 2s, timeout = interval, rise 2, fall 3, expect 200-399, Host = the server's", () => {
    const h = load(health("")).backends.get("app")!.health;
    expect(h).toEqual({ path: "/", method: "GET", interval: 2000, timeout: 2000, rise: 2, fall: 3, expect: [[200, 399]], host: null });
    expect(Object.isFrozen(h)).toBe(true);
    expect(load(BASE).backends.get("app")!.health).toBeNull();
  });

  test("every key", () => {
    const h = load(health('path = "/healthz?full=1"\ninterval = "500ms"\ntimeout = "200ms"\nrise = 1\nfall = 5\nexpect = "2xx, 302"\nhost = "health.internal"\nmethod = "HEAD"')).backends.get("app")!.health;
    expect(h).toEqual({ path: "/healthz?full=1", method: "HEAD", interval: 500, timeout: 200, rise: 1, fall: 5, expect: [[200, 299], [302, 302]], host: "health.internal" });
    expect(load(health("expect = 204")).backends.get("app")!.health!.expect).toEqual([[204, 204]]);
  });

  test("servers start up, with their clocks at compile time and no checks counted", () => {
    const before = Date.now();
    const st = load(health("")).backends.get("app")!.servers[0]!.state;
    expect(st).toMatchObject({ up: true, checks: 0, checkFailures: 0, lastCheck: "", downs: 0 });
    expect(st.upSince).toBeGreaterThanOrEqual(before);
    expect(st.lastChange).toBe(st.upSince);
  });

  test("refusals, with key and line", () => {
    expectOne(health('interval = "1s"\ntimeout = "2s"'), "timeout", "backend.app.health.timeout", "must be at most the interval (1000ms), got 2000ms");
    expectOne(health('interval = "0s"'), "interval", "backend.app.health.interval", "must be more than 0");
    expectOne(health('expect = "2xx,700"'), "expect", "backend.app.health.expect", '"700": status codes are 100 to 599');
    expectOne(health('expect = "ok"'), "expect", "backend.app.health.expect", /"ok" is not a status code, range or class/);
    expectOne(health('method = "POST"'), "method", "backend.app.health.method", 'expected one of "GET", "HEAD", got "POST"');
    expectOne(health('path = "/a b"'), "path", "backend.app.health.path", /no space or control byte/);
    expectOne(health('host = "a b"'), "host", "backend.app.health.host", /not a valid Host header value/);
    expectOne(health("rise = 0"), "rise", "backend.app.health.rise", /from 1 to 100/);
    expectOne(health('typo = 1'), "typo", "backend.app.health.typo", /unknown key/);
  });
});
