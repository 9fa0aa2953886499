// The access log end to end: a real `latch run` subprocess with [log] access = true in front
// of real backends, then the file it wrote: one line per request, with the status, the
// backend/server, the persistence flags and timings that request really had. Plus: JSON
// lines, rotation by mv + SIGHUP, the last lines written on SIGTERM, and a log that cannot
// be written (a full disk, a path that cannot be opened) while every request is still served.

import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUN, freePort } from "../helpers/latch.ts";
import { CLI, start, type Started } from "../helpers/proc.ts";
import { recordingBackend, request } from "../helpers/raw.ts";

type Backend = ReturnType<typeof recordingBackend>;
let latch: Started | null = null;
let backends: Backend[] = [];

afterEach(async () => {
  await latch?.stop("SIGKILL", 2000);
  latch = null;
  backends.forEach((b) => b.stop());
  backends = [];
});

interface Setup {
  dir: string;
  port: number;
  config: string;
  toml: (log: string) => string;
}

async function setup(log: string): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), "latch-accesslog-"));
  backends = ["ap01", "ap02"].map((n) => recordingBackend(n));
  const port = await freePort();
  const refused = await freePort(); // nothing listens there: connection refused
  const toml = (logTable: string) => `
[global]
state_dir = "state"

[log]
access = true
${logTable}

[[listen]]
name = "web"
bind = "127.0.0.1:${port}"

  [[listen.route]]
  host = "shop.example"
  path = "/dead"
  backend = "dead"

  [[listen.route]]
  host = "shop.example"
  path = "/"
  backend = "app"

[backend.app]
balance = "roundrobin"

[backend.app.persist]
mode = "insert"
cookie = "SRV"
indirect = true
nocache = true

[[backend.app.server]]
id = "ap01"
address = "127.0.0.1:${backends[0]!.port}"

[[backend.app.server]]
id = "ap02"
address = "127.0.0.1:${backends[1]!.port}"

[backend.dead]

[[backend.dead.server]]
id = "gone"
address = "127.0.0.1:${refused}"
`;
  const config = join(dir, "latch.toml");
  writeFileSync(config, toml(log));
  latch = await start([BUN, CLI, "run", config], "listening", { cwd: dir });
  return { dir, port, config, toml };
}

const get = (port: number, path: string, headers = "", host = "shop.example") =>
  request(port, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${headers}\r\n`);

/** Waits until the file has n lines (the log flushes every ~100 ms). */
async function linesOf(path: string, n: number, ms = 3000): Promise<string[]> {
  const until = Date.now() + ms;
  for (;;) {
    const lines = existsSync(path) ? readFileSync(path, "utf8").split("\n").filter(Boolean) : [];
    if (lines.length >= n || Date.now() > until) return lines;
    await Bun.sleep(20);
  }
}

const COMBINED =
  /^(\S+) - - \[(\d\d\/\w{3}\/\d{4}:\d\d:\d\d:\d\d \+0000)\] "([^"]*)" (\d+) (\d+) "([^"]*)" "([^"]*)" (\S+) (\S+)\/(\S+) persist=(\S+) sid=(\S+) Tq\/Tw\/Tc\/Tr\/Tt=(-?[\d.]+)\/(-?[\d.]+)\/(-?[\d.]+)\/(-?[\d.]+)\/(-?[\d.]+) "([^"]*)"$/;

function parseCombined(line: string) {
  const m = COMBINED.exec(line);
  if (m === null) throw new Error(`not a combined line: ${line}`);
  const [, client, time, request, status, bytes, referer, userAgent, listener, backend, server, persist, sid, tq, tw, tc, tr, tt, note] = m;
  return { client, time, request, status: Number(status), bytes: Number(bytes), referer, userAgent, listener, backend, server, persist, sid, tq: Number(tq), tw: Number(tw), tc: Number(tc), tr: Number(tr), tt: Number(tt), note };
}

/** The mix every format test sends; returns what each request's line must say. */
async function sendMix(port: number) {
  const fresh = await get(port, "/new", "User-Agent: test-agent/1.0\r\nReferer: https://ref.example/a\r\n");
  expect(fresh.status).toBe(200);
  const inserted = fresh.get("x-server")!;
  expect(fresh.get("set-cookie")).toBe(`SRV=${inserted}; Path=/`);
  const persisted = await get(port, "/cart", "Cookie: SRV=ap01\r\n");
  expect(persisted.status).toBe(200);
  expect(persisted.get("x-server")).toBe("ap01");
  const noRoute = await get(port, "/x", "", "other.example");
  expect(noRoute.status).toBe(404);
  const refused = await get(port, "/dead/1");
  expect(refused.status).toBe(502);
  const quoted = await get(port, "/q", 'User-Agent: evil "agent"\r\nCookie: SRV=ap02\r\n');
  expect(quoted.status).toBe(200);
  return { inserted };
}

describe("access log to a file", () => {
  test("combined: one line per request with status, backend/server, persist flags, sid and sane timings", async () => {
    const { dir, port } = await setup(`file = "logs-access.log"`);
    const { inserted } = await sendMix(port);
    const path = join(dir, "logs-access.log"); // relative to the config file's directory
    const lines = await linesOf(path, 5);
    expect(lines.length).toBe(5);
    const [fresh, persisted, noRoute, refused, quoted] = lines.map(parseCombined);

    expect(fresh).toMatchObject({ client: "127.0.0.1", request: "GET /new HTTP/1.1", status: 200, referer: "https://ref.example/a", userAgent: "test-agent/1.0", listener: "web", backend: "app", server: inserted, persist: "NI", note: "-" }); // sid: what the request carried (none here)
    expect(persisted).toMatchObject({ request: "GET /cart HTTP/1.1", status: 200, backend: "app", server: "ap01", persist: "VN", sid: "ap01", referer: "-", userAgent: "-" });
    expect(noRoute).toMatchObject({ request: "GET /x HTTP/1.1", status: 404, backend: "-", server: "-" });
    expect(refused).toMatchObject({ request: "GET /dead/1 HTTP/1.1", status: 502, backend: "dead", server: "gone" });
    expect(refused.note).not.toBe("-");
    expect(quoted).toMatchObject({ userAgent: "evil \\x22agent\\x22", server: "ap02", persist: "VN" });

    for (const l of [fresh, persisted, quoted]) {
      expect(l.bytes).toBeGreaterThan(0);
      expect(l.tr).toBeGreaterThanOrEqual(0);
      expect(l.tc).toBeGreaterThanOrEqual(0);
      expect(l.tt).toBeGreaterThanOrEqual(l.tr);
      expect(l.tt).toBeLessThan(2000);
    }
    for (const l of [noRoute, refused]) {
      expect(l.tt).toBeGreaterThanOrEqual(0);
      expect(l.tr).toBe(-1); // no response head came from a server
    }
    expect(noRoute.tc).toBe(-1);
    const now = Date.now();
    const t = Date.parse(fresh.time.replace(/^(\d\d)\/(\w{3})\/(\d{4}):/, "$2 $1 $3 ").replace(" +0000", " GMT"));
    expect(Math.abs(now - t)).toBeLessThan(60_000);
    expect(latch!.output()).not.toContain("access log:");
  });

  test("json: one valid object per line with every field", async () => {
    const { dir, port } = await setup(`file = "access.json"\nformat = "json"`);
    const { inserted } = await sendMix(port);
    const lines = await linesOf(join(dir, "access.json"), 5);
    expect(lines.length).toBe(5);
    const [fresh, persisted, noRoute, refused, quoted] = lines.map((l) => JSON.parse(l));
    const keys = ["time", "ts", "client", "clientPort", "listener", "method", "target", "version", "status", "bytesOut", "referer", "userAgent", "backend", "server", "persist", "sessionId", "tq", "tw", "tc", "tr", "tt", "note"];
    for (const o of [fresh, persisted, noRoute, refused, quoted]) expect(Object.keys(o)).toEqual(keys);
    expect(fresh).toMatchObject({ client: "127.0.0.1", method: "GET", target: "/new", version: "HTTP/1.1", status: 200, backend: "app", server: inserted, persist: "NI", userAgent: "test-agent/1.0", referer: "https://ref.example/a" });
    expect(new Date(fresh.time).getTime()).toBe(fresh.ts);
    expect(persisted).toMatchObject({ status: 200, server: "ap01", persist: "VN", sessionId: "ap01" });
    expect(noRoute).toMatchObject({ status: 404, backend: "-", server: "-", note: "no route" });
    expect(refused).toMatchObject({ status: 502, backend: "dead", server: "gone" });
    expect(quoted.userAgent).toBe('evil "agent"');
    for (const o of [fresh, persisted, quoted]) {
      expect(o.tr).toBeGreaterThanOrEqual(0);
      expect(o.tt).toBeGreaterThanOrEqual(o.tr);
    }
  });

  test("rotation: mv + SIGHUP reopens the file; a reload applies a new format; SIGTERM writes the last lines", async () => {
    const s = await setup(`file = "access.log"`);
    const path = join(s.dir, "access.log");
    expect((await get(s.port, "/one")).status).toBe(200);
    expect((await linesOf(path, 1)).length).toBe(1);
    renameSync(path, path + ".1");
    latch!.proc.kill("SIGHUP");
    const until = Date.now() + 3000;
    while (!latch!.output().includes("reloaded") && Date.now() < until) await Bun.sleep(20);
    expect((await get(s.port, "/two")).status).toBe(200);
    expect((await linesOf(path, 1)).map((l) => parseCombined(l).request)).toEqual(["GET /two HTTP/1.1"]);
    expect(readFileSync(path + ".1", "utf8").split("\n").filter(Boolean).map((l) => parseCombined(l).request)).toEqual(["GET /one HTTP/1.1"]);

    // the same file, now JSON: the reload keeps the destination and changes the format
    writeFileSync(s.config, s.toml(`file = "access.log"\nformat = "json"`));
    const reloads = latch!.output().split("reloaded").length;
    latch!.proc.kill("SIGHUP");
    while (latch!.output().split("reloaded").length === reloads && Date.now() < until + 3000) await Bun.sleep(20);
    // a burst, then SIGTERM at once: the batch still in memory is written before the exit
    for (let i = 0; i < 20; i++) expect((await get(s.port, `/b${i}`)).status).toBe(200);
    expect(await latch!.stop("SIGTERM")).toBe(0);
    const lines = readFileSync(path, "utf8").split("\n").filter(Boolean);
    expect(lines.length).toBe(21);
    expect(lines.slice(1).map((l) => JSON.parse(l).target)).toEqual(Array.from({ length: 20 }, (_, i) => `/b${i}`));
  });
});

describe("a log that cannot be written never stops forwarding", () => {
  test("a full disk (/dev/full, ENOSPC): every request is served, stderr says the log is failing", async () => {
    const { port } = await setup(`file = "/dev/full"`);
    for (let i = 0; i < 30; i++) {
      const r = await get(port, `/r${i}`, i % 2 === 0 ? "Cookie: SRV=ap01\r\n" : "");
      expect(r.status).toBe(200);
      if (i % 10 === 9) await Bun.sleep(120); // let a few flushes fail in between
    }
    const until = Date.now() + 3000;
    while (!latch!.output().includes("access log: cannot write /dev/full: ENOSPC") && Date.now() < until) await Bun.sleep(20);
    expect(latch!.output()).toContain("access log: cannot write /dev/full: ENOSPC");
    // reported once per burst, not once per failed write
    expect(latch!.output().split("access log: cannot write").length - 1).toBe(1);
    expect(await latch!.stop("SIGTERM")).toBe(0);
  });

  test("a path that cannot be opened: reported at startup, requests served", async () => {
    const dir = mkdtempSync(join(tmpdir(), "latch-accesslog-"));
    writeFileSync(join(dir, "blocker"), ""); // a file where a directory should be: ENOTDIR even for root
    const { port } = await setup(`file = "${join(dir, "blocker", "access.log")}"`);
    const until = Date.now() + 3000;
    while (!latch!.output().includes("access log: cannot write") && Date.now() < until) await Bun.sleep(20);
    expect(latch!.output()).toMatch(/warn access log: cannot write .*blocker\/access\.log: ENOTDIR/);
    for (let i = 0; i < 10; i++) expect((await get(port, "/")).status).toBe(200);
  });
});
