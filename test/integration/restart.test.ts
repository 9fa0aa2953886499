// Learned tables survive a restart (SPEC §4.4), over real sockets with real Latch processes.
// The story is seeds/003: PHP issues PHPSESSID once, HAProxy's appsession learns it from the
// response; after a restart the table is empty, the client keeps sending its cookie, the
// application never sets it again, and without request-learn every request is balanced anew:
// "sessions scattered". Latch snapshots the table to global.state_dir and reloads it at start.
//
// Every run uses roundrobin over two servers, so a table that was not restored shows at once:
// a client's requests alternate between the servers.

import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Packr } from "msgpackr";
import { BUN, freePort, simpleConfig, spawnLatch, type Spawned } from "../helpers/latch.ts";
import { recordingBackend, request, takeResponse, type RawResponse } from "../helpers/raw.ts";
import { CLI, start } from "../helpers/proc.ts";
import { loadConfigText } from "../../src/config/index.ts";
import type { TablePersist } from "../../src/core/types.ts";
import { encodeSnapshot } from "../../src/state/table-snapshots.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function tmpDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "latch-restart-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function latch(toml: string, port: number): Promise<Spawned> {
  const l = await spawnLatch(toml, port);
  cleanups.push(() => l.stop("SIGKILL"));
  return l;
}

/**
 * A PHP-like application server: a request without PHPSESSID gets `Set-Cookie: PHPSESSID=<a
 * value unique to this server>`; a request that carries one gets no Set-Cookie (the session
 * is already issued, as PHP does without session_regenerate_id).
 */
function phpBackend(name: string) {
  let n = 0;
  const b = recordingBackend(name, ({ head }) => {
    const has = /\r\ncookie:[^\r]*PHPSESSID=/i.test(head);
    const set = has ? "" : `Set-Cookie: PHPSESSID=${name}-${++n}-${Math.random().toString(36).slice(2, 10)}; path=/\r\n`;
    return `HTTP/1.1 200 OK\r\nContent-Length: ${name.length}\r\nX-Server: ${name}\r\n${set}\r\n${name}`;
  });
  cleanups.push(() => b.stop());
  return b;
}

function plainBackend(name: string) {
  const b = recordingBackend(name);
  cleanups.push(() => b.stop());
  return b;
}

function get(port: number, headers: Record<string, string> = {}): Promise<RawResponse> {
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
  return request(port, `GET / HTTP/1.1\r\nHost: shop.example\r\n${extra}Connection: close\r\n\r\n`);
}

const serverOf = (r: RawResponse): string => r.get("x-server") ?? `status ${r.status}`;

function phpSessid(r: RawResponse): string {
  const m = /^PHPSESSID=([^;]*)/.exec(r.get("set-cookie") ?? "");
  if (m === null) throw new Error(`no PHPSESSID set:\n${r.head}`);
  return m[1]!;
}

function learnConfig(port: number, a: number, b: number, global: string, persistExtra = ""): string {
  return simpleConfig({
    port,
    balance: "roundrobin",
    servers: [
      { id: "ap01", port: a },
      { id: "ap02", port: b },
    ],
    persist: `mode = "learn"\ncookie = "PHPSESSID"\nrequest_learn = false\ncapacity = 10000\n${persistExtra}`,
    global,
  });
}

interface Client {
  sessid: string;
  server: string;
}

/**
 * One warm-up request (so the clients' bindings are not what a fresh roundrobin would give),
 * then `n` clients open a session each; checks each is sticky while Latch runs.
 */
async function openSessions(port: number, n: number): Promise<Client[]> {
  await get(port);
  const clients: Client[] = [];
  for (let i = 0; i < n; i++) {
    const r = await get(port);
    clients.push({ sessid: phpSessid(r), server: serverOf(r) });
  }
  for (const c of clients) {
    for (let k = 0; k < 2; k++) {
      const r = await get(port, { Cookie: `PHPSESSID=${c.sessid}` });
      expect(serverOf(r)).toBe(c.server);
      expect(r.get("set-cookie")).toBeUndefined();
    }
  }
  return clients;
}

/** Each client, `rounds` times with its old cookie: where did each request land? */
async function revisit(port: number, clients: Client[], rounds = 3): Promise<{ moved: number; total: number; setCookies: number }> {
  let moved = 0;
  let total = 0;
  let setCookies = 0;
  for (let k = 0; k < rounds; k++) {
    for (const c of clients) {
      const r = await get(port, { Cookie: `PHPSESSID=${c.sessid}` });
      expect(r.status).toBe(200);
      total++;
      if (serverOf(r) !== c.server) moved++;
      if (r.get("set-cookie") !== undefined) setCookies++;
    }
  }
  return { moved, total, setCookies };
}

describe("seeds/003: a restart does not scatter learned sessions", () => {
  test("learn from Set-Cookie, SIGTERM, start again: every client reaches its server without a new Set-Cookie", async () => {
    const [a, b] = [phpBackend("ap01"), phpBackend("ap02")];
    const state = tmpDir();
    const port = await freePort();
    const toml = learnConfig(port, a.port, b.port, `state_dir = ${JSON.stringify(state)}\nsnapshot_interval = "0s"`);

    const first = await latch(toml, port);
    const clients = await openSessions(port, 6);
    expect(new Set(clients.map((c) => c.server))).toEqual(new Set(["ap01", "ap02"]));
    expect(await first.stop("SIGTERM")).toBe(0);
    const file = join(state, "app.table.msgpack");
    expect(existsSync(file)).toBe(true); // saved on stop: periodic saves are off
    expect(first.output()).toContain(`state: saved 1 learned table to ${state}`);

    const second = await latch(toml, port);
    expect(second.output()).toContain(`state: backend app: loaded 7 sessions from ${file}, dropped 0`); // 6 clients + the warm-up
    const [seenA, seenB] = [a.requests.length, b.requests.length];
    const r = await revisit(port, clients);
    expect(r).toEqual({ moved: 0, total: 18, setCookies: 0 });
    // and the backends never re-issued: every request they saw carried the old cookie
    const after = [...a.requests.slice(seenA), ...b.requests.slice(seenB)];
    expect(after).toHaveLength(18);
    expect(after.every((q) => /\r\ncookie: PHPSESSID=ap0[12]-/i.test(q.head))).toBe(true);
    expect(await second.stop()).toBe(0);
  });

  test("control: the same story with the snapshot deleted between runs scatters (the test can fail)", async () => {
    const [a, b] = [phpBackend("ap01"), phpBackend("ap02")];
    const state = tmpDir();
    const port = await freePort();
    const toml = learnConfig(port, a.port, b.port, `state_dir = ${JSON.stringify(state)}\nsnapshot_interval = "0s"`);

    const first = await latch(toml, port);
    const clients = await openSessions(port, 6);
    expect(await first.stop("SIGTERM")).toBe(0);
    unlinkSync(join(state, "app.table.msgpack"));

    const second = await latch(toml, port);
    expect(second.output()).not.toContain("loaded");
    const r = await revisit(port, clients);
    expect(r.moved).toBeGreaterThan(0);
    expect(r.setCookies).toBe(0); // the application does not help: HAProxy's failure exactly
    await second.stop();
  });

  test("control: another state_dir on the second run scatters too", async () => {
    const [a, b] = [phpBackend("ap01"), phpBackend("ap02")];
    const port = await freePort();
    const first = await latch(learnConfig(port, a.port, b.port, `state_dir = ${JSON.stringify(tmpDir())}`), port);
    const clients = await openSessions(port, 4);
    expect(await first.stop()).toBe(0);
    const second = await latch(learnConfig(port, a.port, b.port, `state_dir = ${JSON.stringify(tmpDir())}`), port);
    expect((await revisit(port, clients)).moved).toBeGreaterThan(0);
    await second.stop();
  });
});

describe("periodic snapshots and expiry", () => {
  test('snapshot_interval = "1s": learn, wait, SIGKILL (no stop path), start again: still routed', async () => {
    const [a, b] = [phpBackend("ap01"), phpBackend("ap02")];
    const state = tmpDir();
    const port = await freePort();
    const toml = learnConfig(port, a.port, b.port, `state_dir = ${JSON.stringify(state)}\nsnapshot_interval = "1s"`);

    const first = await latch(toml, port);
    const clients = await openSessions(port, 4);
    await Bun.sleep(2200);
    expect(existsSync(join(state, "app.table.msgpack"))).toBe(true);
    await first.stop("SIGKILL");
    expect(first.output()).not.toContain("stopping");

    const second = await latch(toml, port);
    expect(second.output()).toContain("loaded 5 sessions");
    expect(await revisit(port, clients)).toEqual({ moved: 0, total: 12, setCookies: 0 });
    await second.stop();
  });

  test('with snapshot_interval = "0s" a SIGKILL loses the table (nothing was saved)', async () => {
    const [a, b] = [phpBackend("ap01"), phpBackend("ap02")];
    const state = tmpDir();
    const port = await freePort();
    const toml = learnConfig(port, a.port, b.port, `state_dir = ${JSON.stringify(state)}\nsnapshot_interval = "0s"`);
    const first = await latch(toml, port);
    await openSessions(port, 2);
    await Bun.sleep(1200);
    await first.stop("SIGKILL");
    expect(readdirSync(state)).toEqual([]);
  });

  test('entries past their timeout are dropped on load (timeout = "2s": learn, stop, wait 3 s, start: balanced again)', async () => {
    const [a, b] = [phpBackend("ap01"), phpBackend("ap02")];
    const state = tmpDir();
    const port = await freePort();
    const toml = learnConfig(port, a.port, b.port, `state_dir = ${JSON.stringify(state)}\nsnapshot_interval = "0s"`, 'timeout = "2s"');

    const first = await latch(toml, port);
    const clients = await openSessions(port, 2);
    expect(await first.stop()).toBe(0);
    expect(existsSync(join(state, "app.table.msgpack"))).toBe(true); // the entries were live at stop
    await Bun.sleep(3000);

    const second = await latch(toml, port);
    expect(second.output()).toContain("loaded 0 sessions");
    expect(second.output()).toContain("dropped 3 expired or unknown");
    // not in the table, and request_learn is off: each request is balanced (roundrobin alternates)
    const seen = new Set<string>();
    for (let k = 0; k < 2; k++) seen.add(serverOf(await get(port, { Cookie: `PHPSESSID=${clients[0]!.sessid}` })));
    expect(seen).toEqual(new Set(["ap01", "ap02"]));
    await second.stop();
  });
});

describe("unusable state files: reported, set aside, Latch serves", () => {
  async function startsWith(fileBytes: Uint8Array, expectLine: RegExp | string): Promise<void> {
    const [a, b] = [phpBackend("ap01"), phpBackend("ap02")];
    const state = tmpDir();
    const file = join(state, "app.table.msgpack");
    writeFileSync(file, fileBytes);
    const port = await freePort();
    const toml = learnConfig(port, a.port, b.port, `state_dir = ${JSON.stringify(state)}\nsnapshot_interval = "0s"`);
    const l = await latch(toml, port);
    const out = l.output();
    if (typeof expectLine === "string") expect(out).toContain(expectLine);
    else expect(out).toMatch(expectLine);
    const r = await get(port);
    expect(r.status).toBe(200);
    phpSessid(r);
    expect(await l.stop()).toBe(0);
    // the new table was saved over the path (the rejected file, if any, kept beside it)
    expect(existsSync(file)).toBe(true);
  }

  const warnFor = (what: string) =>
    new RegExp(`warn state: ignoring \\S+/app\\.table\\.msgpack: ${what}.*moved aside to \\S+/app\\.table\\.msgpack\\.corrupt-\\d+`);

  test("random bytes", async () => {
    const junk = new Uint8Array(512).map(() => Math.floor(Math.random() * 256));
    junk[0] = 0xc1; // never valid msgpack, whatever follows
    await startsWith(junk, warnFor("corrupt: not msgpack"));
  });

  test("valid msgpack of something else", async () => {
    await startsWith(new Packr().pack({ users: ["alice"], v: 1 }), warnFor("foreign: not a Latch table snapshot"));
  });

  test("a snapshot of another backend, with other server ids", async () => {
    const cfg = loadConfigText(
      simpleConfig({ servers: [{ id: "x1", port: 1 }, { id: "x2", port: 2 }], persist: 'mode = "learn"\ncookie = "SID"\ncapacity = 100' }).replace(
        /backend\.app|backend = "app"/g,
        (m) => m.replace("app", "billing"),
      ),
      "other.toml",
    );
    const other = cfg.backends.get("billing")!;
    (other.persist as TablePersist).table.storeString("s", 1, Math.floor(Date.now() / 1000));
    await startsWith(encodeSnapshot(other, Math.floor(Date.now() / 1000)), warnFor('foreign: snapshot of backend "billing", not "app"'));
  });

  test("this backend's snapshot from before its servers were replaced: entries dropped, said so", async () => {
    const now = Math.floor(Date.now() / 1000);
    const cfg = loadConfigText(
      simpleConfig({ servers: [{ id: "old1", port: 1 }, { id: "old2", port: 2 }], persist: 'mode = "learn"\ncookie = "PHPSESSID"\ncapacity = 100' }),
      "old.toml",
    );
    const t = (cfg.backends.get("app")!.persist as TablePersist).table;
    t.storeString("s1", 0, now);
    t.storeString("s2", 1, now);
    await startsWith(
      encodeSnapshot(cfg.backends.get("app")!, now),
      /info state: backend app: loaded 0 sessions from \S+\/app\.table\.msgpack, dropped 2 expired or unknown \(servers no longer configured: old1, old2\)/,
    );
  });

  test("a state_dir that cannot be written: Latch serves, says so on stop, exits 0", async () => {
    const [a, b] = [phpBackend("ap01"), phpBackend("ap02")];
    const dir = tmpDir();
    writeFileSync(join(dir, "file"), "not a directory");
    const port = await freePort();
    const l = await latch(learnConfig(port, a.port, b.port, `state_dir = ${JSON.stringify(join(dir, "file", "state"))}`), port);
    expect((await get(port)).status).toBe(200);
    expect(await l.stop()).toBe(0);
    expect(l.output()).toMatch(/error state: cannot save backend app to \S+\/file\/state\/app\.table\.msgpack/);
  });
});

describe("other table modes survive a restart", () => {
  test("source: client addresses 127.0.0.2..5 keep their server", async () => {
    const [a, b] = [plainBackend("ap01"), plainBackend("ap02")];
    const state = tmpDir();
    const port = await freePort();
    const toml = simpleConfig({
      port,
      balance: "roundrobin",
      servers: [
        { id: "ap01", port: a.port },
        { id: "ap02", port: b.port },
      ],
      persist: 'mode = "source"\ncapacity = 1000',
      global: `state_dir = ${JSON.stringify(state)}\nsnapshot_interval = "0s"`,
    });
    const from = (ip: string) => getFrom(port, ip);
    const ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];

    const first = await latch(toml, port);
    const bound = new Map<string, string>();
    for (const ip of ips) bound.set(ip, serverOf(await from(ip)));
    expect(new Set(bound.values())).toEqual(new Set(["ap01", "ap02"]));
    for (const ip of ips) expect(serverOf(await from(ip))).toBe(bound.get(ip)!);
    expect(await first.stop()).toBe(0);

    const second = await latch(toml, port);
    expect(second.output()).toContain("loaded 4 sessions");
    // the ap02 clients first: a fresh roundrobin would send the first request to ap01
    const order = [...ips].sort((x, y) => (bound.get(x) === "ap02" ? -1 : 0) - (bound.get(y) === "ap02" ? -1 : 0));
    for (let k = 0; k < 2; k++) for (const ip of order) expect(serverOf(await from(ip))).toBe(bound.get(ip)!);
    await second.stop();
  });

  test("header: X-Session-ID keys keep their server", async () => {
    const [a, b] = [plainBackend("ap01"), plainBackend("ap02")];
    const state = tmpDir();
    const port = await freePort();
    const toml = simpleConfig({
      port,
      balance: "roundrobin",
      servers: [
        { id: "ap01", port: a.port },
        { id: "ap02", port: b.port },
      ],
      persist: 'mode = "header"\nheader = "X-Session-ID"\ncapacity = 1000',
      global: `state_dir = ${JSON.stringify(state)}\nsnapshot_interval = "0s"`,
    });
    const keys = ["ws-a1b2", "ws-c3d4", "ws-e5f6", "ws-g7h8"];

    const first = await latch(toml, port);
    const bound = new Map<string, string>();
    for (const k of keys) bound.set(k, serverOf(await get(port, { "X-Session-ID": k })));
    expect(new Set(bound.values())).toEqual(new Set(["ap01", "ap02"]));
    expect(await first.stop()).toBe(0);

    const second = await latch(toml, port);
    expect(second.output()).toContain("loaded 4 sessions");
    const order = [...keys].sort((x, y) => (bound.get(x) === "ap02" ? -1 : 0) - (bound.get(y) === "ap02" ? -1 : 0));
    for (let k = 0; k < 2; k++) for (const key of order) expect(serverOf(await get(port, { "X-Session-ID": key }))).toBe(bound.get(key)!);
    await second.stop();
  });
});

describe("the default state_dir and reload", () => {
  test('state_dir ".latch" is next to the config file, whatever the working directory; SIGHUP keeps learned sessions', async () => {
    const [a, b, c] = [phpBackend("ap01"), phpBackend("ap02"), phpBackend("ap00")];
    const confDir = tmpDir();
    const cwd = tmpDir();
    const file = join(confDir, "latch.toml");
    const port = await freePort();
    writeFileSync(file, learnConfig(port, a.port, b.port, ""));
    const run = () => start([BUN, CLI, "run", file], "listening", { cwd });

    const first = await run();
    cleanups.push(() => first.stop("SIGKILL"));
    const clients = await openSessions(port, 4);

    // reload with a new server in front: indexes shift, sessions follow their server's id
    writeFileSync(
      file,
      simpleConfig({
        port,
        balance: "roundrobin",
        servers: [
          { id: "ap00", port: c.port },
          { id: "ap01", port: a.port },
          { id: "ap02", port: b.port },
        ],
        persist: 'mode = "learn"\ncookie = "PHPSESSID"\nrequest_learn = false\ncapacity = 10000',
      }),
    );
    first.proc.kill("SIGHUP");
    const until = Date.now() + 5000;
    while (!first.output().includes("reloaded") && Date.now() < until) await Bun.sleep(20);
    expect(first.output()).toContain(`reloaded ${file}`);
    expect(await revisit(port, clients, 2)).toEqual({ moved: 0, total: 8, setCookies: 0 });
    expect(c.requests).toHaveLength(0);
    expect(existsSync(join(confDir, ".latch", "app.table.msgpack"))).toBe(true); // saved on reload
    expect(await first.stop()).toBe(0);
    expect(existsSync(join(cwd, ".latch"))).toBe(false);

    const second = await run();
    cleanups.push(() => second.stop("SIGKILL"));
    expect(second.output()).toContain(`loaded 5 sessions from ${join(confDir, ".latch", "app.table.msgpack")}`);
    expect(await revisit(port, clients, 2)).toEqual({ moved: 0, total: 8, setCookies: 0 });
    expect(await second.stop()).toBe(0);
  });
});

/** One request from a given loopback source address (node:net can bind the local side). */
function getFrom(port: number, localAddress: string): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const s = net.createConnection({ host: "127.0.0.1", port, localAddress }, () => {
      s.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    });
    s.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
    });
    s.on("error", reject);
    s.on("close", () => {
      const got = takeResponse(buf, false, true);
      if (got === null) reject(new Error(`no response from ${localAddress}: ${buf.toString("latin1")}`));
      else resolve(got.res);
    });
  });
}
