// global.workers: how many processes, and what a config must not do when there are several.
//
// With workers > 1 a supervisor (src/supervisor.ts) runs N processes that all listen on the
// same addresses with SO_REUSEPORT; the kernel hands each new connection to one of them by a
// hash of its address 4-tuple. Nothing about the request (cookie, header) takes part in that
// choice, so state that lives in one process's memory cannot be partitioned by session key:
//
//   - learned tables (persist modes learn, header, param, source) live in each process's
//     memory. A key one worker learned is unknown to the others, which would balance the
//     client anew on its next connection. (source: one client's connections carry different
//     source ports, so they reach different workers too.) Refused unless the table is shared
//     (`persist.shared`, Redis). insert, prefix, rewrite and route carry the server in the
//     request itself and work the same in every worker.
//   - port 0 asks the kernel for a free port: each worker would get a different one.

import type { CompiledBackend, CompiledListener } from "../core/types.ts";
import type { KeyPath } from "./locate.ts";

type Fail = (path: KeyPath, message: string) => void;

const TABLE_MODES = new Set(["learn", "source", "header", "param"]);

/** `workers` as written -> the number of processes ("auto": one per core, as Bun counts them). */
export function resolveWorkers(written: number | "auto", cores: number = navigator.hardwareConcurrency): number {
  if (written !== "auto") return written;
  return Number.isInteger(cores) && cores > 0 ? cores : 1;
}

/** What cannot work with several processes; nothing to check with one. */
export function checkWorkers(
  workers: number,
  written: number | "auto",
  backends: ReadonlyMap<string, CompiledBackend>,
  persistShared: (backend: string) => boolean,
  listeners: readonly CompiledListener[],
  fail: Fail,
): void {
  if (workers <= 1) return;
  const how = written === "auto" ? `workers = "auto" (${workers} here)` : `workers = ${workers}`;
  for (const [name, b] of backends) {
    const p = b.persist;
    if (p === null || !TABLE_MODES.has(p.mode) || persistShared(name)) continue;
    const source = p.mode === "source" ? " (a client's connections come from different ports and reach different workers)" : "";
    fail(
      ["backend", name, "persist", "mode"],
      `backend "${name}": mode = "${p.mode}" keeps its learned table in each process's memory, and with ${how} the kernel ` +
        `gives each new connection to any worker (reusePort), so a session one worker learned would be balanced anew by another${source}. ` +
        `Use workers = 1, or a mode that carries the server in the request (insert, prefix, rewrite, route)`,
    );
  }
  listeners.forEach((l, i) => {
    if (l.port === 0) fail(["listen", i, "bind"], `port 0 with ${how}: each worker would get a different free port; give the port`);
  });
}
