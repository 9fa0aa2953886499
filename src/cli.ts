#!/usr/bin/env bun
// The composition root: wires config loading, the forwarding core and the process's
// signals together. The core never imports from here.

import { Proxy } from "./core/proxy.ts";
import { setReporter } from "./core/report.ts";
import { setAccessSink } from "./core/access.ts";
import { reconfigureAccessLog, type AccessLog } from "./log/access-log.ts";
import { ConfigError, loadConfigFile, loadConfigText, demoConfigText } from "./config/index.ts";
import { startDemoBackends } from "./demo/backends.ts";
import { carryTables, loadTables, saveTables, startPeriodicSaves } from "./state/table-snapshots.ts";
import { attachReplication, startReplication } from "./state/table-replication.ts";
import { runSupervisor, workerConfig, workerReady, workerSlot, workerTag } from "./supervisor.ts";
import { HealthChecker } from "./health/checker.ts";
import type { CompiledConfig } from "./core/types.ts";
import type { SessionManager } from "./session/session.ts";
import pkg from "../package.json" with { type: "json" };

const USAGE = `usage:
  latch run <config.toml>     start the proxy
  latch run --demo [port]     start on 127.0.0.1:8080 in front of two built-in demo backends
  latch check <config.toml>   validate a configuration (exit 1 with file:line: key: reason)
  latch version               print the version`;

function log(level: "info" | "warn" | "error", msg: string): void {
  const line = `${new Date().toISOString()} ${level} ${workerTag()}${msg}\n`;
  if (level === "info") process.stdout.write(line);
  else process.stderr.write(line);
}

function loadOrExit(path: string): CompiledConfig {
  try {
    return loadConfigFile(path);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(e.message + "\n");
      process.exit(1);
    }
    throw e;
  }
}

// The access log ([log]): the core hands each finished request to accessLog.push.
let accessLog: AccessLog | null = null;
function applyAccessLog(settings: CompiledConfig["log"]): void {
  // a worker shares its stdout with the others: lines are written in pieces a pipe keeps whole
  accessLog = reconfigureAccessLog(accessLog, settings, (msg) => log("warn", msg), workerSlot() !== null);
  setAccessSink(accessLog === null ? null : accessLog.push);
}

/** Waits (bounded) for session writes already sent, then closes the stores. */
async function closeSessions(managers: readonly SessionManager[]): Promise<void> {
  await Promise.race([Promise.all(managers.map((m) => m.settled())), Bun.sleep(2000)]);
  for (const m of managers) m.close();
}

/**
 * A bug in one connection's handling must not take every other connection down with the
 * process: log it (with its stack, so it gets fixed) and keep serving. Socket handlers that
 * throw are also reported by Bun through their `error` handler, which closes that socket.
 */
function keepServingOnBugs(): void {
  process.on("uncaughtException", (e) => log("error", `internal error (serving continues): ${(e as Error)?.stack ?? e}`));
  process.on("unhandledRejection", (e) => log("error", `internal error (serving continues): ${(e as Error)?.stack ?? e}`));
}

function runProxy(cfg: CompiledConfig, reloadFrom: string | null, onStop: () => void = () => {}): Proxy {
  setReporter(log);
  keepServingOnBugs();
  applyAccessLog(cfg.log);
  const proxy = new Proxy(cfg);
  loadTables(cfg, log); // learned sessions from the last run (seeds/003), before any request
  // several workers: learned bindings are replicated between them through the supervisor
  if (workerSlot() !== null) startReplication(() => proxy.config, log);
  try {
    proxy.start({ reusePort: workerSlot() !== null }); // workers share the listeners (src/supervisor.ts)
  } catch (e) {
    log("error", (e as Error).message);
    process.exit(1);
  }
  const ports = proxy.ports();
  for (const l of cfg.listeners) log("info", `listening ${l.name} on ${l.tls ? "https" : "http"}://${l.host}:${ports[l.name]}`);
  if (cfg.admin !== null) log("warn", `[admin] is configured but the admin listener is not built yet: nothing listens on ${cfg.admin.host}:${cfg.admin.port}`);
  // active health checks ([backend.X.health]), off the hot path; the core only reads ServerState.up
  const health = new HealthChecker(log);
  health.start(cfg);
  let stopSaves = startPeriodicSaves(() => proxy.config, cfg.snapshotInterval, log);
  // server-side session stores: expired rows swept once a minute (Redis expires keys itself)
  const sweeper = setInterval(() => {
    for (const m of proxy.config.sessions.values()) m.sweep();
  }, 60_000);
  sweeper.unref();
  if (reloadFrom !== null) {
    process.on("SIGHUP", () => {
      try {
        const next = loadConfigFile(reloadFrom);
        const old = proxy.config;
        // all synchronous: no request changes the old tables between the save and the swap
        saveTables(old, log);
        carryTables(old, next, log);
        proxy.reload(next);
        if (workerSlot() !== null) attachReplication(next); // the new config's tables
        // the old [session.NAME] stores serve requests still in flight on the old config: closed later
        const oldSessions = [...old.sessions.values()];
        if (oldSessions.length > 0) setTimeout(() => closeSessions(oldSessions), 60_000).unref();
        health.start(next); // stops the old checker first; carried-over servers keep their up/down
        applyAccessLog(next.log); // and reopens the file (rotation: mv, then SIGHUP)
        if (next.snapshotInterval !== old.snapshotInterval) {
          stopSaves();
          stopSaves = startPeriodicSaves(() => proxy.config, next.snapshotInterval, log);
        }
        log("info", `reloaded ${reloadFrom}`);
      } catch (e) {
        log("error", `reload failed, keeping the running configuration: ${(e as Error).message}`);
        accessLog?.reopen(); // log rotation works even with a broken config
      }
    });
  }
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    log("info", "stopping: no new connections, finishing the ones in flight");
    health.stop();
    await proxy.stop(5000);
    clearInterval(sweeper);
    await closeSessions([...proxy.config.sessions.values()]);
    setAccessSink(null);
    await accessLog?.close(2000); // what is batched, bounded: a stalled sink does not hold the exit
    stopSaves();
    // nothing is learned any more: the last word on disk
    const saved = saveTables(proxy.config, log);
    if (saved > 0) log("info", `state: saved ${saved} learned table${saved === 1 ? "" : "s"} to ${proxy.config.stateDir}`);
    onStop();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  workerReady(ports); // a supervised worker: listening, signal handlers in place
  return proxy;
}

function main(argv: string[]): void {
  const [cmd, arg, arg2] = argv;
  switch (cmd) {
    case "version":
    case "--version":
    case "-v":
      process.stdout.write(`latch ${pkg.version} (bun ${Bun.version})\n`);
      return;
    case "check": {
      if (!arg) break;
      try {
        const cfg = loadConfigFile(arg);
        const servers = [...cfg.backends.values()].reduce((n, b) => n + b.servers.length, 0);
        process.stdout.write(`${arg}: ok (${cfg.listeners.length} listeners, ${cfg.backends.size} backends, ${servers} servers)\n`);
      } catch (e) {
        process.stderr.write((e instanceof Error ? e.message : String(e)) + "\n");
        process.exit(1);
      }
      return;
    }
    case "run": {
      if (arg === "--demo") {
        const port = arg2 ? Number(arg2) : 8080;
        const backends = startDemoBackends(["ap01", "ap02"]);
        const cfg = loadConfigText(demoConfigText([backends[0].port, backends[1].port], port), "<demo>");
        runProxy(cfg, null, () => backends.forEach((b) => b.stop()));
        process.stdout.write(
          `\nLatch demo: two backends (ap01 on :${backends[0].port}, ap02 on :${backends[1].port}) behind http://127.0.0.1:${port}\n` +
            `  curl -i http://127.0.0.1:${port}/            # a new client: balanced, gets Set-Cookie: SRV=...\n` +
            `  curl -i -b SRV=ap02 http://127.0.0.1:${port}/ # a persisted client: always ap02, SRV stripped (indirect)\n` +
            `  curl -s -c /tmp/j -b /tmp/j http://127.0.0.1:${port}/ (repeat: same backend every time)\n\n`,
        );
        return;
      }
      if (!arg) break;
      if (workerSlot() !== null) {
        // a worker of a supervisor: the config text comes from it (src/supervisor.ts)
        workerConfig(arg, log).then(
          (cfg) => runProxy(cfg, arg),
          (e) => {
            process.stderr.write(`${workerTag()}${(e as Error).message}\n`);
            process.exit(1);
          },
        );
        return;
      }
      const cfg = loadOrExit(arg);
      if (cfg.workers > 1) runSupervisor(arg, log); // does not listen itself
      else runProxy(cfg, arg);
      return;
    }
  }
  process.stderr.write(USAGE + "\n");
  process.exit(2);
}

main(process.argv.slice(2));
