// Proxy-managed sessions (SPEC §5, Apache mod_session) over real sockets: a real Latch in
// front of a real backend that reads the session request header (`X-Session: user=alice`)
// and answers with `X-Replace-Session` / `X-Session-Renew`. One list of cases runs for each
// store (sealed cookie; sqlite in a temp state_dir; redis against a real redis-server started
// here, skipped only when the binary is absent), then what is particular to each store:
// rotation and every bad-cookie shape (cookie), opaque ids, renewal and restart (sqlite),
// sharing between instances and pipelining over the async open (redis), and `latch check`.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfigText } from "../../src/config/index.ts";
import type { SessionStats } from "../../src/session/types.ts";
import { BUN, freePort, spawnLatch, startLatch, type Running } from "../helpers/latch.ts";
import { CLI, run } from "../helpers/proc.ts";
import { RawClient, recordingBackend, request, type RawResponse } from "../helpers/raw.ts";
import { REDIS_BIN, startRedis, type RedisServer } from "../helpers/redis.ts";

type Store = "cookie" | "sqlite" | "redis";
const STORES: Store[] = ["cookie", "sqlite", "redis"];
const HAVE_REDIS = REDIS_BIN !== null;

const PASS = "correct horse battery staple #1";
const OLD = "the old passphrase, retired soon";
const NEW = "the new passphrase, sealing now!";

let dir = "";
let cert = "";
let key = "";
let redis: RedisServer | null = null;
let backend: ReturnType<typeof app>;
let backendPort = 0;
const cleanups: (() => unknown)[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "latch-sessions-"));
  cert = join(dir, "cert.pem");
  key = join(dir, "key.pem");
  const r = Bun.spawnSync([
    "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
  ]);
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  backend = app();
  backendPort = backend.port;
  if (HAVE_REDIS) redis = await startRedis();
});

afterAll(async () => {
  try {
    // one failing cleanup must not leave the rest (redis-server, backends) running
    while (cleanups.length > 0) await Promise.resolve().then(cleanups.pop()!).catch((e) => console.error("cleanup:", e));
  } finally {
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}, 30_000);

// ---------------------------------------------------------------------------------------------
// the backend: reports the session headers it received, changes the session on request
//   ?set=<v>   X-Replace-Session: <v>      (&hdr=<name>: under another letter case)
//   ?del=1     X-Replace-Session: (empty)  delete
//   ?renew=1   X-Session-Renew: 1          (with ?set: a login)
//   ?incr=1    X-Replace-Session: user=alice&n=<n+1>, n read from the session it received
//   ?cc=<v>    Cache-Control: <v>

function app() {
  const b = recordingBackend("app", ({ head, body: reqBody }) => {
    const lines = head.split("\r\n");
    const url = new URL(lines[0]!.split(" ")[1]!, "http://backend");
    // every copy, whatever the letter case of its name
    const session = lines
      .slice(1)
      .filter((l) => /^x-session\s*:/i.test(l))
      .map((l) => l.slice(l.indexOf(":") + 1).trim());
    const q = url.searchParams;
    const out: string[] = [];
    // non-ASCII goes out as raw UTF-8 bytes (the response is written as latin1)
    if (q.has("set")) out.push(`${q.get("hdr") ?? "X-Replace-Session"}: ${Buffer.from(q.get("set")!, "utf8").toString("latin1")}`);
    if (q.has("del")) out.push("X-Replace-Session:");
    if (q.has("renew")) out.push("X-Session-Renew: 1");
    if (q.has("incr")) {
      const n = Number(new URLSearchParams(session[0] ?? "").get("n") ?? "0");
      out.push(`X-Replace-Session: user=alice&n=${n + 1}`);
    }
    if (q.has("cc")) out.push(`Cache-Control: ${q.get("cc")}`);
    const body = JSON.stringify({ path: url.pathname, session, received: reqBody.length, sum: sum(reqBody) });
    return `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${out.map((l) => `${l}\r\n`).join("")}\r\n${body}`;
  });
  cleanups.push(() => b.stop());
  return b;
}

function sum(b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < b.length; i++) s = (s * 31 + b[i]!) >>> 0;
  return s;
}

// ---------------------------------------------------------------------------------------------
// the client

interface Reply {
  res: RawResponse;
  status: number;
  /** the session header values the backend received (every copy) */
  session: string[];
  /** the session Set-Cookie line, if any */
  setCookie: string | undefined;
  /** the new cookie value; "" when the cookie was cleared (Max-Age=0); undefined: no Set-Cookie */
  cookie: string | undefined;
}

function toReply(res: RawResponse, name = "session"): Reply {
  let session: string[] = [];
  if (res.status === 200) session = (JSON.parse(res.body.toString()) as { session: string[] }).session;
  const setCookie = res.all("set-cookie").find((v) => v.startsWith(`${name}=`));
  let cookie: string | undefined;
  if (setCookie !== undefined) cookie = /;\s*Max-Age=0(;|$)/i.test(setCookie) ? "" : setCookie.slice(name.length + 1).split(";")[0];
  return { res, status: res.status, session, setCookie, cookie };
}

function raw(target: string, opts: { cookie?: string | null; headers?: string[]; name?: string; close?: boolean } = {}): string {
  const lines = [`GET ${target} HTTP/1.1`, "Host: app.test"];
  if (opts.cookie != null) lines.push(`Cookie: ${opts.name ?? "session"}=${opts.cookie}`);
  if (opts.headers) lines.push(...opts.headers);
  if (opts.close) lines.push("Connection: close");
  return `${lines.join("\r\n")}\r\n\r\n`;
}

/** One request on a new connection. */
async function get(port: number, target: string, opts: { cookie?: string | null; headers?: string[]; name?: string } = {}): Promise<Reply> {
  return toReply(await request(port, raw(target, opts)), opts.name);
}

const enc = encodeURIComponent;

function statsOf(l: Running, listener = 0, path = "/"): SessionStats {
  return l.proxy.config.listeners[listener]!.routes.find((r) => r.path === path)!.session!.stats;
}

async function stopLatch(l: Running): Promise<void> {
  await l.stop();
  for (const m of l.proxy.config.sessions.values()) {
    await m.settled();
    m.close();
  }
}

function started(toml: string): Running {
  const l = startLatch(toml);
  cleanups.push(() => stopLatch(l));
  return l;
}

// ---------------------------------------------------------------------------------------------
// configs

function sessionTable(store: Store, name: string, opts: { lifetimes?: string; extra?: string; passphrases?: string[]; redisUrl?: string } = {}): string {
  const passphrases = opts.passphrases ?? [PASS];
  return `
[session.${name}]
store = "${store}"
${store === "cookie" ? `passphrases = [${passphrases.map((p) => JSON.stringify(p)).join(", ")}]` : ""}
${store === "redis" ? `redis = "${opts.redisUrl ?? redis!.url}"` : ""}
${opts.lifetimes ?? `idle = "10m"`}
${opts.extra ?? ""}
`;
}

function route(path: string, session: string): string {
  return `
  [[listen.route]]
  path = "${path}"
  backend = "app"
  session = "${session}"
`;
}

function config(o: { stateDir: string; listeners: string; sessions: string; servers?: string }): string {
  return `
[global]
state_dir = "${o.stateDir}"

${o.listeners}

[backend.app]
${o.servers ?? ""}
  [[backend.app.server]]
  id = "a1"
  address = "127.0.0.1:${backendPort}"

${o.sessions}
`;
}

function listener(name: string, routes: string, opts: { port?: number; tls?: boolean } = {}): string {
  return `
[[listen]]
name = "${name}"
bind = "127.0.0.1:${opts.port ?? 0}"
${opts.tls ? `tls = { cert = "${cert}", key = "${key}" }` : ""}
${routes}
`;
}

function stateDir(): string {
  const d = mkdtempSync(join(dir, "state-"));
  return d;
}

/** The standard Latch of a store: `web` (/ -> main, /foreign -> other), `tls` (/ -> main), `sec` (/ -> sec, secure = true). */
function mainConfig(store: Store, sd: string): string {
  return config({
    stateDir: sd,
    listeners:
      listener("web", route("/foreign", "other") + route("/", "main")) +
      listener("tls", route("/", "main"), { tls: true }) +
      listener("sec", route("/", "sec")),
    sessions: sessionTable(store, "main") + sessionTable(store, "other") + sessionTable(store, "sec", { extra: "secure = true" }),
  });
}

function expectCleared(r: Reply): void {
  expect(r.setCookie).toBeDefined();
  expect(r.setCookie!).toMatch(/^session=; Path=\/; Max-Age=0; HttpOnly; SameSite=Lax$/);
  expect(r.cookie).toBe("");
}

/** base64url text of a server-side id: ≥ 128 bits, nothing else in it */
function expectOpaqueId(value: string, data: string[]): void {
  expect(value).toMatch(/^[A-Za-z0-9_-]+$/);
  const bytes = Buffer.from(value, "base64url");
  expect(bytes.length * 8).toBeGreaterThanOrEqual(128);
  for (const d of data) {
    expect(value).not.toContain(d);
    expect(bytes.toString("latin1")).not.toContain(d);
  }
}

// =============================================================================================
// the same cases for every store

for (const store of STORES) {
  describe.skipIf(store === "redis" && !HAVE_REDIS)(`store = "${store}"`, () => {
    let l: Running;
    let port = 0;
    let sd = "";

    beforeAll(() => {
      sd = stateDir();
      l = started(mainConfig(store, sd));
      port = l.ports["web"]!;
    });

    test("round trip: no session, create, read, update, delete", async () => {
      const st = statsOf(l);
      const before = { ...st };

      // no cookie: the backend sees no session, nothing is set
      const r0 = await get(port, "/");
      expect(r0.status).toBe(200);
      expect(r0.session).toEqual([]);
      expect(r0.setCookie).toBeUndefined();

      // the backend creates the session
      const r1 = await get(port, `/login?set=${enc("user=alice")}`);
      expect(r1.status).toBe(200);
      expect(r1.session).toEqual([]);
      expect(r1.res.get("x-replace-session")).toBeUndefined();
      expect(r1.res.head.toLowerCase()).not.toContain("x-replace-session");
      expect(r1.setCookie).toMatch(/^session=[A-Za-z0-9_-]+; Path=\/; Max-Age=600; HttpOnly; SameSite=Lax$/);
      expect(r1.setCookie).not.toContain("Secure");
      expect(r1.res.all("cache-control")).toEqual(["private"]);
      const c1 = r1.cookie!;
      expect(c1.length).toBeGreaterThan(0);
      if (store !== "cookie") expectOpaqueId(c1, ["alice", "user"]);

      // the next request carries it to the backend
      const r2 = await get(port, "/page", { cookie: c1 });
      expect(r2.status).toBe(200);
      expect(r2.session).toEqual(["user=alice"]);
      expect(r2.setCookie).toBeUndefined(); // unchanged, update_interval not passed
      expect(r2.res.get("cache-control")).toBeUndefined();

      // update
      const r3 = await get(port, `/cart?set=${enc("user=alice&cart=3")}`, { cookie: c1 });
      expect(r3.session).toEqual(["user=alice"]);
      expect(r3.setCookie).toBeDefined();
      expect(r3.res.all("cache-control")).toEqual(["private"]);
      const c3 = r3.cookie!;
      if (store === "cookie") expect(c3).not.toBe(c1);
      else expect(c3).toBe(c1); // same id, new data
      const r4 = await get(port, "/page", { cookie: c3 });
      expect(r4.session).toEqual(["user=alice&cart=3"]);

      // delete: the cookie is cleared, and the client that obeys it has no session
      const r5 = await get(port, "/logout?del=1", { cookie: c3 });
      expect(r5.status).toBe(200);
      expect(r5.session).toEqual(["user=alice&cart=3"]);
      expectCleared(r5);
      expect(r5.res.all("cache-control")).toEqual(["private"]);
      expect(r5.res.head.toLowerCase()).not.toContain("x-replace-session");
      const r6 = await get(port, "/page");
      expect(r6.session).toEqual([]);
      if (store !== "cookie") {
        // the row is gone: the old id is an empty session (and is cleared again)
        const r7 = await get(port, "/page", { cookie: c3 });
        expect(r7.status).toBe(200);
        expect(r7.session).toEqual([]);
        expectCleared(r7);
      }

      expect(st.created - before.created).toBe(1);
      expect(st.updated - before.updated).toBe(1);
      expect(st.deleted - before.deleted).toBe(1);
      expect(st.opened - before.opened).toBe(4);
    });

    test("the update header in another letter case is taken and stripped too; a backend Cache-Control is left alone", async () => {
      const r1 = await get(port, `/?set=${enc("user=bob")}&hdr=x-REPLACE-session`);
      expect(r1.res.head.toLowerCase()).not.toContain("replace-session");
      expect(r1.cookie).toBeTruthy();
      expect((await get(port, "/", { cookie: r1.cookie })).session).toEqual(["user=bob"]);
      // the backend already said no-store: no second Cache-Control
      const r2 = await get(port, `/?set=${enc("user=carol")}&cc=no-store`);
      expect(r2.cookie).toBeTruthy();
      expect(r2.res.all("cache-control")).toEqual(["no-store"]);
      // the renew header never reaches the client either
      const r3 = await get(port, "/?renew=1", { cookie: r2.cookie });
      expect(r3.res.head.toLowerCase()).not.toContain("x-session-renew");
    });

    test("Secure: off on a plain listener, on behind TLS, on with secure = true", async () => {
      const plain = await get(port, `/?set=${enc("user=alice")}`);
      expect(plain.setCookie).not.toContain("Secure");

      const res = await fetch(`https://127.0.0.1:${l.ports["tls"]}/?set=${enc("user=alice")}`, { tls: { rejectUnauthorized: false } });
      expect(res.status).toBe(200);
      const sc = res.headers.getSetCookie().find((v) => v.startsWith("session="))!;
      expect(sc).toMatch(/^session=[A-Za-z0-9_-]+; Path=\/; Max-Age=600; HttpOnly; Secure; SameSite=Lax$/);
      expect(res.headers.get("cache-control")).toBe("private");
      expect(res.headers.get("x-replace-session")).toBeNull();
      // and the cookie works there
      const value = sc.slice("session=".length).split(";")[0]!;
      const again = await fetch(`https://127.0.0.1:${l.ports["tls"]}/`, { tls: { rejectUnauthorized: false }, headers: { cookie: `session=${value}` } });
      expect(((await again.json()) as { session: string[] }).session).toEqual(["user=alice"]);

      const sec = await get(l.ports["sec"]!, `/?set=${enc("user=alice")}`);
      expect(sec.setCookie).toMatch(/^session=[A-Za-z0-9_-]+; Path=\/; Max-Age=600; HttpOnly; Secure; SameSite=Lax$/);
    });

    test("the client can never inject the session header", async () => {
      const forged = ["X-Session: user=admin", "x-session: user=admin", "X-SESSION: user=admin", "x-SeSsIoN: user=admin&role=root"];
      const keep = "X-Session-Extra: kept";

      // no cookie
      const r0 = await get(port, "/", { headers: [...forged, keep] });
      expect(r0.status).toBe(200);
      expect(r0.session).toEqual([]);

      // twice, around a real session: only the real one arrives
      const c = (await get(port, `/?set=${enc("user=alice")}`)).cookie!;
      const r1 = await toReply(
        await request(port, `GET / HTTP/1.1\r\nX-Session: user=admin\r\nHost: app.test\r\nCookie: a=1; session=${c}; b=2\r\nx-session: user=admin\r\n${keep}\r\n\r\n`),
      );
      expect(r1.session).toEqual(["user=alice"]);

      // with a bad cookie: nothing
      const r2 = await get(port, "/", { cookie: "garbage", headers: forged });
      expect(r2.session).toEqual([]);

      // nothing forged reached the backend, the unrelated header did
      const b = backend.requests;
      for (const req of b.slice(-4)) {
        expect(req.head).not.toContain("admin");
      }
      expect(b.at(-2)!.head).toContain(keep);

      // a whitespace-before-colon spelling is refused or does not pass as the session
      const r3 = await request(port, "GET / HTTP/1.1\r\nHost: app.test\r\nX-Session : user=admin\r\n\r\n");
      if (r3.status === 200) expect(toReply(r3).session).toEqual([]);
      else expect(r3.status).toBe(400);
    });

    test("garbage, truncated and foreign cookies are an empty session: 200, cleared, counted", async () => {
      const st = statsOf(l);
      const good = (await get(port, `/?set=${enc("user=alice&cart=3")}`)).cookie!;
      const foreign = (await get(port, `/foreign?set=${enc("user=mallory")}`)).cookie!;
      expect((await get(port, "/foreign", { cookie: foreign })).session).toEqual(["user=mallory"]);
      const idShaped = Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString("base64url");
      const bad = [
        foreign, // sealed / stored for another [session.NAME]
        "garbage",
        "A",
        "!!!!",
        "%00%01%02",
        "x".repeat(1000),
        idShaped, // 32 base64url characters: an id shape no store knows
        Buffer.from(crypto.getRandomValues(new Uint8Array(80))).toString("base64url"),
        good.slice(0, -1),
        good.slice(0, Math.floor(good.length / 2)),
        good + "A",
        good.slice(1),
      ];
      const before = { ...st };
      for (const value of bad) {
        const r = await get(port, "/", { cookie: value });
        expect(r.status).toBe(200);
        expect(r.session).toEqual([]);
        expectCleared(r);
      }
      expect(st.invalid - before.invalid).toBe(bad.length);
      expect(st.cleared - before.cleared).toBe(bad.length);
      if (store !== "cookie") expect(st.unknown - before.unknown).toBeGreaterThanOrEqual(2); // the foreign id, the random id
      // an empty value is no session at all
      const none = before.none;
      const e = await get(port, "/", { cookie: "" });
      expect(e.status).toBe(200);
      expect(e.setCookie).toBeUndefined();
      expect(st.none).toBe(none + 1);
      // the good one still works, and a bad cookie with data creates a fresh session
      expect((await get(port, "/", { cookie: good })).session).toEqual(["user=alice&cart=3"]);
      const fresh = await get(port, `/?set=${enc("user=eve")}`, { cookie: idShaped });
      expect(fresh.cookie).toBeTruthy();
      expect(fresh.cookie).not.toBe(idShaped); // never adopts an id it did not issue
      expect((await get(port, "/", { cookie: fresh.cookie })).session).toEqual(["user=eve"]);
    });

    test("renewal: a new id / a fresh seal; for server-side stores the old id stops working", async () => {
      const st = statsOf(l);
      const anon = (await get(port, `/?set=${enc("cart=2")}`)).cookie!;
      const before = st.renewed;
      // the login: new data and the renew signal together
      const login = await get(port, `/login?set=${enc("user=alice&cart=2")}&renew=1`, { cookie: anon });
      expect(login.status).toBe(200);
      expect(login.session).toEqual(["cart=2"]);
      expect(login.res.head.toLowerCase()).not.toContain("x-session-renew");
      expect(login.res.all("cache-control")).toEqual(["private"]);
      const renewed = login.cookie!;
      expect(renewed).toBeTruthy();
      expect(renewed).not.toBe(anon);
      expect(st.renewed).toBe(before + 1);
      expect((await get(port, "/", { cookie: renewed })).session).toEqual(["user=alice&cart=2"]);

      // renew alone keeps the data under the next id
      const again = await get(port, "/?renew=1", { cookie: renewed });
      expect(again.cookie).toBeTruthy();
      expect(again.cookie).not.toBe(renewed);
      expect((await get(port, "/", { cookie: again.cookie })).session).toEqual(["user=alice&cart=2"]);

      if (store !== "cookie") {
        expectOpaqueId(renewed, ["alice"]);
        for (const old of [anon, renewed]) {
          const r = await get(port, "/", { cookie: old });
          expect(r.status).toBe(200);
          expect(r.session).toEqual([]);
          expectCleared(r);
        }
      }
    });

    test("a request retried on another server (the first refused the connection) keeps its session, once", async () => {
      const dead = await freePort(); // nothing listens there
      const l2 = started(
        config({
          stateDir: stateDir(),
          listeners: listener("web", route("/", "main")),
          sessions: sessionTable(store, "main"),
          servers: `  [[backend.app.server]]\n  id = "dead"\n  address = "127.0.0.1:${dead}"\n`,
        }),
      );
      const p = l2.ports["web"]!;
      const st = statsOf(l2);
      let cookie = (await get(p, `/?set=${enc("user=alice")}`)).cookie!;
      expect(cookie).toBeTruthy();
      const opened = st.opened;
      // round robin: every other request meets the dead server first and is retried
      for (let i = 0; i < 4; i++) {
        const pending = get(p, `/n${i}?set=${enc(`user=alice&n=${i}`)}`, { cookie }).catch((e: Error) => e);
        const r = await Promise.race([pending, Bun.sleep(3000).then(() => null)]);
        if (r === null || r instanceof Error) throw new Error(`request ${i} got no answer${r ? `: ${r.message}` : ""}`);
        expect(r.status).toBe(200);
        expect(r.session).toEqual([i === 0 ? "user=alice" : `user=alice&n=${i - 1}`]);
        expect(r.cookie).toBeTruthy();
        cookie = r.cookie!;
        expect((await get(p, "/", { cookie })).session).toEqual([`user=alice&n=${i}`]);
      }
      expect(st.opened - opened).toBe(8);
    });

    test("session data in one spelling: escapes kept, raw UTF-8 from the backend read as UTF-8", async () => {
      const cases: [string, string][] = [
        ["user=alice&note=a+b%26c%3Dd", "user=alice&note=a+b%26c%3Dd"],
        ["name=%C3%A4%E2%82%AC", "name=%C3%A4%E2%82%AC"],
        ["name=ä€", "name=%C3%A4%E2%82%AC"], // raw UTF-8 bytes in the header
        ["b=2&a=1&b=3&gone&empty=", "b=3&a=1"], // mod_session rules: last wins, bare key and empty value unset
      ];
      for (const [written, seen] of cases) {
        const c = (await get(port, `/?set=${enc(written)}`)).cookie!;
        expect(c).toBeTruthy();
        expect((await get(port, "/", { cookie: c })).session).toEqual([seen]);
      }
      // nothing valid in it: no session created
      const none = await get(port, `/?set=${enc("%zz=1&=2")}`);
      expect(none.setCookie).toBeUndefined();
    });

    test("a large request body (1 MB, and chunked in pieces) waits with the session and arrives whole", async () => {
      const c = (await get(port, `/?set=${enc("user=alice")}`)).cookie!;
      const body = Buffer.alloc(1 << 20);
      for (let i = 0; i < body.length; i++) body[i] = (i * 7) & 0xff;
      const client = await RawClient.connect(port);
      // one write: most of the body is there while the session is being opened
      client.write(Buffer.concat([Buffer.from(`POST /upload HTTP/1.1\r\nHost: app.test\r\nCookie: session=${c}\r\nContent-Length: ${body.length}\r\n\r\n`), body]));
      const r1 = toReply(await client.response({ ms: 10_000 }));
      expect(r1.status).toBe(200);
      expect(r1.session).toEqual(["user=alice"]);
      const got = JSON.parse(r1.res.body.toString()) as { received: number; sum: number };
      expect(got.received).toBe(body.length);
      expect(got.sum).toBe(sum(body));
      // chunked, in separate writes after the head, then a pipelined GET
      client.write(`POST /chunks HTTP/1.1\r\nHost: app.test\r\nCookie: session=${c}\r\nTransfer-Encoding: chunked\r\n\r\n`);
      client.write("5\r\nhello\r\n");
      await Bun.sleep(5);
      client.write("6\r\n world\r\n0\r\n\r\n" + raw("/after", { cookie: c }));
      const r2 = toReply(await client.response());
      expect(r2.session).toEqual(["user=alice"]);
      expect((JSON.parse(r2.res.body.toString()) as { received: number }).received).toBe(11);
      const r3 = toReply(await client.response());
      expect((JSON.parse(r3.res.body.toString()) as { path: string }).path).toBe("/after");
      expect(r3.session).toEqual(["user=alice"]);
      client.close();
    });

    test("idle and absolute expiry: an empty session, a clearing Set-Cookie, 200", async () => {
      const l2 = started(
        config({
          stateDir: stateDir(),
          listeners: listener("web", route("/abs", "abs") + route("/", "idle")),
          sessions:
            sessionTable(store, "idle", { lifetimes: `idle = "2s"\nupdate_interval = "0s"` }) +
            sessionTable(store, "abs", { lifetimes: `max_age = "3s"\nupdate_interval = "0s"` }),
        }),
      );
      const p = l2.ports["web"]!;
      const idleStats = statsOf(l2, 0, "/");
      const absStats = statsOf(l2, 0, "/abs");
      const t0 = Date.now();
      const a = await get(p, `/?set=${enc("user=a")}`); // left alone: idles out
      const c = await get(p, `/?set=${enc("user=c")}`); // kept in use: lives on
      const b = await get(p, `/abs?set=${enc("user=b")}`); // kept in use: max_age ends it anyway
      expect(a.setCookie).toMatch(/; Max-Age=2; /);
      expect(Number(/Max-Age=(\d+)/.exec(b.setCookie!)![1])).toBeGreaterThanOrEqual(1);
      expect(Number(/Max-Age=(\d+)/.exec(b.setCookie!)![1])).toBeLessThanOrEqual(3);
      let cc = c.cookie!;
      let bc = b.cookie!;
      while (Date.now() - t0 < 3600) {
        await Bun.sleep(500);
        const rc = await get(p, "/", { cookie: cc });
        expect(rc.session).toEqual(["user=c"]);
        if (rc.cookie) cc = rc.cookie; // the cookie store re-seals the last-seen time
        if (Date.now() - t0 < 1800) {
          const rb = await get(p, "/abs", { cookie: bc });
          expect(rb.session).toEqual(["user=b"]);
          if (rb.cookie) bc = rb.cookie;
        }
      }
      const expiredBefore = idleStats.expired + idleStats.unknown + absStats.expired + absStats.unknown;
      for (const [path, value] of [["/", a.cookie!], ["/abs", bc]] as const) {
        const r = await get(p, path, { cookie: value });
        expect(r.status).toBe(200);
        expect(r.session).toEqual([]);
        expectCleared(r);
      }
      // redis forgets the keys itself (TTL): they come back as unknown ids
      expect(idleStats.expired + idleStats.unknown + absStats.expired + absStats.unknown - expiredBefore).toBe(2);
      if (store !== "redis") expect(idleStats.expired + absStats.expired).toBeGreaterThanOrEqual(2);
      expect((await get(p, "/", { cookie: cc })).session).toEqual(["user=c"]);
    }, 15_000);
  });
}


// =============================================================================================
// store = "cookie": passphrase rotation and every bad-cookie shape

describe(`store = "cookie": keys and bad cookies`, () => {
  const cookieConfig = (sd: string, opts: { passphrases?: string[]; extra?: string } = {}) =>
    config({
      stateDir: sd,
      listeners: listener("web", route("/", "main")),
      sessions: sessionTable("cookie", "main", { lifetimes: "", ...opts }),
    });

  test("rotation through the proxy: [old] -> [new, old] opens and re-seals -> [new] only: the oldest cookie is empty", async () => {
    const sd = stateDir();
    const l = started(cookieConfig(sd, { passphrases: [OLD] }));
    const port = l.ports["web"]!;
    const c0 = (await get(port, `/?set=${enc("user=alice")}`)).cookie!;
    expect(c0).toBeTruthy();
    expect((await get(port, "/", { cookie: c0 })).session).toEqual(["user=alice"]);

    // the new passphrase first, the old one after it
    l.proxy.reload(loadConfigText(cookieConfig(sd, { passphrases: [NEW, OLD] }), "rotate.toml"));
    const st1 = statsOf(l);
    const r1 = await get(port, "/", { cookie: c0 });
    expect(r1.status).toBe(200);
    expect(r1.session).toEqual(["user=alice"]);
    expect(r1.cookie).toBeTruthy();
    expect(r1.cookie).not.toBe(c0);
    expect(r1.setCookie).toMatch(/^session=[A-Za-z0-9_-]+; Path=\/; HttpOnly; SameSite=Lax$/); // no lifetime: a browser-session cookie
    expect(r1.res.all("cache-control")).toEqual(["private"]);
    expect(st1.resealed).toBe(1);
    const c1 = r1.cookie!;
    const r1b = await get(port, "/", { cookie: c1 });
    expect(r1b.session).toEqual(["user=alice"]);
    expect(r1b.setCookie).toBeUndefined(); // sealed with the first passphrase: nothing to redo
    expect(st1.resealed).toBe(1);

    // the old passphrase retired
    l.proxy.reload(loadConfigText(cookieConfig(sd, { passphrases: [NEW] }), "rotate.toml"));
    const st2 = statsOf(l);
    const r2 = await get(port, "/", { cookie: c0 });
    expect(r2.status).toBe(200);
    expect(r2.session).toEqual([]);
    expectCleared(r2);
    expect(st2.invalid).toBe(1);
    expect((await get(port, "/", { cookie: c1 })).session).toEqual(["user=alice"]);
  });

  test("bit flips at every byte, every truncation, garbage, another cookie name, another session: 200, empty, counted", async () => {
    const sd = stateDir();
    const l = started(
      config({
        stateDir: sd,
        listeners: listener("web", route("/other", "other") + route("/", "main")),
        sessions: sessionTable("cookie", "main", { lifetimes: "" }) + sessionTable("cookie", "other", { lifetimes: "" }),
      }),
    );
    const port = l.ports["web"]!;
    // the same passphrase and session name, sealed under the cookie name "sid": only the AAD differs
    const renamedLatch = started(cookieConfig(sd, { extra: `cookie = "sid"` }));
    const renamed = (await get(renamedLatch.ports["web"]!, `/?set=${enc("user=alice&cart=3")}`, { name: "sid" })).cookie!;
    expect(renamed).toBeTruthy();
    expect((await get(renamedLatch.ports["web"]!, "/", { cookie: renamed, name: "sid" })).session).toEqual(["user=alice&cart=3"]);
    // the same passphrase and cookie name, another [session.NAME]: another key
    const foreign = (await get(port, `/other?set=${enc("user=alice&cart=3")}`)).cookie!;
    expect((await get(port, "/other", { cookie: foreign })).session).toEqual(["user=alice&cart=3"]);

    const good = (await get(port, `/?set=${enc("user=alice&cart=3")}`)).cookie!;
    const bytes = Buffer.from(good, "base64url");
    expect(bytes.toString("base64url")).toBe(good);
    const shapes: string[] = [];
    for (let i = 0; i < bytes.length; i++) {
      for (const bit of [i % 8, (i + 4) % 8]) {
        const b = Buffer.from(bytes);
        b[i]! ^= 1 << bit;
        shapes.push(b.toString("base64url"));
      }
    }
    for (let n = 1; n < good.length; n++) shapes.push(good.slice(0, n));
    for (let n = 1; n < bytes.length; n++) shapes.push(bytes.subarray(n).toString("base64url")); // front cut off
    shapes.push(good + "A", good + good, `${good}=`, good.replaceAll("-", "+").replaceAll("_", "/") + "==");
    shapes.push("garbage", "=", "%%%", "a b", Buffer.alloc(bytes.length).toString("base64url"), Buffer.from(crypto.getRandomValues(new Uint8Array(bytes.length))).toString("base64url"));
    shapes.push(renamed, foreign);
    const distinct = shapes.filter((s) => s !== good && s.length > 0);
    expect(distinct.length).toBe(shapes.length);

    const st = statsOf(l);
    const before = { ...st };
    const c = await RawClient.connect(port);
    let n = 0;
    for (const v of shapes) {
      c.write(raw("/", { cookie: v }));
      const r = toReply(await c.response());
      if (r.status !== 200 || r.session.length !== 0 || r.cookie !== "") throw new Error(`cookie ${JSON.stringify(v)}: ${r.res.head}\n${r.res.body}`);
      n++;
    }
    c.close();
    expect(n).toBe(shapes.length);
    expect(st.invalid - before.invalid).toBe(shapes.length);
    expect(st.cleared - before.cleared).toBe(shapes.length);
    expect(st.opened - before.opened).toBe(0);
    expect((await get(port, "/", { cookie: good })).session).toEqual(["user=alice&cart=3"]);
    // RFC 6265 quoted values: the quotes are not part of the value
    expect((await get(port, "/", { cookie: `"${good}"` })).session).toEqual(["user=alice&cart=3"]);
    expect(st.opened - before.opened).toBe(2);
    const empty = await get(port, "/", { cookie: '""' });
    expect(empty.status).toBe(200);
    expect(empty.session).toEqual([]);
    expect(empty.setCookie).toBeUndefined();
  });
});

// =============================================================================================
// server-side stores: the file, sharing, pipelining over one connection

/** Several requests in one write, each reading and changing the session: answered in order. */
async function pipelinedCase(store: Store): Promise<void> {
  const l = started(config({ stateDir: stateDir(), listeners: listener("web", route("/", "main")), sessions: sessionTable(store, "main") }));
  const port = l.ports["web"]!;
  const id = (await get(port, `/?set=${enc("user=alice&n=0")}`)).cookie!;
  expect(id).toBeTruthy();
  const c = await RawClient.connect(port);
  const N = 8;
  c.write(Array.from({ length: N }, (_, i) => raw(`/step${i}?incr=1`, { cookie: id })).join(""));
  for (let i = 0; i < N; i++) {
    const r = toReply(await c.response());
    expect(r.status).toBe(200);
    expect((JSON.parse(r.res.body.toString()) as { path: string }).path).toBe(`/step${i}`);
    expect(r.session).toEqual([`user=alice&n=${i}`]);
    expect(r.cookie).toBe(id); // the same id, new data
  }
  // written one request at a time without waiting: bytes arriving while a session is being opened
  for (let i = N; i < 2 * N; i++) c.write(raw(`/step${i}?incr=1`, { cookie: id }));
  for (let i = N; i < 2 * N; i++) {
    const r = toReply(await c.response());
    expect((JSON.parse(r.res.body.toString()) as { path: string }).path).toBe(`/step${i}`);
    expect(r.session).toEqual([`user=alice&n=${i}`]);
  }
  // a POST with a body larger than what is held back while a session opens, then a GET: one write
  const body = Buffer.alloc(200_000, 0x62);
  c.write(Buffer.concat([Buffer.from(`POST /post?incr=1 HTTP/1.1\r\nHost: app.test\r\nCookie: session=${id}\r\nContent-Length: ${body.length}\r\n\r\n`), body, Buffer.from(raw("/get?incr=1", { cookie: id }))]));
  const rp = toReply(await c.response());
  expect((JSON.parse(rp.res.body.toString()) as { received: number }).received).toBe(body.length);
  expect(rp.session).toEqual([`user=alice&n=${2 * N}`]);
  const rg = toReply(await c.response());
  expect(rg.session).toEqual([`user=alice&n=${2 * N + 1}`]);
  // read, delete, read: the third already finds no session
  c.write(raw("/a", { cookie: id }) + raw("/b?del=1", { cookie: id }) + raw("/c", { cookie: id }));
  const ra = toReply(await c.response());
  const rb = toReply(await c.response());
  const rc = toReply(await c.response());
  expect(ra.session).toEqual([`user=alice&n=${2 * N + 2}`]);
  expect(ra.setCookie).toBeUndefined();
  expect(rb.session).toEqual([`user=alice&n=${2 * N + 2}`]);
  expectCleared(rb);
  expect(rc.status).toBe(200);
  expect(rc.session).toEqual([]);
  expectCleared(rc);
  c.close();
  expect((await get(port, "/", { cookie: id })).session).toEqual([]);
}

describe(`store = "sqlite": the file`, () => {
  test("sessions live in <state_dir>/sessions-main.sqlite and survive a restart (two processes, one state_dir)", async () => {
    const sd = stateDir();
    const p = await freePort();
    const toml = config({ stateDir: sd, listeners: listener("web", route("/", "main"), { port: p }), sessions: sessionTable("sqlite", "main") });
    const a = await spawnLatch(toml, p);
    cleanups.push(() => a.stop("SIGKILL"));
    const file = join(sd, "sessions-main.sqlite");
    expect(existsSync(file)).toBe(false); // opened on first use
    const r1 = await get(p, `/?set=${enc("user=alice&cart=3")}`);
    const id = r1.cookie!;
    expectOpaqueId(id, ["alice", "cart"]);
    expect(existsSync(file)).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const { Database } = await import("bun:sqlite");
    const peek = (): unknown => {
      const db = new Database(file, { readonly: true });
      try {
        return db.query("SELECT id, data FROM sessions").all();
      } finally {
        db.close();
      }
    };
    expect(peek()).toEqual([{ id, data: "user=alice&cart=3" }]);
    expect(await a.stop()).toBe(0);

    const b = await spawnLatch(toml, p);
    cleanups.push(() => b.stop("SIGKILL"));
    expect((await get(p, "/", { cookie: id })).session).toEqual(["user=alice&cart=3"]);
    // a renewal in the new process moves the row: the old id is gone from the file
    const renewed = (await get(p, "/?renew=1", { cookie: id })).cookie!;
    expectOpaqueId(renewed, ["alice"]);
    expect(renewed).not.toBe(id);
    expect(peek()).toEqual([{ id: renewed, data: "user=alice&cart=3" }]);
    const old = await get(p, "/", { cookie: id });
    expect(old.status).toBe(200);
    expect(old.session).toEqual([]);
    expectCleared(old);
    expect(await b.stop()).toBe(0);
  }, 20_000);

  test("pipelined requests on one connection see each other's session changes", () => pipelinedCase("sqlite"));
});

describe.skipIf(!HAVE_REDIS)(`store = "redis": shared and pipelined`, () => {
  test("two Latch instances on one Redis share sessions", async () => {
    const cfg = () => config({ stateDir: stateDir(), listeners: listener("web", route("/", "shared")), sessions: sessionTable("redis", "shared") });
    const a = started(cfg());
    const b = started(cfg());
    const pa = a.ports["web"]!;
    const pb = b.ports["web"]!;
    expect(pa).not.toBe(pb);

    const id = (await get(pa, `/?set=${enc("user=alice")}`)).cookie!;
    expectOpaqueId(id, ["alice"]);
    await a.proxy.config.sessions.get("shared")!.settled();
    expect((await get(pb, "/", { cookie: id })).session).toEqual(["user=alice"]);

    // the key in Redis, with the idle timeout as its TTL
    const { RedisClient } = await import("bun");
    const rc = new RedisClient(redis!.url);
    try {
      const ttl = await rc.pttl(`latch:session:shared:${id}`);
      expect(ttl).toBeGreaterThan(590_000);
      expect(ttl).toBeLessThanOrEqual(600_000);
    } finally {
      rc.close();
    }

    // changed through b, seen through a
    expect((await get(pb, `/?set=${enc("user=alice&cart=3")}`, { cookie: id })).cookie).toBe(id);
    await b.proxy.config.sessions.get("shared")!.settled();
    expect((await get(pa, "/", { cookie: id })).session).toEqual(["user=alice&cart=3"]);

    // renewed through a: the old id is dead through b as well
    const renewed = (await get(pa, "/?renew=1", { cookie: id })).cookie!;
    expect(renewed).not.toBe(id);
    await a.proxy.config.sessions.get("shared")!.settled();
    const old = await get(pb, "/", { cookie: id });
    expect(old.status).toBe(200);
    expect(old.session).toEqual([]);
    expectCleared(old);
    expect((await get(pb, "/", { cookie: renewed })).session).toEqual(["user=alice&cart=3"]);

    // deleted through b: gone through a
    expectCleared(await get(pb, "/?del=1", { cookie: renewed }));
    await b.proxy.config.sessions.get("shared")!.settled();
    expect((await get(pa, "/", { cookie: renewed })).session).toEqual([]);
  });

  test("pipelined requests on one connection (the async open): in order, each sees the previous one's session", () => pipelinedCase("redis"));

  test("Redis stopped: an empty session, 200, the cookie left alone, counted; Redis back: sessions again", async () => {
    const own = await startRedis();
    let alive: RedisServer | null = own;
    cleanups.push(() => alive?.stop());
    const l = started(config({ stateDir: stateDir(), listeners: listener("web", route("/", "main")), sessions: sessionTable("redis", "main", { redisUrl: own.url }) }));
    const port = l.ports["web"]!;
    const st = statsOf(l);
    const id = (await get(port, `/?set=${enc("user=alice")}`)).cookie!;
    await l.proxy.config.sessions.get("main")!.settled();
    expect((await get(port, "/", { cookie: id })).session).toEqual(["user=alice"]);

    await own.stop();
    alive = null;
    const errors = st.errors;
    for (let i = 0; i < 3; i++) {
      const t = Date.now();
      const r = await get(port, `/?set=${enc("user=bob")}`, { cookie: id });
      expect(r.status).toBe(200);
      expect(r.session).toEqual([]);
      expect(r.setCookie).toBeUndefined(); // neither cleared (it may be good) nor a session that cannot be stored
      expect(Date.now() - t).toBeLessThan(4000);
    }
    expect(st.errors).toBeGreaterThan(errors);
    expect(st.lastError).not.toBe("");
    const fresh = await get(port, `/?set=${enc("user=carol")}`);
    expect(fresh.status).toBe(200);
    expect(fresh.setCookie).toBeUndefined();

    // the same port again (empty: no persistence): new sessions work once the client reconnects
    const back = Bun.spawn([REDIS_BIN!, "--port", String(own.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdout: "ignore", stderr: "inherit" });
    alive = { ...own, pid: back.pid, stop: async () => { if (back.exitCode === null) process.kill(back.pid, "SIGKILL"); await back.exited; } };
    const until = Date.now() + 8000;
    let cookie: string | undefined;
    while (Date.now() < until) {
      const r = await get(port, `/?set=${enc("user=dave")}`);
      expect(r.status).toBe(200);
      if (r.cookie) {
        cookie = r.cookie;
        break;
      }
      await Bun.sleep(200);
    }
    expect(cookie).toBeTruthy();
    await l.proxy.config.sessions.get("main")!.settled();
    expect((await get(port, "/", { cookie })).session).toEqual(["user=dave"]);
  }, 20_000);
});

// =============================================================================================
// the command line

describe("latch check", () => {
  test("a passphrase shorter than 16 characters: exit 1 with file:line and session.main.passphrases[0], never the passphrase", async () => {
    const sd = stateDir();
    const text = config({
      stateDir: sd,
      listeners: listener("web", route("/", "main")),
      sessions: `\n[session.main]\nstore = "cookie"\npassphrases = ["tooShort-xyz42"]\n`,
    });
    const file = join(sd, "latch.toml");
    writeFileSync(file, text);
    const line = text.split("\n").findIndex((l) => l.startsWith("passphrases")) + 1;
    expect(line).toBeGreaterThan(0);

    const check = await run([BUN, CLI, "check", file]);
    expect(check.code).toBe(1);
    expect(check.stderr).toContain(`${file}:${line}: session.main.passphrases[0]: `);
    expect(check.stderr).toContain("14 characters");
    expect(check.stderr).toContain("16");
    expect(check.stdout + check.stderr).not.toContain("tooShort-xyz42");

    // and `run` refuses to start with the same words
    const started = await run([BUN, CLI, "run", file], { ms: 10_000 });
    expect(started.code).toBe(1);
    expect(started.stderr).toContain(`${file}:${line}: session.main.passphrases[0]: `);
    expect(started.stdout).not.toContain("listening");
  }, 20_000);
});
