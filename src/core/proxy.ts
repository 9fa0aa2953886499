// The proxy's lifecycle: listeners up, snapshot swap on reload, graceful stop.
// Everything per request lives in forward.ts; this file only opens and closes doors.

import type { TCPSocketListener } from "bun";
import type { CompiledConfig, CompiledListener } from "./types.ts";
import { clientHandlers, closeIdle, drainClients, rerunQueued, type ClientConn, type ListenerRt } from "./forward.ts";
import { counters } from "./counters.ts";

interface Bound {
  rt: ListenerRt;
  server: TCPSocketListener<ClientConn>;
}

function runtimeOf(l: CompiledListener, cfg: CompiledConfig): ListenerRt {
  return {
    cfg: l,
    limits: cfg.limits,
    hostRouting: l.routes.some((r) => r.host !== ""),
    proto: l.tls !== null ? "https" : "http",
    draining: false,
  };
}

/**
 * Runtime knowledge of servers that stay across a reload (same backend name, same server id):
 * health (`up` and the checker's counters) and totals. Not carried: `admin` (the new config
 * says ready/drain/maint), `active` and the connection pool (requests in flight finish on the
 * old server objects and count there, as a new HAProxy process starts its counts afresh), and
 * the balancer cursor. Queued requests of replaced backends are run again under the new config.
 */
const NOT_CARRIED = new Set(["admin", "active", "rrCurrent", "pool"]);

function carryServerState(old: CompiledConfig, next: CompiledConfig): void {
  for (const [name, nb] of next.backends) {
    const ob = old.backends.get(name);
    if (ob === undefined) continue;
    for (const ns of nb.servers) {
      const os = ob.servers.find((s) => s.id === ns.id);
      if (os === undefined) continue;
      const from = os.state as unknown as Record<string, unknown>;
      const to = ns.state as unknown as Record<string, unknown>;
      for (const k of Object.keys(from)) if (!NOT_CARRIED.has(k)) to[k] = from[k];
    }
  }
  // idle pooled connections belong to the old server objects: let them go
  for (const ob of old.backends.values()) for (const s of ob.servers) closeIdle(s);
  for (const ob of old.backends.values()) rerunQueued(ob);
}

export class Proxy {
  private cfg: CompiledConfig;
  private bound: Bound[] = [];

  constructor(cfg: CompiledConfig) {
    this.cfg = cfg;
  }

  get config(): CompiledConfig {
    return this.cfg;
  }

  /** Opens every listener; throws (with the bind address) if one cannot be opened. */
  start(opts: { reusePort?: boolean } = {}): void {
    for (const l of this.cfg.listeners) {
      const rt = runtimeOf(l, this.cfg);
      try {
        const tls = l.tls !== null ? { cert: Bun.file(l.tls.cert), key: Bun.file(l.tls.key) } : undefined;
        const server = Bun.listen<ClientConn>({
          hostname: l.host,
          port: l.port,
          tls,
          allowHalfOpen: true,
          reusePort: opts.reusePort === true,
          data: rt as unknown as ClientConn, // replaced by the connection object in open()
          socket: clientHandlers,
        } as unknown as Bun.TCPSocketListenOptions<ClientConn>) as TCPSocketListener<ClientConn>;
        this.bound.push({ rt, server });
      } catch (e) {
        this.stopListening();
        throw new Error(`listen ${l.name}: cannot bind ${l.host}:${l.port}: ${(e as Error).message}`);
      }
    }
  }

  /** The ports actually bound, by listener name (useful with port 0). */
  ports(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const b of this.bound) out[b.rt.cfg.name] = b.server.port;
    return out;
  }

  /**
   * Swaps in a new snapshot: listeners with the same name and address keep their socket
   * and switch config for new requests (a request in flight keeps the route it started with).
   */
  reload(next: CompiledConfig): void {
    carryServerState(this.cfg, next);
    for (const b of this.bound) {
      const l = next.listeners.find((x) => x.name === b.rt.cfg.name);
      if (l !== undefined) {
        b.rt.cfg = l;
        b.rt.limits = next.limits;
        b.rt.hostRouting = l.routes.some((r) => r.host !== "");
      }
    }
    this.cfg = next;
  }

  stopListening(): void {
    for (const b of this.bound) b.server.stop(false);
    this.bound = [];
  }

  /** Stops accepting, waits for open connections to finish (at most `graceMs`), then closes the rest. */
  async stop(graceMs = 5000): Promise<void> {
    const servers = this.bound.map((b) => b.server);
    const rts = this.bound.map((b) => b.rt);
    this.stopListening();
    drainClients(rts);
    const until = Date.now() + graceMs;
    while (counters.connectionsOpen > 0 && Date.now() < until) await Bun.sleep(20);
    for (const s of servers) s.stop(true);
  }
}
