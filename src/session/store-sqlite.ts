// `store = "sqlite"`: sessions in an embedded SQLite file, `<state_dir>/sessions-<name>.sqlite`,
// the cookie holding only an opaque id. Synchronous (bun:sqlite), so the request path stays
// free of promises: a primary-key lookup on a warm WAL database is a few microseconds.
//
//   CREATE TABLE sessions (id TEXT PRIMARY KEY, data TEXT, created INTEGER, last_seen INTEGER)
//
// Times are unix seconds. WAL journal with synchronous = NORMAL (a crash loses at most the
// last few commits, never corrupts), busy_timeout so that several Latch processes can share the
// file. Every statement is prepared once. Expired rows (idle or max_age passed) are deleted
// by sweep(), which the owner calls from a timer; lookups check the times themselves, so a
// row that has expired but not yet been swept is never served (and is deleted then).
//
// One index, for the sweep, chosen by the lifetimes: on last_seen when sessions have an idle
// limit (a row past max_age is either presented, and deleted then, or abandoned, and then idle
// too), else on created. Each index costs every write (an insert with both was 2x slower),
// and writes are the expensive part: ~30-60 us each on a WAL file, against a few us to read.
// A rowid table, not WITHOUT ROWID: with ~200-byte rows it read and wrote 15-40% faster.
//
// Methods throw what SQLite throws (disk full, file removed); the session runtime catches.

import { Database, type Statement } from "bun:sqlite";
import { chmodSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";

export interface SessionRow {
  data: string;
  created: number;
  last_seen: number;
}

export class SqliteStore {
  readonly file: string;
  private readonly db: Database;
  private readonly qGet: Statement<SessionRow, [string]>;
  private readonly qInsert: Statement<unknown, [string, string, number, number]>;
  private readonly qUpdate: Statement<unknown, [string, number, string]>;
  private readonly qTouch: Statement<unknown, [number, string]>;
  private readonly qDelete: Statement<unknown, [string]>;
  private readonly qSweepIdle: Statement<unknown, [number]>;
  private readonly qSweepAge: Statement<unknown, [number]>;
  private readonly qCount: Statement<{ n: number }, []>;
  private readonly replaceTx: (oldId: string, newId: string, data: string, created: number, lastSeen: number) => void;
  private closed = false;

  /** `sweepBy`: the column expired rows are found by (see above); null = no sweep, no index. */
  constructor(file: string, sweepBy: "last_seen" | "created" | null = "last_seen") {
    this.file = file;
    const onDisk = file !== ":memory:";
    // session data is the application's users' data: owner only (SQLite gives the -wal and
    // -shm files the main file's mode)
    if (onDisk) mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    const db = new Database(file, { create: true, strict: true });
    if (onDisk) chmodSync(file, 0o600);
    this.db = db;
    db.exec("PRAGMA busy_timeout = 2000");
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = NORMAL");
    db.exec(
      "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, data TEXT NOT NULL, created INTEGER NOT NULL, last_seen INTEGER NOT NULL)",
    );
    // an index left by a config with other lifetimes only slows writes down
    for (const col of ["last_seen", "created"]) {
      db.exec(col === sweepBy ? `CREATE INDEX IF NOT EXISTS sessions_${col} ON sessions (${col})` : `DROP INDEX IF EXISTS sessions_${col}`);
    }
    this.qGet = db.prepare("SELECT data, created, last_seen FROM sessions WHERE id = ?");
    this.qInsert = db.prepare("INSERT INTO sessions (id, data, created, last_seen) VALUES (?, ?, ?, ?)");
    this.qUpdate = db.prepare("UPDATE sessions SET data = ?, last_seen = ? WHERE id = ?");
    this.qTouch = db.prepare("UPDATE sessions SET last_seen = ? WHERE id = ?");
    this.qDelete = db.prepare("DELETE FROM sessions WHERE id = ?");
    this.qSweepIdle = db.prepare("DELETE FROM sessions WHERE last_seen <= ?");
    this.qSweepAge = db.prepare("DELETE FROM sessions WHERE created <= ?");
    this.qCount = db.prepare("SELECT count(*) AS n FROM sessions");
    const del = this.qDelete;
    const ins = this.qInsert;
    this.replaceTx = db.transaction((oldId: string, newId: string, data: string, created: number, lastSeen: number) => {
      del.run(oldId);
      ins.run(newId, data, created, lastSeen);
    });
  }

  get(id: string): SessionRow | null {
    return this.qGet.get(id) ?? null;
  }

  /** A new row. Throws on an id that exists (a collision of 192-bit random ids: never). */
  insert(id: string, data: string, created: number, lastSeen: number): void {
    this.qInsert.run(id, data, created, lastSeen);
  }

  /** New data and last-seen time; false when the row is gone (swept meanwhile). */
  update(id: string, data: string, lastSeen: number): boolean {
    return this.qUpdate.run(data, lastSeen, id).changes > 0;
  }

  /** Last-seen time only; false when the row is gone. */
  touch(id: string, lastSeen: number): boolean {
    return this.qTouch.run(lastSeen, id).changes > 0;
  }

  delete(id: string): boolean {
    return this.qDelete.run(id).changes > 0;
  }

  /** Renewal: the old id stops working and the new one holds the session, atomically. */
  replace(oldId: string, newId: string, data: string, created: number, lastSeen: number): void {
    this.replaceTx(oldId, newId, data, created, lastSeen);
  }

  /**
   * Deletes the rows that have expired at `nowSec`: unused for `idleSec` or more when there
   * is an idle limit, else created `maxAgeSec` or more ago (0 = that limit is off). Returns
   * how many went.
   */
  sweep(nowSec: number, idleSec: number, maxAgeSec: number): number {
    if (idleSec > 0) return this.qSweepIdle.run(nowSec - idleSec).changes;
    if (maxAgeSec > 0) return this.qSweepAge.run(nowSec - maxAgeSec).changes;
    return 0;
  }

  count(): number {
    return this.qCount.get()?.n ?? 0;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const q of [this.qGet, this.qInsert, this.qUpdate, this.qTouch, this.qDelete, this.qSweepIdle, this.qSweepAge, this.qCount]) q.finalize();
    this.db.close();
  }
}
