// Learned tables shared between the worker processes of one supervisor (global.workers > 1),
// the way HAProxy's stick-table `peers` replicate: asynchronously, by messages.
//
// Each worker keeps a full copy of every learned table. A binding learned here (a new key or a
// re-bind, SessionTable.onLearn) and a refresh (a hit on an entry seen more than timeout/2 ago,
// so the copies elsewhere do not expire while the session is active here) is batched (at most
// BATCH_MS or BATCH_ITEMS) and sent to the supervisor, which relays it to every other ready
// worker (src/supervisor.ts); there SessionTable.applyRemote stores it without echo, keeping an
// entry seen later there (last writer by last-seen time wins).
//
// Messages (IPC, worker <-> supervisor):
//   { t: "learn", items: [[backend, key, serverId, seenSec], ...], to?: slot }
//     key: the key bytes as a latin1 string (one char per byte, lossless); serverId: the
//     server's `id`, not its index (indexes may differ between two configs during a reload);
//     seenSec: wall-clock seconds (core/clock.ts `sec`), the same clock in every process.
//   { t: "dump", to: slot }   supervisor -> a live worker: send your live entries to `to`.
// A worker that becomes ready (started, or restarted after a crash) is caught up by a dump
// of one ready sibling's tables, relayed by the supervisor; updates learned meanwhile reach it
// directly, and applyRemote's "later last-seen wins" makes the order of the two irrelevant.
//
// Imported by src/cli.ts only; nothing here runs with workers = 1 (no hook, no message).

import type { CompiledBackend, CompiledConfig, TablePersist } from "../core/types.ts";
import { tableBackends, wallSec, type Log } from "./table-snapshots.ts";

export type LearnItem = [backend: string, key: string, server: string, seenSec: number];
export type LearnMsg = { t: "learn"; items: LearnItem[]; to?: number };
export type DumpMsg = { t: "dump"; to: number };

const BATCH_MS = 10;
const BATCH_ITEMS = 256;
/** Entries per message of a dump (a catch-up of a whole table). */
const DUMP_ITEMS = 1024;

let pending: LearnItem[] = [];
let timer: ReturnType<typeof setTimeout> | null = null;
let send: (m: LearnMsg) => void = () => {};

function flush(): void {
  if (timer !== null) clearTimeout(timer);
  timer = null;
  if (pending.length === 0) return;
  const items = pending;
  pending = [];
  try {
    send({ t: "learn", items });
  } catch {} // the supervisor is gone: the worker stops anyway (src/supervisor.ts)
}

function latin1(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.length).toString("latin1");
}

/**
 * Sets (workers > 1) or clears the replication hook of every table of `cfg`. Call for the
 * first config and again after each reload (a reload compiles new tables).
 */
export function attachReplication(cfg: CompiledConfig): void {
  const on = cfg.workers > 1;
  for (const b of tableBackends(cfg)) {
    const servers = b.servers;
    const name = b.name;
    (b.persist as TablePersist).table.onLearn = on
      ? (key, server, nowSec) => {
          const s = servers[server];
          if (s === undefined) return;
          pending.push([name, latin1(key), s.id, nowSec]);
          if (pending.length >= BATCH_ITEMS) flush();
          else if (timer === null) timer = setTimeout(flush, BATCH_MS);
        }
      : null;
  }
}

/** server id -> index, per backend of a config (built on first use) */
const indexCache = new WeakMap<CompiledBackend, Map<string, number>>();
function indexOf(b: CompiledBackend, id: string): number {
  let m = indexCache.get(b);
  if (m === undefined) {
    m = new Map(b.servers.map((s) => [s.id, s.index]));
    indexCache.set(b, m);
  }
  return m.get(id) ?? -1;
}

/** Stores what another worker learned into `cfg`'s tables; unknown backends and servers are skipped. */
export function applyItems(cfg: CompiledConfig, items: readonly LearnItem[]): void {
  for (const it of items) {
    if (!Array.isArray(it) || it.length !== 4) continue;
    const [name, key, id, seen] = it;
    const b = cfg.backends.get(name);
    const p = b?.persist;
    if (b === undefined || p == null || !("table" in p) || typeof key !== "string" || typeof id !== "string") continue;
    const idx = indexOf(b, id);
    if (idx < 0) continue;
    p.table.applyRemote(Buffer.from(key, "latin1"), idx, seen);
  }
}

/** Every live entry of `cfg`'s tables, as learn messages of at most DUMP_ITEMS entries. */
export function dumpMessages(cfg: CompiledConfig, to: number, nowSec: number = wallSec()): LearnMsg[] {
  const out: LearnMsg[] = [];
  let items: LearnItem[] = [];
  for (const b of tableBackends(cfg)) {
    const table = (b.persist as TablePersist).table;
    for (const [key, server, seen] of table.entries(nowSec)) {
      const s = b.servers[server];
      if (s === undefined) continue;
      items.push([b.name, latin1(key), s.id, seen]);
      if (items.length >= DUMP_ITEMS) {
        out.push({ t: "learn", items, to });
        items = [];
      }
    }
  }
  if (items.length > 0) out.push({ t: "learn", items, to });
  return out;
}

/**
 * A supervised worker: hooks the tables of the running config, applies the supervisor's
 * learn messages to the running config's tables and answers its dump requests.
 */
export function startReplication(current: () => CompiledConfig, log: Log): void {
  if (typeof process.send !== "function") return;
  send = (m) => void process.send!(m);
  attachReplication(current());
  process.on("message", (m: unknown) => {
    const msg = m as LearnMsg | DumpMsg;
    if (msg === null || typeof msg !== "object") return;
    if (msg.t === "learn" && Array.isArray(msg.items)) {
      applyItems(current(), msg.items);
    } else if (msg.t === "dump" && typeof msg.to === "number") {
      flush(); // what is batched goes first
      // synchronous: the tables must not change while they are walked
      const msgs = dumpMessages(current(), msg.to);
      try {
        for (const x of msgs) send(x);
      } catch {
        return; // the supervisor is gone
      }
      const n = msgs.reduce((a, x) => a + x.items.length, 0);
      if (n > 0) log("info", `state: sent ${n} learned entr${n === 1 ? "y" : "ies"} to worker ${msg.to}`);
    }
  });
}
