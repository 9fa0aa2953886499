// Subprocesses for CLI tests: run a command to completion, or start a long-running one and
// wait until its output says something (e.g. "listening").

import { BUN, ROOT } from "./latch.ts";
import { join } from "node:path";

export const CLI = join(ROOT, "src/cli.ts");

export interface Finished {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to the end (killed after ms). */
export async function run(cmd: string[], opts: { cwd?: string; ms?: number } = {}): Promise<Finished> {
  const proc = Bun.spawn(cmd, { cwd: opts.cwd ?? ROOT, stdout: "pipe", stderr: "pipe", env: process.env });
  const timer = setTimeout(() => proc.kill("SIGKILL"), opts.ms ?? 60_000);
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout as ReadableStream).text(),
    new Response(proc.stderr as ReadableStream).text(),
    proc.exited,
  ]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** `bun src/cli.ts ...args` to the end. */
export function latchCli(...args: string[]): Promise<Finished> {
  return run([BUN, CLI, ...args]);
}

export interface Started {
  pid: number;
  proc: ReturnType<typeof Bun.spawn>;
  output(): string;
  /** signal (default SIGTERM) and wait for the exit code; SIGKILL after ms */
  stop(signal?: NodeJS.Signals, ms?: number): Promise<number>;
}

/** Starts a long-running command and waits until its stdout+stderr contains `ready`. */
export async function start(cmd: string[], ready: string, opts: { cwd?: string; ms?: number } = {}): Promise<Started> {
  const proc = Bun.spawn(cmd, { cwd: opts.cwd ?? ROOT, stdout: "pipe", stderr: "pipe", env: process.env });
  let out = "";
  const pump = async (s: ReadableStream<Uint8Array>) => {
    const d = new TextDecoder();
    for await (const c of s) out += d.decode(c, { stream: true });
  };
  void pump(proc.stdout as ReadableStream<Uint8Array>);
  void pump(proc.stderr as ReadableStream<Uint8Array>);
  const until = Date.now() + (opts.ms ?? 10_000);
  while (!out.includes(ready)) {
    if (proc.exitCode !== null || Date.now() > until) {
      proc.kill("SIGKILL");
      throw new Error(`${cmd.join(" ")} did not print ${JSON.stringify(ready)}:\n${out}`);
    }
    await Bun.sleep(20);
  }
  return {
    pid: proc.pid,
    proc,
    output: () => out,
    async stop(signal = "SIGTERM", ms = 10_000) {
      if (proc.exitCode === null) proc.kill(signal);
      const timer = setTimeout(() => proc.kill("SIGKILL"), ms);
      const code = await proc.exited;
      clearTimeout(timer);
      return code;
    },
  };
}
