// Health checks against real tiny backends (Bun.listen), with short intervals.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import type { TCPSocketListener } from "bun";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfigText } from "../config/index.ts";
import type { CompiledConfig, HealthCheck } from "../core/types.ts";
import { HealthChecker, probe } from "./checker.ts";

// ---------------------------------------------------------------------------------------------
// helpers

interface Tiny {
  port: number;
  /** status line answered; null = accept and say nothing */
  answer: string | null;
  conns: number;
  requests: string[];
  server: TCPSocketListener<{ buf: string }>;
  stop(): void;
}

/** A backend that answers every request with `answer` (changeable) and records what it got. */
function tiny(answer: string | null = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"): Tiny {
  const t = { answer, conns: 0, requests: [] as string[] } as Tiny;
  t.server = Bun.listen<{ buf: string }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        s.data = { buf: "" };
        t.conns++;
      },
      data(s, d) {
        s.data.buf += d.toString("latin1");
        if (!s.data.buf.includes("\r\n\r\n")) return;
        t.requests.push(s.data.buf);
        if (t.answer !== null) s.write(t.answer);
      },
      error() {},
    },
  });
  t.port = t.server.port;
  t.stop = () => t.server.stop(true);
  return t;
}

function status(code: number): string {
  return `HTTP/1.1 ${code} X\r\nContent-Length: 0\r\n\r\n`;
}

const CHECK: HealthCheck = { path: "/healthz", method: "GET", interval: 100, timeout: 100, rise: 2, fall: 3, expect: [[200, 399]], host: null };
const at = (port: number, tls = false) => ({ host: "127.0.0.1", port, tls, authority: `127.0.0.1:${port}` });

/** A port with nothing listening on it. */
function closedPort(): number {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const p = s.port;
  s.stop(true);
  return p;
}

function config(servers: { id: string; port: number; extra?: string }[], health = 'interval = "100ms"', scheme = ""): CompiledConfig {
  return loadConfigText(
    `
[[listen]]
bind = "127.0.0.1:0"
  [[listen.route]]
  backend = "app"
[backend.app]
  [backend.app.health]
  path = "/healthz"
  ${health}
${servers.map((s) => `  [[backend.app.server]]\n  id = "${s.id}"\n  address = "${scheme}127.0.0.1:${s.port}"\n  ${s.extra ?? ""}`).join("\n")}
`,
    "t.toml",
  );
}

async function until(pred: () => boolean, ms = 3000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timeout waiting for ${what}`);
    await Bun.sleep(5);
  }
}

const open: { stop(): void }[] = [];
const checkers: HealthChecker[] = [];
afterEach(() => {
  for (const c of checkers.splice(0)) c.stop();
  for (const o of open.splice(0)) o.stop();
});

function backend(answer?: string | null): Tiny {
  const t = tiny(answer);
  open.push(t);
  return t;
}

function checker(opts: { random?: () => number } = {}): { c: HealthChecker; log: string[] } {
  const log: string[] = [];
  const c = new HealthChecker((level, msg) => log.push(`${level} ${msg}`), { random: opts.random ?? (() => 0) });
  checkers.push(c);
  return { c, log };
}

// ---------------------------------------------------------------------------------------------
// one probe

describe("probe", () => {
  test("sends GET <path> with the server's authority as Host and Connection: close; 200 passes", async () => {
    const b = backend();
    expect(await probe(at(b.port), CHECK)).toEqual({ ok: true, status: 200, detail: "200" });
    expect(b.requests).toEqual([`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${b.port}\r\nUser-Agent: latch-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n`]);
  });

  test("method and host are configurable", async () => {
    const b = backend(status(204));
    await probe(at(b.port), { ...CHECK, method: "HEAD", host: "health.internal" });
    expect(b.requests[0]).toStartWith("HEAD /healthz HTTP/1.1\r\nHost: health.internal\r\n");
  });

  test("a status outside expect fails, and says what was expected", async () => {
    const b = backend(status(500));
    expect(await probe(at(b.port), CHECK)).toEqual({ ok: false, status: 500, detail: "status 500, expected 200-399" });
  });

  test("expect ranges are honoured", async () => {
    const check = { ...CHECK, expect: [[200, 299], [302, 302]] as const };
    const results: Record<number, boolean> = {};
    for (const code of [200, 204, 299, 301, 302, 304, 404, 503]) {
      const b = backend(status(code));
      results[code] = (await probe(at(b.port), check)).ok;
    }
    expect(results).toEqual({ 200: true, 204: true, 299: true, 301: false, 302: true, 304: false, 404: false, 503: false });
  });

  test("connection refused", async () => {
    expect(await probe(at(closedPort()), CHECK)).toEqual({ ok: false, status: 0, detail: "connection refused" });
  });

  test("no answer within the timeout", async () => {
    const b = backend(null);
    const t0 = Date.now();
    const r = await probe(at(b.port), { ...CHECK, timeout: 150 });
    expect(r).toEqual({ ok: false, status: 0, detail: "timeout after 150ms (no response)" });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
  });

  test("a status line split into single bytes, and interim 1xx responses skipped", async () => {
    const b = backend(null);
    b.server.reload({
      socket: {
        open() {},
        async data(s) {
          const bytes = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
          for (const ch of bytes) {
            s.write(ch);
            s.flush();
            await Bun.sleep(0);
          }
        },
      },
    });
    expect(await probe(at(b.port), { ...CHECK, timeout: 2000 })).toEqual({ ok: true, status: 204, detail: "204" });
  });

  test("not HTTP, or closed before a status line", async () => {
    const junk = backend("SSH-2.0-OpenSSH_9.2\r\n");
    expect(await probe(at(junk.port), CHECK)).toEqual({ ok: false, status: 0, detail: 'invalid response: "SSH-2.0-OpenSSH_9.2.."' });
    const closer = backend(null);
    closer.server.reload({ socket: { data(s) { s.end(); } } });
    expect(await probe(at(closer.port), CHECK)).toEqual({ ok: false, status: 0, detail: "connection closed without a response" });
    const half = backend(null);
    half.server.reload({ socket: { data(s) { s.end("HTTP/1.1 2"); } } });
    expect((await probe(at(half.port), CHECK)).detail).toBe('connection closed mid-status line: "HTTP/1.1 2"');
  });

  test("a bare-LF status line is read", async () => {
    const b = backend("HTTP/1.0 200 OK\nContent-Length: 0\n\n");
    expect(await probe(at(b.port), CHECK)).toEqual({ ok: true, status: 200, detail: "200" });
  });
});

describe("TLS", () => {
  let dir = "", cert = "", key = "";
  let secure: ReturnType<typeof Bun.serve> | null = null;
  let plainPort = 0;
  const seen: string[] = [];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "latch-health-"));
    cert = join(dir, "cert.pem");
    key = join(dir, "key.pem");
    const r = Bun.spawnSync(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost"]);
    if (r.exitCode !== 0) throw new Error(r.stderr.toString());
    secure = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: { cert: Bun.file(cert), key: Bun.file(key) },
      fetch(req) {
        seen.push(`${req.method} ${new URL(req.url).pathname} ${req.headers.get("host")}`);
        return new Response("fine", { status: new URL(req.url).pathname === "/healthz" ? 200 : 503 });
      },
    });
  });
  afterAll(() => {
    secure?.stop(true);
  });

  test("an https:// server is checked over TLS (certificate not verified, as for forwarding)", async () => {
    expect(await probe(at(secure!.port!, true), { ...CHECK, timeout: 2000 })).toEqual({ ok: true, status: 200, detail: "200" });
    expect(await probe(at(secure!.port!, true), { ...CHECK, path: "/other", timeout: 2000 })).toMatchObject({ ok: false, status: 503 });
    expect(seen).toEqual([`GET /healthz 127.0.0.1:${secure!.port}`, `GET /other 127.0.0.1:${secure!.port}`]);
  });

  test("TLS to a plain server fails the handshake; plain HTTP to a TLS server fails", async () => {
    const plain = backend(null); // answers anything, even a ClientHello, with 400 and closes (as HTTP servers do)
    plain.server.reload({ socket: { data(s) { s.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"); } } });
    plainPort = plain.port;
    expect((await probe(at(plainPort, true), { ...CHECK, timeout: 2000 })).detail).toBe("TLS handshake failed (WRONG_VERSION_NUMBER)");
    expect(await probe(at(secure!.port!, false), { ...CHECK, timeout: 2000 })).toEqual({ ok: false, status: 0, detail: "connection closed without a response" });
  });

  test("the checker uses TLS for an https:// server address", async () => {
    const cfg = config([{ id: "s1", port: secure!.port! }], 'interval = "100ms"\nrise = 1\nfall = 1', "https://");
    const st = cfg.backends.get("app")!.servers[0]!.state;
    const { c } = checker();
    c.start(cfg);
    await until(() => st.checks >= 2, 3000, "two checks");
    expect(st).toMatchObject({ up: true, checkFailures: 0, lastCheck: "200" });
  });
});

// ---------------------------------------------------------------------------------------------
// the checker

describe("HealthChecker", () => {
  test("fall consecutive failures take a server down, rise successes bring it back; both logged and counted", async () => {
    const b = backend();
    const cfg = config([{ id: "ap01", port: b.port }]);
    const st = cfg.backends.get("app")!.servers[0]!.state;
    const { c, log } = checker();
    c.start(cfg);
    expect(c.size).toBe(1);
    expect(log).toEqual(["info health: checking 1 server of backend app every 100ms (GET /healthz, expect 200-399, rise 2, fall 3)"]);
    await until(() => st.checks >= 2, 3000, "two good checks");
    expect(st.up).toBe(true);
    expect(st.lastCheck).toBe("200");

    b.answer = status(500);
    const failedBefore = st.checkFailures;
    await until(() => !st.up, 3000, "down");
    expect(st.checkFailures - failedBefore).toBe(3);
    expect(st.downs).toBe(1);
    expect(log).toContain("warn health: backend app server ap01 DOWN (3 consecutive failures: status 500, expected 200-399)");
    expect(log).toContain("error health: backend app has no server available");
    const downAt = st.lastChange;
    expect(downAt).toBeGreaterThan(0);

    b.answer = status(200);
    const checksBefore = st.checks;
    await until(() => st.up, 3000, "up");
    expect(st.checks - checksBefore).toBe(2);
    expect(log).toContain("info health: backend app server ap01 UP (2 consecutive successes: 200)");
    expect(st.upSince).toBeGreaterThanOrEqual(downAt);
    expect(st.lastChange).toBe(st.upSince);
  });

  test("a failure between successes resets the streak: no flapping below fall", async () => {
    const b = backend();
    let n = 0;
    b.server.reload({
      socket: {
        open(s) {
          s.data = { buf: "" };
        },
        data(s) {
          s.write(status(n++ % 2 === 0 ? 500 : 200)); // fail, pass, fail, pass...
        },
      },
    });
    const cfg = config([{ id: "ap01", port: b.port }, { id: "ap02", port: backend().port }], 'interval = "50ms"\nfall = 2');
    const st = cfg.backends.get("app")!.servers[0]!.state;
    st.checks = 1; // not fresh: the first failure alone must not take it down
    const { c, log } = checker();
    c.start(cfg);
    await until(() => st.checks >= 9, 3000, "eight more checks");
    expect(st.up).toBe(true);
    expect(log.filter((l) => l.includes("DOWN"))).toEqual([]);
  });

  test("a server never checked is taken down by its first failure (connection refused)", async () => {
    const good = backend();
    const port = closedPort();
    const cfg = config([{ id: "ap01", port: good.port }, { id: "ap02", port }]);
    const [s1, s2] = cfg.backends.get("app")!.servers.map((s) => s.state);
    const { c, log } = checker();
    c.start(cfg);
    await until(() => !s2!.up, 3000, "ap02 down");
    expect(s2!.checks).toBe(1);
    expect(s2!.lastCheck).toBe("connection refused");
    expect(log).toContain("warn health: backend app server ap02 DOWN (first check failed: connection refused)");
    expect(s1!.up).toBe(true);
    expect(log.some((l) => l.includes("no server available"))).toBe(false);
  });

  test("after its first success a server needs fall failures; a port that closes is taken down", async () => {
    const b = backend();
    const cfg = config([{ id: "ap01", port: b.port }]);
    const st = cfg.backends.get("app")!.servers[0]!.state;
    const { c, log } = checker();
    c.start(cfg);
    await until(() => st.checks >= 1, 3000, "first check");
    b.stop();
    await until(() => !st.up, 3000, "down");
    expect(st.lastCheck).toBe("connection refused");
    expect(log).toContain("warn health: backend app server ap01 DOWN (3 consecutive failures: connection refused)");
  });

  test("servers in maint are not probed; they are once they leave it", async () => {
    const b1 = backend();
    const b2 = backend();
    const cfg = config([{ id: "ap01", port: b1.port }, { id: "ap02", port: b2.port, extra: "disabled = true" }]);
    const [s1, s2] = cfg.backends.get("app")!.servers.map((s) => s.state);
    expect(s2!.admin).toBe("maint");
    const { c } = checker();
    c.start(cfg);
    await until(() => s1!.checks >= 4, 3000, "four checks of ap01");
    expect(b2.conns).toBe(0);
    expect(s2!.checks).toBe(0);
    s2!.admin = "ready";
    await until(() => s2!.checks >= 1, 3000, "ap02 checked");
    expect(b2.conns).toBeGreaterThan(0);
  });

  test("drain and backup servers are probed", async () => {
    const b1 = backend(status(500));
    const b2 = backend(status(500));
    const cfg = config([{ id: "d", port: b1.port, extra: "drain = true" }, { id: "bk", port: b2.port, extra: "backup = true" }], 'interval = "50ms"\nfall = 1');
    const [d, bk] = cfg.backends.get("app")!.servers.map((s) => s.state);
    const { c, log } = checker();
    c.start(cfg);
    await until(() => !d!.up && !bk!.up, 3000, "both down");
    expect(log.filter((l) => l.includes("DOWN"))).toHaveLength(2);
  });

  test("a primary down with a backup up is said once per change", async () => {
    const primary = backend(status(500));
    const spare = backend();
    const cfg = config([{ id: "p", port: primary.port }, { id: "b", port: spare.port, extra: "backup = true" }], 'interval = "50ms"\nfall = 1');
    const { c, log } = checker();
    c.start(cfg);
    await until(() => !cfg.backends.get("app")!.servers[0]!.state.up, 3000, "primary down");
    expect(log).toContain("warn health: backend app has no primary server up; 1 backup server takes the traffic");
  });

  test("a change made elsewhere (passive marking) restarts the streak: rise fresh successes", async () => {
    const b = backend();
    const cfg = config([{ id: "ap01", port: b.port }], 'interval = "50ms"\nrise = 3');
    const st = cfg.backends.get("app")!.servers[0]!.state;
    const { c, log } = checker();
    c.start(cfg);
    await until(() => st.checks >= 4, 3000, "four good checks");
    st.up = false; // as the forwarding core would after connection failures
    const from = st.checks;
    await until(() => st.up, 3000, "up again");
    expect(st.checks - from).toBe(3);
    expect(log).toContain("info health: backend app server ap01 UP (3 consecutive successes: 200)");
  });

  test("the first probe of each server falls at random in the first interval", async () => {
    const b = backend();
    const cfg = config([{ id: "ap01", port: b.port }], 'interval = "1s"');
    const { c } = checker({ random: () => 0.6 });
    const t0 = Date.now();
    c.start(cfg);
    await Bun.sleep(400);
    expect(b.conns).toBe(0);
    await until(() => b.conns === 1, 2000, "first probe");
    expect(Date.now() - t0).toBeGreaterThanOrEqual(550);
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  test("servers of one backend spread over the interval", async () => {
    const bs = [backend(), backend(), backend(), backend()];
    const firstAt: number[] = [0, 0, 0, 0];
    bs.forEach((b, i) => b.server.reload({ socket: { open() { if (firstAt[i] === 0) firstAt[i] = Date.now(); }, data(s) { s.write(status(200)); } } }));
    const cfg = config(bs.map((b, i) => ({ id: `s${i}`, port: b.port })), 'interval = "800ms"');
    let k = 0;
    const { c } = checker({ random: () => [0, 0.25, 0.5, 0.75][k++ % 4]! });
    const t0 = Date.now();
    c.start(cfg);
    await until(() => firstAt.every((t) => t > 0), 3000, "all probed");
    const offsets = firstAt.map((t) => t - t0);
    for (let i = 1; i < 4; i++) expect(offsets[i]! - offsets[i - 1]!).toBeGreaterThan(120);
  });

  test("stop() stops probing and cancels the probe in flight; start() again (reload) resumes with the new config", async () => {
    const slow = backend(null); // never answers: a probe is always in flight
    const cfg = config([{ id: "ap01", port: slow.port }], 'interval = "500ms"\nfall = 1');
    const st = cfg.backends.get("app")!.servers[0]!.state;
    const { c, log } = checker();
    c.start(cfg);
    await until(() => slow.conns === 1, 3000, "probe in flight");
    c.stop();
    expect(c.size).toBe(0);
    await Bun.sleep(700);
    expect(st.checks).toBe(0); // the cancelled probe never reported
    expect(st.up).toBe(true);
    expect(slow.conns).toBe(1);

    // a reload: a new config whose server is healthy; the old one is no longer probed
    const good = backend();
    const next = config([{ id: "ap01", port: good.port }], 'interval = "100ms"');
    c.start(next);
    await until(() => next.backends.get("app")!.servers[0]!.state.checks >= 2, 3000, "new config checked");
    expect(slow.conns).toBe(1);
    expect(log.filter((l) => l.startsWith("info health: checking"))).toHaveLength(2);
  });

  test("a carried-over state (reload) keeps its verdict, and is not treated as never checked", async () => {
    const b = backend(status(503));
    const cfg = config([{ id: "ap01", port: b.port }], 'interval = "50ms"');
    const st = cfg.backends.get("app")!.servers[0]!.state;
    st.checks = 10; // checked by the previous checker
    const { c, log } = checker();
    c.start(cfg);
    await until(() => !st.up, 3000, "down");
    expect(st.checks).toBe(13);
    expect(log).toContain("warn health: backend app server ap01 DOWN (3 consecutive failures: status 503, expected 200-399)");
  });

  test("backends without [health] are not checked", () => {
    const cfg = loadConfigText(`[[listen]]\nbind = "127.0.0.1:0"\n[[listen.route]]\nbackend = "a"\n[backend.a]\n[[backend.a.server]]\nid = "x"\naddress = "127.0.0.1:1"\n`, "t.toml");
    const { c, log } = checker();
    c.start(cfg);
    expect(c.size).toBe(0);
    expect(log).toEqual([]);
  });

  test("every result reaches lastCheck (timeouts say which phase)", async () => {
    const b = backend(null);
    const cfg = config([{ id: "ap01", port: b.port }], 'interval = "100ms"\ntimeout = "60ms"\nfall = 1');
    const st = cfg.backends.get("app")!.servers[0]!.state;
    const { c, log } = checker();
    c.start(cfg);
    await until(() => !st.up, 3000, "down");
    expect(st.lastCheck).toBe("timeout after 60ms (no response)");
    expect(log).toContain("warn health: backend app server ap01 DOWN (first check failed: timeout after 60ms (no response))");
  });
});

