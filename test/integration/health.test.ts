// Active health checks over real sockets through a real Latch: the checker marks servers
// down and up, and clients follow. In-process tests start the checker next to startLatch on
// the very snapshot the proxy reads (as src/cli.ts does); the last test runs the CLI to see
// the wiring (start, log, reload, stop).

import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HealthChecker } from "../../src/health/checker.ts";
import { until } from "../helpers/backends.ts";
import { freePort, simpleConfig, spawnLatch, startLatch, type Running, type Spawned } from "../helpers/latch.ts";
import { recordingBackend, request } from "../helpers/raw.ts";

interface App {
  name: string;
  port: number;
  /** status the health path answers */
  health: number;
  /** health requests / other requests received */
  probes: number;
  hits: number;
  stop(): void;
}

/** A backend that answers /healthz with `health` and anything else with 200 + X-Server. */
function app(name: string): App {
  const a = { name, health: 200, probes: 0, hits: 0 } as App;
  const b = recordingBackend(name, ({ head }) => {
    if (head.split(" ")[1] === "/healthz") {
      a.probes++;
      return `HTTP/1.1 ${a.health} X\r\nContent-Length: 0\r\n\r\n`;
    }
    a.hits++;
    return `HTTP/1.1 200 OK\r\nContent-Length: ${name.length}\r\nX-Server: ${name}\r\n\r\n${name}`;
  });
  a.port = b.port;
  a.stop = () => b.stop();
  return a;
}

let latch: Running | null = null;
let checker: HealthChecker | null = null;
let apps: App[] = [];
let log: string[] = [];

afterEach(async () => {
  checker?.stop();
  checker = null;
  await latch?.stop();
  latch = null;
  apps.forEach((a) => a.stop());
  apps = [];
  log = [];
});

const HEALTH = `[backend.app.health]\npath = "/healthz"\ninterval = "100ms"\nrise = 2\nfall = 3\n`;

function setup(opts: { health?: string; extra?: string[]; persist?: string; names?: string[] } = {}): number {
  apps = (opts.names ?? ["ap01", "ap02"]).map(app);
  latch = startLatch(
    simpleConfig({
      servers: apps.map((a, i) => ({ id: a.name, port: a.port, extra: opts.extra?.[i] })),
      backendExtra: opts.health ?? HEALTH,
      persist: opts.persist,
    }),
  );
  checker = new HealthChecker((level, msg) => log.push(`${level} ${msg}`), { random: () => 0 });
  checker.start(latch.proxy.config);
  return latch.port;
}

const state = (id: string) => latch!.proxy.config.backends.get("app")!.servers.find((s) => s.id === id)!.state;

async function servedBy(port: number, n: number, cookie?: string): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await request(port, `GET /page HTTP/1.1\r\nHost: shop.example\r\n${cookie ? `Cookie: ${cookie}\r\n` : ""}\r\n`);
    expect(r.status).toBe(200);
    out.push(r.get("x-server")!);
  }
  return out;
}

describe("a failing health path", () => {
  test("takes the server out after `fall` checks, clients move to the other; `rise` successes bring it back", async () => {
    const port = setup();
    await until(() => state("ap02").checks >= 2, 3000, "checks running");
    expect(new Set(await servedBy(port, 4))).toEqual(new Set(["ap01", "ap02"]));

    apps[1]!.health = 500;
    await until(() => !state("ap02").up, 3000, "ap02 down");
    expect(log).toContain("warn health: backend app server ap02 DOWN (3 consecutive failures: status 500, expected 200-399)");
    const hitsBefore = apps[1]!.hits;
    expect(await servedBy(port, 10)).toEqual(new Array(10).fill("ap01"));
    expect(apps[1]!.hits).toBe(hitsBefore); // no new request reached ap02
    expect(state("ap02").downs).toBe(1);

    apps[1]!.health = 200;
    await until(() => state("ap02").up, 3000, "ap02 up");
    expect(log).toContain("info health: backend app server ap02 UP (2 consecutive successes: 200)");
    expect(new Set(await servedBy(port, 4))).toEqual(new Set(["ap01", "ap02"]));
  });

  test("a persisted client of a server marked down is redispatched and re-persisted", async () => {
    const port = setup({ persist: 'mode = "insert"\ncookie = "SRV"' });
    apps[1]!.health = 503;
    await until(() => !state("ap02").up, 3000, "ap02 down");
    const r = await request(port, "GET /page HTTP/1.1\r\nHost: shop.example\r\nCookie: SRV=ap02\r\n\r\n");
    expect(r.status).toBe(200);
    expect(r.get("x-server")).toBe("ap01");
    expect(r.get("set-cookie")).toStartWith("SRV=ap01");
  });

  test("every server down: 503, and the log says the backend has no server", async () => {
    const port = setup({ health: HEALTH.replace("fall = 3", "fall = 1") });
    apps.forEach((a) => (a.health = 500));
    await until(() => !state("ap01").up && !state("ap02").up, 3000, "both down");
    expect(log).toContain("error health: backend app has no server available");
    const r = await request(port, "GET /page HTTP/1.1\r\nHost: shop.example\r\n\r\n");
    expect(r.status).toBe(503);
    expect(apps.map((a) => a.hits)).toEqual([0, 0]);
  });
});

test("a server whose port closes (connection refused) goes down; clients keep being answered", async () => {
  const port = setup();
  await until(() => state("ap02").checks >= 1 && state("ap01").checks >= 1, 3000, "checked once");
  apps[1]!.stop();
  await until(() => !state("ap02").up, 3000, "ap02 down");
  expect(state("ap02").lastCheck).toBe("connection refused");
  expect(log).toContain("warn health: backend app server ap02 DOWN (3 consecutive failures: connection refused)");
  expect(await servedBy(port, 6)).toEqual(new Array(6).fill("ap01"));
});

test("expect ranges are honoured: 302 passes `200-299,302`, fails the default elsewhere", async () => {
  setup({ health: `${HEALTH}expect = "2xx,302"\n`, names: ["ap01", "ap02", "ap03"] });
  apps[0]!.health = 302; // accepted
  apps[1]!.health = 204; // accepted
  apps[2]!.health = 301; // not accepted
  await until(() => !state("ap03").up, 3000, "ap03 down");
  await until(() => state("ap01").checks >= 4 && state("ap02").checks >= 4, 3000, "more checks");
  expect([state("ap01").up, state("ap02").up, state("ap03").up]).toEqual([true, true, false]);
  expect(state("ap01").lastCheck).toBe("302");
  expect(state("ap03").lastCheck).toBe("status 301, expected 200-299,302");
  expect(new Set(await servedBy(latch!.port, 6))).toEqual(new Set(["ap01", "ap02"]));
});

test("a server in maintenance (disabled) is never probed", async () => {
  setup({ extra: ["", "disabled = true"] });
  await until(() => state("ap01").checks >= 5, 3000, "ap01 checked five times");
  expect(apps[0]!.probes).toBeGreaterThanOrEqual(5);
  expect(apps[1]!.probes).toBe(0);
  expect(state("ap02").checks).toBe(0);
});

describe("TLS", () => {
  let dir = "", cert = "", key = "";
  let secure: ReturnType<typeof Bun.serve> | null = null;
  let secureHealth = 200;
  const secureSaw: string[] = [];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "latch-health-tls-"));
    cert = join(dir, "cert.pem");
    key = join(dir, "key.pem");
    const r = Bun.spawnSync(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost"]);
    if (r.exitCode !== 0) throw new Error(r.stderr.toString());
    secure = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: { cert: Bun.file(cert), key: Bun.file(key) },
      fetch(req) {
        const path = new URL(req.url).pathname;
        secureSaw.push(path);
        if (path === "/healthz") return new Response(null, { status: secureHealth });
        return new Response("tls", { headers: { "x-server": "tls" } });
      },
    });
  });
  afterAll(() => {
    secure?.stop(true);
  });

  test("an https:// server is checked over TLS: down on 503, up again on 200", async () => {
    apps = [app("ap01")];
    latch = startLatch(
      simpleConfig({
        servers: [
          { id: "ap01", port: apps[0]!.port },
          { id: "tls", port: 0 },
        ],
        backendExtra: HEALTH,
      }).replace('address = "127.0.0.1:0"', `address = "https://127.0.0.1:${secure!.port}"`),
    );
    checker = new HealthChecker((level, msg) => log.push(`${level} ${msg}`), { random: () => 0 });
    checker.start(latch.proxy.config);
    await until(() => state("tls").checks >= 2, 3000, "TLS server checked");
    expect(state("tls")).toMatchObject({ up: true, lastCheck: "200", checkFailures: 0 });
    expect(secureSaw).toContain("/healthz"); // Bun.serve with tls only speaks TLS
    expect(new Set(await servedBy(latch.port, 4))).toEqual(new Set(["ap01", "tls"]));

    secureHealth = 503;
    await until(() => !state("tls").up, 3000, "TLS server down");
    expect(log).toContain("warn health: backend app server tls DOWN (3 consecutive failures: status 503, expected 200-399)");
    expect(await servedBy(latch.port, 4)).toEqual(["ap01", "ap01", "ap01", "ap01"]);
    secureHealth = 200;
    await until(() => state("tls").up, 3000, "TLS server up");
  });
});

describe("through the CLI (src/cli.ts wiring)", () => {
  let spawned: Spawned | null = null;
  afterAll(async () => {
    await spawned?.stop("SIGKILL");
  });

  test("checks start with the proxy, changes are logged, reload restarts them, SIGTERM stops them", async () => {
    apps = [app("ap01"), app("ap02")];
    apps[1]!.stop(); // ap02's port is closed from the start
    const port = await freePort();
    const toml = simpleConfig({
      port,
      servers: apps.map((a) => ({ id: a.name, port: a.port })),
      backendExtra: HEALTH,
    });
    spawned = await spawnLatch(toml, port);
    await until(() => spawned!.output().includes("server ap02 DOWN"), 5000, "ap02 DOWN in the log");
    expect(spawned.output()).toContain("health: checking 2 servers of backend app every 100ms (GET /healthz, expect 200-399, rise 2, fall 3)");
    expect(spawned.output()).toContain("warn health: backend app server ap02 DOWN (first check failed: connection refused)");
    for (let i = 0; i < 4; i++) {
      const r = await request(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
      expect(r.get("x-server")).toBe("ap01");
    }

    // reload with a shorter interval: the old checker stops, a new one starts
    const cfgPath = join(readlinkSync(`/proc/${spawned.pid}/cwd`), "latch.toml"); // spawnLatch runs it in the config's directory
    writeFileSync(cfgPath, toml.replace('interval = "100ms"', 'interval = "50ms"'));
    const probesBefore = apps[0]!.probes;
    spawned.proc.kill("SIGHUP");
    await until(() => spawned!.output().includes("every 50ms"), 5000, "checker restarted");
    await until(() => apps[0]!.probes >= probesBefore + 4, 3000, "probes continue");

    expect(await spawned.stop("SIGTERM")).toBe(0);
    const after = apps[0]!.probes;
    await Bun.sleep(300);
    expect(apps[0]!.probes).toBe(after);
  });
});
