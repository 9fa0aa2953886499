// A Latch subprocess whose config file the test rewrites: `write(toml)` then `hup()` sends
// SIGHUP and waits for the log line that says how the reload went.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUN } from "./latch.ts";
import { CLI, start, type Started } from "./proc.ts";

export interface Reloadable extends Started {
  dir: string;
  file: string;
  /** writes the config file (not applied until hup) */
  write(toml: string): void;
  /** SIGHUP, then waits for "reloaded" or "reload failed"; returns which, with the log line */
  hup(ms?: number): Promise<{ ok: boolean; line: string }>;
  /** stop (SIGKILL if still running) and remove the directory */
  dispose(): Promise<void>;
}

function count(out: string, what: string): number {
  let n = 0;
  for (let i = out.indexOf(what); i >= 0; i = out.indexOf(what, i + 1)) n++;
  return n;
}

export async function startReloadable(toml: string): Promise<Reloadable> {
  const dir = mkdtempSync(join(tmpdir(), "latch-reload-"));
  const file = join(dir, "latch.toml");
  writeFileSync(file, toml);
  const p = await start([BUN, CLI, "run", file], "listening", { cwd: dir });
  return {
    ...p,
    dir,
    file,
    write: (t) => writeFileSync(file, t),
    async hup(ms = 5000) {
      const out0 = p.output();
      const [ok0, bad0] = [count(out0, "info reloaded "), count(out0, "reload failed")];
      p.proc.kill("SIGHUP");
      const until = Date.now() + ms;
      for (;;) {
        const out = p.output();
        const lines = out.split("\n");
        if (count(out, "info reloaded ") > ok0) return { ok: true, line: lines.filter((l) => l.includes("info reloaded ")).pop()! };
        if (count(out, "reload failed") > bad0) return { ok: false, line: lines.filter((l) => l.includes("reload failed")).pop()! };
        if (Date.now() > until || p.proc.exitCode !== null) throw new Error(`no reload outcome after SIGHUP:\n${out}`);
        await Bun.sleep(10);
      }
    },
    async dispose() {
      await p.stop("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
