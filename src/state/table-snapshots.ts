// Learned persistence tables across restarts (SPEC §4.4: "the table survives a restart", the
// failure of seeds/003: HAProxy restarted, its appsession table was empty, and every client
// whose application no longer re-issued PHPSESSID was balanced anew).
//
// Not on the hot path, and the forwarding core never imports this file: the composition root
// (src/cli.ts) calls loadTables() before the listeners open, and saveTables() periodically
// (global.snapshot_interval), on graceful stop after the proxy stopped taking requests, and on
// reload (SIGHUP) for the old configuration's tables, whose entries carryTables() then moves
// into the new configuration's tables (a reload compiles new, empty ones).
//
// One file per backend whose persist is a table mode (learn, source, header, param):
//   <state_dir>/<backend name>.table.msgpack
// holding msgpack of
//   { kind: "latch-state", v: 1, backend, mode, len, servers: [server ids], savedAt, table }
// where `table` is SessionTable.snapshot()'s bytes (entries carry server *indexes*). The ids
// make a snapshot survive a change of the server list: on load each index is mapped to the
// server with the same id in the running configuration, and entries of servers no longer
// configured are dropped (and counted in the log line).
//
// Writing is atomic: a temp file in the same directory (mode 0600: session keys are
// credentials), fsync, rename over the old file, fsync of the directory. A crash leaves the
// previous snapshot or the new one, never half of one; leftover temp files are removed on load.
//
// A file that cannot be used (not msgpack, not a Latch state file, another version, another
// backend, another persist mode or a shorter key length than configured, a corrupt table) is
// reported in one log line naming the file and the reason, then renamed aside to
// `<file>.corrupt-<unix ms>` (kept for inspection, and out of the way of the next save).
// Never fatal: Latch starts with that table empty. A state_dir that cannot be created or
// written is logged and Latch goes on.

import { open, rename, unlink } from "node:fs/promises";
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { Packr } from "msgpackr";
import type { CompiledBackend, CompiledConfig, TablePersist } from "../core/types.ts";

export const STATE_KIND = "latch-state";
export const STATE_VERSION = 1;
export const SUFFIX = ".table.msgpack";

export type Log = (level: "info" | "warn" | "error", msg: string) => void;

/** Same options as the session table's own packer: plain maps, binary as bytes. */
const packr = new Packr({ useRecords: false, moreTypes: false });

/** Wall-clock seconds: the clock the proxy stores last-seen times in (core/clock.ts `sec`). */
export function wallSec(): number {
  return Math.floor(Date.now() / 1000);
}

export function snapshotPath(stateDir: string, backend: string): string {
  return join(stateDir, backend + SUFFIX);
}

/** The backends whose persistence lives in a learned table. */
export function tableBackends(cfg: CompiledConfig): CompiledBackend[] {
  const out: CompiledBackend[] = [];
  for (const b of cfg.backends.values()) {
    const p = b.persist;
    if (p !== null && (p.mode === "learn" || p.mode === "source" || p.mode === "header" || p.mode === "param")) out.push(b);
  }
  return out;
}

/** The state file's bytes for one table backend. */
export function encodeSnapshot(b: CompiledBackend, nowSec: number): Uint8Array {
  const p = b.persist as TablePersist;
  return packr.pack({
    kind: STATE_KIND,
    v: STATE_VERSION,
    backend: b.name,
    mode: p.mode,
    len: p.len,
    servers: b.servers.map((s) => s.id),
    savedAt: nowSec,
    table: p.table.snapshot(nowSec),
  });
}

/** A state file this backend cannot use; the message is the reason, in the operator's words. */
export class RejectedSnapshot extends Error {}

export interface Restored {
  loaded: number;
  /** entries dropped: idle past the timeout, or of a server no longer configured */
  dropped: number;
  /** ids in the snapshot that are not servers of the backend any more */
  missingServers: string[];
}

/**
 * Loads a state file's bytes into the backend's table (merging: a fresher entry already there
 * wins). Throws RejectedSnapshot, with nothing loaded, when the bytes are not a state file
 * for this backend.
 */
export function decodeSnapshot(data: Uint8Array, b: CompiledBackend, nowSec: number): Restored {
  const p = b.persist as TablePersist;
  let doc: unknown;
  try {
    doc = packr.unpack(data);
  } catch (e) {
    throw new RejectedSnapshot(`corrupt: not msgpack (${(e as Error).message})`);
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc) || (doc as { kind?: unknown }).kind !== STATE_KIND) {
    throw new RejectedSnapshot("foreign: not a Latch table snapshot");
  }
  const o = doc as Record<string, unknown>;
  if (o.v !== STATE_VERSION) throw new RejectedSnapshot(`version ${JSON.stringify(o.v)}; this Latch reads version ${STATE_VERSION}`);
  if (typeof o.backend !== "string" || !Array.isArray(o.servers) || !o.servers.every((s) => typeof s === "string") || !(o.table instanceof Uint8Array)) {
    throw new RejectedSnapshot("corrupt: backend, servers or table missing");
  }
  if (o.backend !== b.name) throw new RejectedSnapshot(`foreign: snapshot of backend "${o.backend}", not "${b.name}"`);
  if (o.mode !== p.mode) throw new RejectedSnapshot(`persist mode was ${JSON.stringify(o.mode)}, is now "${p.mode}"`);
  // Keys were cut to the old len: with a longer len now, a full-length old key can never match.
  if (!Number.isInteger(o.len) || (o.len as number) < p.len) {
    throw new RejectedSnapshot(`key length mismatch: snapshot keys cut at ${JSON.stringify(o.len)} bytes, len is now ${p.len}`);
  }

  // Old server index -> current index by id (-1: gone).
  const ids = o.servers as string[];
  const byId = new Map(b.servers.map((s) => [s.id, s.index]));
  const map = ids.map((id) => byId.get(id) ?? -1);
  const missingServers = ids.filter((id) => !byId.has(id));
  let table = o.table;
  if (map.some((to, from) => to !== from)) {
    // Rewrite the indexes (the table's own checks still apply when it reads the result).
    let inner: unknown;
    try {
      inner = packr.unpack(table);
    } catch (e) {
      throw new RejectedSnapshot(`corrupt table: not msgpack (${(e as Error).message})`);
    }
    const entries = (inner as { entries?: unknown } | null)?.entries;
    if (!Array.isArray(entries)) throw new RejectedSnapshot("corrupt table: entries missing");
    for (const e of entries) {
      if (Array.isArray(e) && Number.isInteger(e[1])) e[1] = (e[1] as number) >= 0 && (e[1] as number) < map.length ? map[e[1] as number] : -1;
    }
    table = packr.pack(inner);
  }
  try {
    const r = p.table.restore(table as Uint8Array, nowSec, (i) => i >= 0 && i < b.servers.length);
    return { ...r, missingServers };
  } catch (e) {
    throw new RejectedSnapshot((e as Error).message);
  }
}

/**
 * Start: loads every table backend's state file from cfg.stateDir. Missing files are normal
 * (first start); unusable ones are logged and renamed aside. Never throws.
 */
export function loadTables(cfg: CompiledConfig, log: Log, nowSec: number = wallSec()): void {
  const backends = tableBackends(cfg);
  if (backends.length === 0) return;
  removeTempFiles(cfg.stateDir);
  for (const b of backends) {
    const file = snapshotPath(cfg.stateDir, b.name);
    let data: Uint8Array;
    try {
      data = readFileSync(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") log("warn", `state: cannot read ${file}: ${(e as Error).message}; backend ${b.name} starts with an empty table`);
      continue;
    }
    try {
      const r = decodeSnapshot(data, b, nowSec);
      const gone = r.missingServers.length > 0 ? ` (servers no longer configured: ${r.missingServers.join(", ")})` : "";
      log("info", `state: backend ${b.name}: loaded ${r.loaded} sessions from ${file}, dropped ${r.dropped} expired or unknown${gone}`);
    } catch (e) {
      if (!(e instanceof RejectedSnapshot)) throw e;
      const aside = `${file}.corrupt-${Date.now()}`;
      let moved: string;
      try {
        renameSync(file, aside);
        moved = `moved aside to ${aside}`;
      } catch (re) {
        moved = `could not move it aside (${(re as Error).message}); the next save replaces it`;
      }
      log("warn", `state: ignoring ${file}: ${e.message}; backend ${b.name} starts with an empty table; ${moved}`);
    }
  }
}

/**
 * Reload: moves what the old configuration's tables learned into the new one's, by backend
 * name and server id, as a save and load would (without the disk). A backend whose table
 * changed shape (mode, shorter len) starts empty, said in one line. Never throws.
 */
export function carryTables(old: CompiledConfig, next: CompiledConfig, log: Log, nowSec: number = wallSec()): void {
  for (const nb of tableBackends(next)) {
    const ob = old.backends.get(nb.name);
    if (ob === undefined || !tableBackends(old).includes(ob)) continue;
    if ((ob.persist as TablePersist).table === (nb.persist as TablePersist).table) continue; // already shared
    try {
      decodeSnapshot(encodeSnapshot(ob, nowSec), nb, nowSec);
    } catch (e) {
      log("warn", `state: backend ${nb.name}: learned sessions not carried over the reload: ${(e as Error).message}`);
    }
  }
}

let tempSeq = 0;

/**
 * Whether this process writes state files. With several worker processes (src/supervisor.ts)
 * only worker 1 does, so that no two processes save the same backend's file with different
 * contents; the others still load them at start. saveTables/saveTablesAsync return 0 here.
 */
let writer = true;
export function setSnapshotWriter(on: boolean): void {
  writer = on;
}

/** Writes `data` to `file` atomically (temp file in the same directory, fsync, rename). */
export function writeAtomic(dir: string, file: string, data: Uint8Array): void {
  const tmp = `${file}.tmp-${process.pid}-${tempSeq++}`;
  let fd = -1;
  try {
    fd = openSync(tmp, "w", 0o600);
    let off = 0;
    while (off < data.length) off += writeSync(fd, data, off, data.length - off);
    fsyncSync(fd);
    closeSync(fd);
    fd = -1;
    renameSync(tmp, file);
  } catch (e) {
    if (fd >= 0) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {}
    throw e;
  }
  // The rename itself is durable once the directory is synced; cheap, but not fatal.
  try {
    const d = openSync(dir, "r");
    try {
      fsyncSync(d);
    } finally {
      closeSync(d);
    }
  } catch {}
}

/**
 * Saves every table backend of cfg to cfg.stateDir (creating it, mode 0700). An empty table
 * with no earlier file writes nothing (no state directory for a proxy that learned nothing).
 * Errors are logged, never thrown. Synchronous: a snapshot must be on disk before exit, and a
 * reload must not let requests change the old tables halfway through.
 */
export function saveTables(cfg: CompiledConfig, log: Log, nowSec: number = wallSec()): number {
  if (!writer) return 0;
  let saved = 0;
  let dirReady = false;
  for (const b of tableBackends(cfg)) {
    const file = snapshotPath(cfg.stateDir, b.name);
    const table = (b.persist as TablePersist).table;
    try {
      if (table.stats.size === 0 && !existsSync(file)) continue;
      if (!dirReady) {
        mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });
        dirReady = true;
      }
      writeAtomic(cfg.stateDir, file, encodeSnapshot(b, nowSec));
      saved++;
    } catch (e) {
      log("error", `state: cannot save backend ${b.name} to ${file}: ${(e as Error).message}`);
    }
  }
  return saved;
}

/**
 * Saves every `intervalMs` (0: never) the tables of whatever config `current()` returns at
 * that moment. The snapshot is taken synchronously (a consistent table); the file is written
 * asynchronously so the disk does not stall requests. A save still running when the next is
 * due makes that one skip. The timer does not keep the process alive. Returns a stop function.
 */
export function startPeriodicSaves(current: () => CompiledConfig, intervalMs: number, log: Log): () => void {
  if (!(intervalMs > 0)) return () => {};
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    saveTablesAsync(current(), log).finally(() => {
      busy = false;
    });
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}

/** saveTables with the writes off the event loop's critical path. Never rejects. */
export async function saveTablesAsync(cfg: CompiledConfig, log: Log, nowSec: number = wallSec()): Promise<number> {
  if (!writer) return 0;
  const jobs: { b: CompiledBackend; file: string; data: Uint8Array }[] = [];
  for (const b of tableBackends(cfg)) {
    const file = snapshotPath(cfg.stateDir, b.name);
    if ((b.persist as TablePersist).table.stats.size === 0 && !existsSync(file)) continue;
    jobs.push({ b, file, data: encodeSnapshot(b, nowSec) });
  }
  if (jobs.length === 0) return 0;
  try {
    mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });
  } catch (e) {
    log("error", `state: cannot create ${cfg.stateDir}: ${(e as Error).message}; tables not saved`);
    return 0;
  }
  let saved = 0;
  for (const { b, file, data } of jobs) {
    const tmp = `${file}.tmp-${process.pid}-${tempSeq++}`;
    try {
      const fh = await open(tmp, "w", 0o600);
      try {
        await fh.writeFile(data);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, file);
      saved++;
    } catch (e) {
      await unlink(tmp).catch(() => {});
      log("error", `state: cannot save backend ${b.name} to ${file}: ${(e as Error).message}`);
    }
  }
  return saved;
}

/** Temp files left by a save that was killed halfway (ours are `<file>.tmp-<pid>-<n>`). */
function removeTempFiles(dir: string): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    const m = /\.table\.msgpack\.tmp-(\d+)-\d+$/.exec(n);
    if (m === null || Number(m[1]) === process.pid || alive(Number(m[1]))) continue; // a save in progress
    try {
      unlinkSync(join(dir, n));
    } catch {}
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}
