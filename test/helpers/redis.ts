// A real redis-server for integration tests, started on a free loopback port with no
// persistence and stopped by its PID. `REDIS_BIN` is null when the binary is absent (CI
// installs it with apt): tests then skip their Redis half.

import type { Subprocess } from "bun";
import { freePort } from "./latch.ts";

export const REDIS_BIN: string | null = Bun.which("redis-server") ?? (require("node:fs").existsSync("/usr/bin/redis-server") ? "/usr/bin/redis-server" : null);

export interface RedisServer {
  port: number;
  url: string;
  pid: number;
  /** SIGKILL by PID and wait for the exit */
  stop(): Promise<void>;
}

/** Sends PING until the server answers PONG (or the deadline passes). */
async function waitForPong(port: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      Bun.connect({
        hostname: "127.0.0.1",
        port,
        socket: {
          open(s) {
            s.write("PING\r\n");
          },
          data(s, d) {
            resolve(d.toString().startsWith("+PONG"));
            s.end();
          },
          error: () => resolve(false),
          connectError: () => resolve(false),
          close: () => resolve(false),
        },
      }).catch(() => resolve(false));
    });
    if (ok) return;
    await Bun.sleep(25);
  }
  throw new Error(`redis-server on port ${port} did not answer PONG within ${ms} ms`);
}

export async function startRedis(): Promise<RedisServer> {
  if (REDIS_BIN === null) throw new Error("redis-server is not installed");
  const port = await freePort();
  const proc: Subprocess = Bun.spawn([REDIS_BIN, "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdout: "ignore",
    stderr: "inherit",
  });
  try {
    await waitForPong(port, 5000);
  } catch (e) {
    process.kill(proc.pid, "SIGKILL");
    await proc.exited;
    throw e;
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid: proc.pid,
    async stop() {
      if (proc.exitCode === null) process.kill(proc.pid, "SIGKILL");
      await proc.exited;
    },
  };
}
