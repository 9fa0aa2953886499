// One contract, every store (as Hono's router/common.case.test.ts runs one suite against each
// router): store-cookie in session.test.ts, sqlite in store-sqlite.test.ts, redis in
// store-redis.test.ts. The clock is injected (nowMs), the engines are real.
import { describe, expect, test } from "bun:test";
import type { SessionManager, SessionOptions, SessionView } from "./session.ts";
import type { SessionRuntime, SessionState } from "./types.ts";

export const PASSPHRASE = "a passphrase of thirty characters";
export const T0 = Date.UTC(2026, 0, 1); // ms
const S = 1000;
const MIN = 60 * S;

export function sessionOptions(o: Partial<SessionOptions> = {}): SessionOptions {
  return {
    name: "main",
    store: "cookie",
    cookie: "session",
    passphrases: [PASSPHRASE],
    maxAge: 8 * 60 * MIN,
    idle: 30 * MIN,
    updateInterval: 60 * S,
    header: "X-Session",
    updateHeader: "X-Replace-Session",
    renewHeader: "X-Session-Renew",
    path: "/",
    domain: null,
    httponly: true,
    secure: null,
    samesite: "Lax",
    file: ":memory:",
    redis: "redis://127.0.0.1:6379",
    sweepEvery: 0,
    ...o,
  };
}

/** The value of a store that answers synchronously (cookie, sqlite). */
export function sync<T>(x: T | Promise<T>): T {
  if (x instanceof Promise) throw new Error("expected a synchronous result");
  return x;
}

const text = (b: Uint8Array | null): string | null => (b === null ? null : Buffer.from(b).toString("latin1"));

/** The cookie value and the attributes of a Set-Cookie line for cookie `session`. */
export function parseLine(line: Uint8Array | null): { value: string; attrs: string } {
  const t = text(line);
  if (t === null) throw new Error("expected a Set-Cookie line, got none");
  const m = /^Set-Cookie: session=([^;\r\n]*)(;[^\r\n]*)?\r\n$/.exec(t);
  if (m === null) throw new Error(`not a session Set-Cookie line: ${JSON.stringify(t)}`);
  return { value: m[1]!, attrs: m[2] ?? "" };
}

export interface ContractTarget {
  /** a fresh manager for these options (same store underneath for one test) */
  make(o?: Partial<SessionOptions>): SessionManager;
  /** server-side stores: a deleted or renewed id stops working */
  readonly revocable: boolean;
}

export function sessionContract(kind: SessionOptions["store"], target: ContractTarget): void {
  const rt = (o?: Partial<SessionOptions>, tls = false): SessionRuntime => target.make(o).runtime(tls);
  const open = async (r: SessionRuntime, v: string | null, now: number): Promise<SessionState> => await r.open(v, now);
  const commit = async (r: SessionRuntime, s: SessionState, update: string | null, renew: boolean, now: number) =>
    await r.commit(s, update, renew, now);
  /** a live session holding `data`, created at T0 */
  const start = async (r: SessionRuntime, data = "user=alice&role=admin") => {
    const none = await open(r, null, T0);
    return parseLine(await commit(r, none, data, false, T0)).value;
  };

  describe(`session contract: store = "${kind}"`, () => {
    test("no cookie and nothing from the backend: an empty session and no Set-Cookie", async () => {
      const r = rt();
      const s = await open(r, null, T0);
      expect(s.status).toBe("none");
      expect(r.requestHeader(s)).toBeNull();
      expect(await commit(r, s, null, false, T0)).toBeNull();
      expect(await commit(r, s, null, true, T0)).toBeNull(); // nothing to renew
      expect(await commit(r, s, "", false, T0)).toBeNull(); // nothing to delete
      expect(r.stats.none).toBe(1);
    });

    test("the backend sets a session: the cookie is issued and the next request carries it to the backend", async () => {
      const r = rt();
      const line = await commit(r, await open(r, null, T0), "user=alice&role=admin", false, T0);
      const { value, attrs } = parseLine(line);
      expect(attrs).toBe("; Path=/; Max-Age=1800; HttpOnly; SameSite=Lax");
      const s = await open(r, value, T0 + 5 * S);
      expect(s.status).toBe("ok");
      expect(s.data).toBe("user=alice&role=admin");
      expect(text(r.requestHeader(s))).toBe("X-Session: user=alice&role=admin\r\n");
      expect(r.stats).toMatchObject({ created: 1, opened: 1 });
    });

    test("the backend's spelling is normalised before it is kept and sent on", async () => {
      const r = rt();
      const value = await start(r, "b=%7e&a=x%20y&&junk&c=%zz");
      expect(text(r.requestHeader(await open(r, value, T0 + S)))).toBe("X-Session: b=~&a=x+y\r\n");
    });

    test("an unchanged session costs no Set-Cookie until update_interval has passed", async () => {
      const r = rt();
      const value = await start(r);
      let s = await open(r, value, T0 + 30 * S);
      expect(await commit(r, s, null, false, T0 + 30 * S)).toBeNull();
      expect(await commit(r, s, "role=admin&user=alice", false, T0 + 30 * S)).not.toBeNull(); // another order is a change
      expect(await commit(r, s, "user=alice&role=admin", false, T0 + 30 * S)).toBeNull(); // the same data is not
      // (server-side stores wrote the reordered data at T0 + 30 s: more than 60 s after both)
      s = await open(r, value, T0 + 91 * S);
      const touched = parseLine(await commit(r, s, null, false, T0 + 91 * S));
      expect(r.stats.touched).toBe(1);
      // idle now counts from the touch
      const later = await open(r, touched.value, T0 + 91 * S + 29 * MIN);
      expect(later.status).toBe("ok");
      expect(later.lastSeen).toBe((T0 + 91 * S) / 1000);
      expect(later.created).toBe(T0 / 1000);
    });

    test("the backend replaces the data", async () => {
      const r = rt();
      const value = await start(r);
      const s = await open(r, value, T0 + S);
      const next = parseLine(await commit(r, s, "user=alice&cart=42", false, T0 + S)).value;
      const s2 = await open(r, next, T0 + 2 * S);
      expect(s2.data).toBe("user=alice&cart=42");
      expect(s2.created).toBe(T0 / 1000);
      expect(r.stats.updated).toBe(1);
      if (target.revocable) expect(next).toBe(value); // same id, new data
    });

    test("an empty update deletes the session: the cookie expires (Max-Age=0)", async () => {
      const r = rt();
      const value = await start(r);
      const s = await open(r, value, T0 + S);
      const del = parseLine(await commit(r, s, "", false, T0 + S));
      expect(del.value).toBe("");
      expect(del.attrs).toBe("; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
      expect(r.stats.deleted).toBe(1);
      if (target.revocable) expect((await open(r, value, T0 + 2 * S)).status).toBe("invalid");
    });

    test("an update that decodes to nothing deletes too", async () => {
      const r = rt();
      const s = await open(r, await start(r), T0 + S);
      expect(parseLine(await commit(r, s, "a=&b", false, T0 + S)).attrs).toContain("Max-Age=0");
    });

    test("renew: a new cookie, created now; on server-side stores the old id stops working", async () => {
      const r = rt();
      const value = await start(r);
      const s = await open(r, value, T0 + 10 * MIN);
      const renewed = parseLine(await commit(r, s, null, true, T0 + 10 * MIN)).value;
      expect(renewed).not.toBe(value);
      const s2 = await open(r, renewed, T0 + 10 * MIN + S);
      expect(s2.status).toBe("ok");
      expect(s2.data).toBe("user=alice&role=admin");
      expect(s2.created).toBe((T0 + 10 * MIN) / 1000);
      expect(r.stats.renewed).toBe(1);
      if (target.revocable) expect((await open(r, value, T0 + 10 * MIN + S)).status).toBe("invalid");
    });

    test("renew with new data (a login): both at once", async () => {
      const r = rt();
      const value = await start(r, "cart=1");
      const s = await open(r, value, T0 + S);
      const renewed = parseLine(await commit(r, s, "cart=1&user=bob", true, T0 + S)).value;
      expect(renewed).not.toBe(value);
      expect((await open(r, renewed, T0 + 2 * S)).data).toBe("cart=1&user=bob");
      if (target.revocable) expect((await open(r, value, T0 + 2 * S)).status).toBe("invalid");
    });

    test("idle expiry", async () => {
      const r = rt();
      const value = await start(r);
      expect((await open(r, value, T0 + 30 * MIN - S)).status).toBe("ok");
      const s = await open(r, value, T0 + 30 * MIN);
      expect(s.status).toBe("expired");
      expect(s.data).toBe("");
      expect(r.requestHeader(s)).toBeNull();
      // the dead cookie is removed from the client
      expect(parseLine(await commit(r, s, null, false, T0 + 30 * MIN)).attrs).toContain("Max-Age=0");
      expect(r.stats).toMatchObject({ expired: 1, cleared: 1 });
    });

    test("max_age: absolute, however active the client", async () => {
      const r = rt();
      let value = await start(r);
      let now = T0;
      for (let i = 0; i < 23; i++) {
        now += 20 * MIN;
        const s = await open(r, value, now);
        expect(s.status).toBe("ok");
        value = parseLine(await commit(r, s, null, false, now)).value;
      }
      // 7h40m: the cookie's Max-Age is what is left of the 8 hours
      expect(now - T0).toBe(460 * MIN);
      const s = await open(r, value, now);
      expect(parseLine(await commit(r, s, "x=1", false, now)).attrs).toContain("Max-Age=1200");
      expect((await open(r, value, T0 + 8 * 60 * MIN)).status).toBe("expired");
    });

    test("a bad cookie is an empty session, cleared on the way out, and replaced by a new session, never adopted", async () => {
      const r = rt();
      for (const bad of ["garbage", "A".repeat(32), "A".repeat(60), "x".repeat(5000)]) {
        const s = await open(r, bad, T0);
        expect(s.status).toBe("invalid");
        expect(r.requestHeader(s)).toBeNull();
        expect(parseLine(await commit(r, s, null, false, T0)).attrs).toContain("Max-Age=0");
        const fresh = parseLine(await commit(r, s, "user=eve", false, T0)).value;
        expect(fresh).not.toBe(bad);
        expect((await open(r, fresh, T0 + S)).data).toBe("user=eve");
      }
      expect(r.stats.invalid).toBe(4);
    });

    test("cookie attributes: Secure on a TLS listener, SameSite=None forces it, domain and path", async () => {
      const tls = rt({}, true);
      expect(tls.secure).toBe(true);
      expect(parseLine(await commit(tls, await open(tls, null, T0), "a=1", false, T0)).attrs).toBe(
        "; Path=/; Max-Age=1800; HttpOnly; Secure; SameSite=Lax",
      );
      const none = rt({ samesite: "None", httponly: false, domain: ".example.com", path: "/app", maxAge: 0, idle: 0 });
      expect(none.secure).toBe(true);
      expect(parseLine(await commit(none, await open(none, null, T0), "a=1", false, T0)).attrs).toBe(
        "; Path=/app; Domain=.example.com; Secure; SameSite=None",
      );
      const off = rt({ secure: false }, true);
      expect(off.secure).toBe(false);
      expect(text((off as SessionView).deleteLine)).toBe("Set-Cookie: session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax\r\n");
    });

    test("the names the core needs, as bytes", () => {
      const r = rt({ header: "X-App-Session", updateHeader: "X-App-Update", renewHeader: "X-App-Renew" });
      expect(text(r.cookieName)).toBe("session");
      expect(r.header).toBe("X-App-Session");
      expect(text(r.headerLower)).toBe("x-app-session");
      expect(text(r.updateHeaderLower)).toBe("x-app-update");
      expect(text(r.renewHeaderLower)).toBe("x-app-renew");
      expect(r.async).toBe(kind === "redis");
      expect(r.store).toBe(kind);
    });
  });
}
