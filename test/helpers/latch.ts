// Start Latch for a test: in-process (fast, for behaviour) or as a subprocess (for
// memory, signals and the CLI). Both take a TOML config text.

import { Proxy } from "../../src/core/proxy.ts";
import { loadConfigText } from "../../src/config/index.ts";
import { setReporter } from "../../src/core/report.ts";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const BUN = process.execPath;
export const ROOT = join(import.meta.dir, "../..");

/** log lines the core reported, for assertions on "a log line that says why" */
export const reported: string[] = [];
// Never trimmed: tests take `reported.length` as a mark and read `reported.slice(mark)`, which a
// bounded buffer that drops its head would break once full (a whole run logs a few thousand lines).
setReporter((level, msg) => {
  reported.push(`${level} ${msg}`);
});

export interface Running {
  port: number;
  ports: Record<string, number>;
  proxy: Proxy;
  stop(): Promise<void>;
}

export function startLatch(toml: string): Running {
  const cfg = loadConfigText(toml, "test.toml");
  const proxy = new Proxy(cfg);
  proxy.start();
  const ports = proxy.ports();
  return { port: Object.values(ports)[0], ports, proxy, stop: () => proxy.stop(0) };
}

export interface Spawned {
  port: number;
  pid: number;
  proc: ReturnType<typeof Bun.spawn>;
  output(): string;
  stop(signal?: NodeJS.Signals): Promise<number>;
}

/** Runs `bun src/cli.ts run <file>` and waits until it says it is listening. */
export async function spawnLatch(toml: string, port: number): Promise<Spawned> {
  const dir = mkdtempSync(join(tmpdir(), "latch-test-"));
  const file = join(dir, "latch.toml");
  writeFileSync(file, toml);
  const proc = Bun.spawn([BUN, join(ROOT, "src/cli.ts"), "run", file], { stdout: "pipe", stderr: "pipe", cwd: dir });
  let out = "";
  const pump = async (s: ReadableStream<Uint8Array>) => {
    for await (const c of s) out += new TextDecoder().decode(c);
  };
  void pump(proc.stdout as ReadableStream<Uint8Array>);
  void pump(proc.stderr as ReadableStream<Uint8Array>);
  const until = Date.now() + 10_000;
  while (!out.includes("listening")) {
    if (proc.exitCode !== null || Date.now() > until) throw new Error(`latch did not start:\n${out}`);
    await Bun.sleep(20);
  }
  return {
    port,
    pid: proc.pid,
    proc,
    output: () => out,
    async stop(signal = "SIGTERM") {
      if (proc.exitCode === null) proc.kill(signal);
      return await proc.exited;
    },
  };
}

/** A free TCP port on loopback (bind to 0, read, close). */
export async function freePort(): Promise<number> {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const p = s.port;
  s.stop(true);
  return p;
}

/** RSS of a process in bytes, from /proc. */
export function rssOf(pid: number): number {
  const status = require("node:fs").readFileSync(`/proc/${pid}/status`, "utf8") as string;
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

/** A config with one listener on `port` (0 = any) and one backend `app` over the given servers. */
export function simpleConfig(opts: {
  port?: number;
  servers: { id: string; port: number; extra?: string }[];
  balance?: string;
  persist?: string;
  backendExtra?: string;
  routeExtra?: string;
  global?: string;
  listenExtra?: string;
}): string {
  const servers = opts.servers
    .map((s) => `[[backend.app.server]]\nid = "${s.id}"\naddress = "127.0.0.1:${s.port}"\n${s.extra ?? ""}\n`)
    .join("\n");
  return `
[global]
${opts.global ?? ""}

[[listen]]
name = "web"
bind = "127.0.0.1:${opts.port ?? 0}"
${opts.listenExtra ?? ""}

  [[listen.route]]
  path = "/"
  backend = "app"
  ${opts.routeExtra ?? ""}

[backend.app]
balance = "${opts.balance ?? "roundrobin"}"
${opts.backendExtra ?? ""}

${opts.persist ? `[backend.app.persist]\n${opts.persist}\n` : ""}

${servers}
`;
}
