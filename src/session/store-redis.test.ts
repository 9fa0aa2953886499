// store = "redis" against a real redis-server, started here on a free port (CI installs it
// with apt). Skipped only when the binary is absent.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RedisClient, type Subprocess } from "bun";
import { Packr } from "msgpackr";
import { isId } from "./id.ts";
import { parseLine, sessionContract, sessionOptions, T0 } from "./session.case.ts";
import { SessionManager } from "./session.ts";
import type { SessionRuntime, SessionState } from "./types.ts";

const BIN = Bun.which("redis-server");
let server: Subprocess | null = null;
let port = 0;
let url = "";
let raw: RedisClient;
const managers: SessionManager[] = [];

async function freePort(): Promise<number> {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const p = l.port;
  l.stop(true);
  return p;
}

/** Sends PING until the server answers PONG (or the deadline passes). */
async function waitForPong(p: number, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      Bun.connect({
        hostname: "127.0.0.1",
        port: p,
        socket: {
          open(s) {
            s.write("PING\r\n");
          },
          data(s, d) {
            resolve(d.toString().startsWith("+PONG"));
            s.end();
          },
          error() {
            resolve(false);
          },
          connectError() {
            resolve(false);
          },
          close() {
            resolve(false);
          },
        },
      }).catch(() => resolve(false));
    });
    if (ok) return;
    await Bun.sleep(25);
  }
  throw new Error(`redis-server on port ${p} did not answer PONG`);
}

function startServer(): Subprocess {
  return Bun.spawn([BIN!, "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdout: "ignore",
    stderr: "inherit",
  });
}

async function stopServer(): Promise<void> {
  if (server === null) return;
  process.kill(server.pid, "SIGKILL");
  await server.exited;
  server = null;
}

beforeAll(async () => {
  if (BIN === null) return;
  port = await freePort();
  url = `redis://127.0.0.1:${port}`;
  server = startServer();
  await waitForPong(port);
  raw = new RedisClient(url);
});

afterAll(async () => {
  for (const m of managers) m.close();
  raw?.close();
  await stopServer();
});

function manager(o: Parameters<typeof sessionOptions>[0] = {}): SessionManager {
  const m = new SessionManager(sessionOptions({ store: "redis", passphrases: [], redis: url, ...o }));
  managers.push(m);
  return m;
}

const packr = new Packr({ useRecords: false, mapsAsObjects: false });
const line = async (p: Uint8Array | null | Promise<Uint8Array | null>) => parseLine(await p).value;
/** commit, then wait until its Redis write is answered (writes are sent without waiting) */
async function commitSettled(r: SessionRuntime, s: SessionState, update: string | null, renew: boolean, now: number) {
  const out = r.commit(s, update, renew, now);
  await r.settled();
  return out;
}

describe.skipIf(BIN === null)("redis-server", () => {
  sessionContract("redis", { make: (o) => manager(o), revocable: true });

  describe("store = redis sessions", () => {
    test("key latch:session:<name>:<id>, msgpack [data, created, lastSeen], TTL = idle", async () => {
      const r = manager().runtime(false);
      const id = await line(commitSettled(r, await r.open(null, T0), "user=alice", false, T0));
      expect(isId(id)).toBe(true);
      const stored = await raw.getBuffer(`latch:session:main:${id}`);
      expect(packr.unpack(stored!)).toEqual(["user=alice", T0 / 1000, T0 / 1000]);
      const ttl = await raw.pttl(`latch:session:main:${id}`);
      expect(ttl).toBeGreaterThan(30 * 60_000 - 5000);
      expect(ttl).toBeLessThanOrEqual(30 * 60_000);
    });

    test("TTL: Redis forgets an idle session by itself", async () => {
      // times are whole seconds: an idle of 3 s, touched after one
      const m = manager({ idle: 3000, maxAge: 0, updateInterval: 1000 });
      const r = m.runtime(false);
      const now = Date.now();
      const id = await line(commitSettled(r, await r.open(null, now), "a=1", false, now));
      const ttl = await raw.pttl(`latch:session:main:${id}`);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(3000);
      // a touch pushes it back
      await Bun.sleep(1100);
      const s = await r.open(id, Date.now());
      expect(s.status).toBe("ok");
      expect(await line(commitSettled(r, s, null, false, Date.now()))).toBe(id);
      expect(await raw.pttl(`latch:session:main:${id}`)).toBeGreaterThan(2500);
      await Bun.sleep(3100);
      expect(await raw.exists(`latch:session:main:${id}`)).toBe(false);
      expect(await r.open(id, Date.now())).toMatchObject({ status: "invalid", data: "" });
      expect(m.stats.unknown).toBe(1);
    });

    test("max_age caps the TTL", async () => {
      const r = manager({ idle: 0, maxAge: 60 * 60_000 }).runtime(false);
      const s = await r.open(null, T0);
      const id = await line(commitSettled(r, s, "a=1", false, T0));
      const later = await r.open(id, T0 + 50 * 60_000);
      await commitSettled(r, later, "a=2", false, T0 + 50 * 60_000);
      const ttl = await raw.pttl(`latch:session:main:${id}`);
      expect(ttl).toBeGreaterThan(10 * 60_000 - 5000);
      expect(ttl).toBeLessThanOrEqual(10 * 60_000);
    });

    test("create, update, delete, renew in Redis", async () => {
      const r = manager().runtime(false);
      const id = await line(commitSettled(r, await r.open(null, T0), "user=alice", false, T0));
      await commitSettled(r, await r.open(id, T0 + 1000), "user=alice&cart=1", false, T0 + 1000);
      expect(packr.unpack((await raw.getBuffer(`latch:session:main:${id}`))!)[0]).toBe("user=alice&cart=1");

      const renewed = await line(commitSettled(r, await r.open(id, T0 + 2000), null, true, T0 + 2000));
      expect(renewed).not.toBe(id);
      expect(await raw.exists(`latch:session:main:${id}`)).toBe(false);
      expect(packr.unpack((await raw.getBuffer(`latch:session:main:${renewed}`))!)).toEqual(["user=alice&cart=1", T0 / 1000 + 2, T0 / 1000 + 2]);
      expect((await r.open(id, T0 + 3000)).status).toBe("invalid");

      await commitSettled(r, await r.open(renewed, T0 + 3000), "", false, T0 + 3000);
      expect(await raw.exists(`latch:session:main:${renewed}`)).toBe(false);
    });

    test("a value that is not ours is an empty session, not an exception", async () => {
      const r = manager().runtime(false);
      const id = "B".repeat(32);
      for (const v of ["garbage", packr.pack({ data: 1 }), packr.pack(["a=1", "x", 3]), Buffer.from([0xc1, 0xff])]) {
        await raw.set(`latch:session:main:${id}`, v);
        expect(await r.open(id, T0)).toMatchObject({ status: "invalid", data: "" });
      }
      await raw.del(`latch:session:main:${id}`);
    });

    test("two managers (two Latch processes) share sessions", async () => {
      const a = manager().runtime(false);
      const b = manager().runtime(true);
      const id = await line(commitSettled(a, await a.open(null, T0), "user=alice", false, T0));
      expect(await b.open(id, T0 + 1000)).toMatchObject({ status: "ok", data: "user=alice" });
    });

    // last: stops and restarts the server
    test("Redis down: an empty session (status error), the client's cookie left alone, no exception; back up: sessions again", async () => {
      const m = manager();
      const r = m.runtime(false);
      const id = await line(commitSettled(r, await r.open(null, T0), "user=alice", false, T0));
      await stopServer();
      const t = performance.now();
      const s: SessionState = await r.open(id, T0 + 1000);
      expect(performance.now() - t).toBeLessThan(2500); // bounded, never hangs
      expect(s).toMatchObject({ status: "error", data: "" });
      expect(r.requestHeader(s)).toBeNull();
      expect(await commitSettled(r, s, null, false, T0 + 1000)).toBeNull();
      expect(await commitSettled(r, s, "user=mallory", false, T0 + 1000)).toBeNull();
      expect(await commitSettled(r, await r.open(null, T0), "a=1", false, T0)).toBeNull(); // could not store: no cookie
      expect(m.stats.errors).toBeGreaterThan(0);
      expect(m.stats.lastError).not.toBe("");

      server = startServer();
      await waitForPong(port);
      await Bun.sleep(1100); // the store retries its connection at most once a second
      let back: SessionState | null = null;
      for (let i = 0; i < 20 && back?.status !== "invalid"; i++) {
        back = await r.open(id, T0 + 2000); // the restarted server is empty: an unknown id
        if (back.status !== "invalid") await Bun.sleep(250);
      }
      expect(back!.status).toBe("invalid");
      const fresh = await line(commitSettled(r, await r.open(null, T0), "user=alice", false, T0));
      expect(await r.open(fresh, T0 + 1000)).toMatchObject({ status: "ok", data: "user=alice" });
    }, 20_000);
  });
});
