// global.workers: how many processes, and what a config must not do when there are several.
//
// With workers > 1 a supervisor (src/supervisor.ts) runs N processes that all listen on the
// same addresses with SO_REUSEPORT; the kernel hands each new connection to one of them by a
// hash of its address 4-tuple. Nothing about the request (cookie, header) takes part in that
// choice, so state cannot be partitioned by session key:
//
//   - learned tables (persist modes learn, header, param, source) are replicated instead: every
//     worker holds a full copy, and what one learns reaches the others through the supervisor
//     within milliseconds (src/state/table-replication.ts). Nothing to refuse.
//   - port 0 asks the kernel for a free port: each worker would get a different one. Refused.

import type { CompiledListener } from "../core/types.ts";
import type { KeyPath } from "./locate.ts";

type Fail = (path: KeyPath, message: string) => void;

/** `workers` as written -> the number of processes ("auto": one per core, as Bun counts them). */
export function resolveWorkers(written: number | "auto", cores: number = navigator.hardwareConcurrency): number {
  if (written !== "auto") return written;
  return Number.isInteger(cores) && cores > 0 ? cores : 1;
}

/** What cannot work with several processes; nothing to check with one. */
export function checkWorkers(workers: number, written: number | "auto", listeners: readonly CompiledListener[], fail: Fail): void {
  if (workers <= 1) return;
  const how = written === "auto" ? `workers = "auto" (${workers} here)` : `workers = ${workers}`;
  listeners.forEach((l, i) => {
    if (l.port === 0) fail(["listen", i, "bind"], `port 0 with ${how}: each worker would get a different free port; give the port`);
  });
}
