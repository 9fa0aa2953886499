// store = "sqlite" against a real database file in a temporary directory.
import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isId } from "./id.ts";
import { parseLine, sync, sessionContract, sessionOptions, T0 } from "./session.case.ts";
import { SessionManager } from "./session.ts";
import { SqliteStore } from "./store-sqlite.ts";

const dir = mkdtempSync(join(tmpdir(), "latch-sessions-"));
const managers: SessionManager[] = [];
let n = 0;
function manager(o: Parameters<typeof sessionOptions>[0] = {}): SessionManager {
  const m = new SessionManager(sessionOptions({ store: "sqlite", passphrases: [], file: join(dir, `sessions-t${n++}.sqlite`), ...o }));
  managers.push(m);
  return m;
}
afterAll(() => {
  for (const m of managers) m.close();
  rmSync(dir, { recursive: true, force: true });
});

sessionContract("sqlite", { make: (o) => manager(o), revocable: true });

describe("SqliteStore", () => {
  test("a real file in WAL mode, with the documented table", () => {
    const file = join(dir, "direct.sqlite");
    const st = new SqliteStore(file);
    st.insert("id1", "a=1", 100, 100);
    expect(st.get("id1")).toEqual({ data: "a=1", created: 100, last_seen: 100 });
    st.close();
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const db = new Database(file, { readonly: true });
    expect(db.query("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
    expect(db.query("SELECT id, data, created, last_seen FROM sessions").all()).toEqual([{ id: "id1", data: "a=1", created: 100, last_seen: 100 }]);
    db.close();
  });

  test("create, update, touch, delete, replace", () => {
    const st = new SqliteStore(join(dir, "ops.sqlite"));
    st.insert("a", "x=1", 10, 10);
    expect(() => st.insert("a", "x=2", 10, 10)).toThrow(); // primary key
    expect(st.update("a", "x=2", 20)).toBe(true);
    expect(st.get("a")).toEqual({ data: "x=2", created: 10, last_seen: 20 });
    expect(st.touch("a", 30)).toBe(true);
    expect(st.get("a")!.last_seen).toBe(30);
    st.replace("a", "b", "x=2", 40, 40);
    expect(st.get("a")).toBeNull();
    expect(st.get("b")).toEqual({ data: "x=2", created: 40, last_seen: 40 });
    expect(st.delete("b")).toBe(true);
    expect(st.delete("b")).toBe(false);
    expect(st.update("b", "x", 1)).toBe(false);
    expect(st.touch("b", 1)).toBe(false);
    expect(st.count()).toBe(0);
    st.close();
  });

  test("sweep deletes what is idle or too old, and nothing else", () => {
    const st = new SqliteStore(join(dir, "sweep.sqlite"));
    st.insert("fresh", "a=1", 1000, 1990);
    st.insert("idle", "a=1", 1000, 1400); // idle 600 s at 2000
    st.insert("old", "a=1", 100, 1999); // 1900 s old at 2000
    // idle limit: by last_seen (a row past max_age is deleted when presented, or goes idle)
    expect(st.sweep(2000, 600, 1800)).toBe(1);
    expect(st.get("idle")).toBeNull();
    // max_age only: by created
    expect(st.sweep(2000, 0, 1800)).toBe(1);
    expect(st.get("old")).toBeNull();
    expect(st.get("fresh")).not.toBeNull();
    expect(st.sweep(2000, 0, 0)).toBe(0);
    st.close();
  });

  test("one index, the one the sweep uses", () => {
    const file = join(dir, "index.sqlite");
    const indexes = () => {
      const db = new Database(file, { readonly: true });
      const names = db.query("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'sessions_%' ORDER BY name").all();
      db.close();
      return names;
    };
    new SqliteStore(file, "last_seen").close();
    expect(indexes()).toEqual([{ name: "sessions_last_seen" }]);
    new SqliteStore(file, "created").close();
    expect(indexes()).toEqual([{ name: "sessions_created" }]);
    new SqliteStore(file, null).close();
    expect(indexes()).toEqual([]);
  });
});

describe("store = sqlite sessions", () => {
  test("the cookie holds only a random 192-bit id", async () => {
    const r = manager().runtime(false);
    const ids = new Set<string>();
    for (let i = 0; i < 50; i++) {
      const v = parseLine(sync(r.commit(sync(r.open(null, T0)), "user=alice", false, T0))).value;
      expect(isId(v)).toBe(true);
      expect(Buffer.from(v, "base64url").length).toBe(24);
      ids.add(v);
    }
    expect(ids.size).toBe(50);
  });

  test("open and commit are synchronous", () => {
    const r = manager().runtime(false);
    const s = r.open(null, T0);
    expect(s instanceof Promise).toBe(false);
    expect(r.commit(sync(s), "a=1", false, T0) instanceof Uint8Array).toBe(true);
  });

  test("nothing is created before first use (latch check touches no file)", () => {
    const file = join(dir, "lazy", "sessions-lazy.sqlite");
    const m = manager({ file });
    m.runtime(false);
    expect(existsSync(file)).toBe(false);
    m.runtime(false).open("A".repeat(32), T0);
    expect(existsSync(file)).toBe(true);
  });

  test("renew: the old id is gone from the table, the new one holds the data", () => {
    const m = manager();
    const r = m.runtime(false);
    const id = parseLine(sync(r.commit(sync(r.open(null, T0)), "user=alice", false, T0))).value;
    const renewed = parseLine(sync(r.commit(sync(r.open(id, T0 + 1000)), null, true, T0 + 1000))).value;
    expect(m.sqlite().get(id)).toBeNull();
    expect(m.sqlite().get(renewed)).toEqual({ data: "user=alice", created: T0 / 1000 + 1, last_seen: T0 / 1000 + 1 });
    expect(r.open(id, T0 + 2000)).toMatchObject({ status: "invalid", data: "" });
    expect(m.stats.unknown).toBe(1);
  });

  test("delete removes the row", () => {
    const m = manager();
    const r = m.runtime(false);
    const id = parseLine(sync(r.commit(sync(r.open(null, T0)), "user=alice", false, T0))).value;
    r.commit(sync(r.open(id, T0)), "", false, T0);
    expect(m.sqlite().get(id)).toBeNull();
    expect(m.sqlite().count()).toBe(0);
  });

  test("an expired row is deleted when it is presented, the rest by the sweep", () => {
    const m = manager({ idle: 10 * 60_000, maxAge: 0 });
    const r = m.runtime(false);
    const ids = [0, 1, 2].map(() => parseLine(sync(r.commit(sync(r.open(null, T0)), "a=1", false, T0))).value);
    expect(m.sqlite().count()).toBe(3);
    expect(sync(r.open(ids[0]!, T0 + 10 * 60_000)).status).toBe("expired");
    expect(m.sqlite().count()).toBe(2);
    expect(m.sweep(T0 + 10 * 60_000 - 1000)).toBe(0);
    expect(m.sweep(T0 + 10 * 60_000)).toBe(2);
    expect(m.stats.swept).toBe(2);
    expect(m.sqlite().count()).toBe(0);
  });

  test("sessions survive a restart (a new manager on the same file)", () => {
    const file = join(dir, "restart.sqlite");
    const a = manager({ file });
    const ra = a.runtime(false);
    const id = parseLine(sync(ra.commit(sync(ra.open(null, T0)), "user=alice&cart=3", false, T0))).value;
    a.close();
    const b = manager({ file });
    expect(b.runtime(false).open(id, T0 + 1000)).toMatchObject({ status: "ok", data: "user=alice&cart=3" });
  });

  test("two managers on one file (two processes, or a reload) see each other's sessions", () => {
    const file = join(dir, "shared.sqlite");
    const a = manager({ file }).runtime(false);
    const b = manager({ file }).runtime(false);
    const id = parseLine(sync(a.commit(sync(a.open(null, T0)), "user=alice", false, T0))).value;
    expect(b.open(id, T0 + 1000)).toMatchObject({ status: "ok", data: "user=alice" });
  });

  test("a row deleted between open and commit is written back", () => {
    const m = manager();
    const r = m.runtime(false);
    const id = parseLine(sync(r.commit(sync(r.open(null, T0)), "a=1", false, T0))).value;
    const s = sync(r.open(id, T0 + 120_000));
    m.sqlite().delete(id);
    expect(parseLine(sync(r.commit(s, null, false, T0 + 120_000))).value).toBe(id);
    expect(m.sqlite().get(id)).toMatchObject({ data: "a=1", last_seen: T0 / 1000 + 120 });
  });

  test("after close, requests get an empty session (status error) and nothing throws", () => {
    const m = manager();
    const r = m.runtime(false);
    const id = parseLine(sync(r.commit(sync(r.open(null, T0)), "a=1", false, T0))).value;
    m.close();
    const s = sync(r.open(id, T0));
    expect(s).toMatchObject({ status: "error", data: "" });
    // the client's cookie is left alone
    expect(r.commit(s, null, false, T0)).toBeNull();
    expect(r.commit(sync(r.open(null, T0)), "a=1", false, T0)).toBeNull();
    expect(m.stats.errors).toBeGreaterThan(0);
    expect(m.stats.lastError).toContain("closed");
  });

  test("a row edited by hand with control characters cannot break the request head", () => {
    const m = manager();
    const r = m.runtime(false);
    const id = parseLine(sync(r.commit(sync(r.open(null, T0)), "a=1", false, T0))).value;
    m.sqlite().update(id, "a=1\r\nX-Admin: yes", T0 / 1000);
    const h = r.requestHeader(sync(r.open(id, T0)));
    expect(Buffer.from(h!).toString("latin1")).toBe("X-Session: a=1%0D%0AX-Admin%3A+yes\r\n");
  });
});
