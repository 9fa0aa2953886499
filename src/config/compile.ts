// Validated config -> the frozen runtime snapshot the forwarding core reads (src/core/types.ts).
//
// Everything the core would otherwise work out per request is done here, once: addresses
// split, names lowercased and turned into byte needles, Set-Cookie lines assembled, routes
// ordered, hash rings built. The result is plain objects, frozen; the only mutable parts are
// the per-server ServerState and the backend's `rr` cursor, which the core updates in place.
//
// compile() does not throw for a bad config: it returns every problem it finds (with the key
// path) so `latch check` can list them all at once; index.ts adds file and line.

import { createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { buildRing } from "../core/balance.ts";
import { SessionTable } from "../core/session-table.ts";
import type {
  BalanceAlgo,
  CompiledBackend,
  CompiledConfig,
  CompiledListener,
  CompiledRoute,
  CompiledServer,
  HeaderRule,
  HealthCheck,
  InsertPersist,
  Persist,
  PersistRule,
  ServerState,
} from "../core/types.ts";
import type { SessionManager } from "../session/session.ts";
import { parseBind, parseCidr, parseServerAddress } from "./address.ts";
import { compileSessions } from "./compile-session.ts";
import { checkWorkers, resolveWorkers } from "./compile-workers.ts";
import { parseStatusRanges } from "./status-ranges.ts";
import type { KeyPath } from "./locate.ts";
import type { BackendInput, ConfigInput, ListenInput, PersistInput, PersistRuleInput, RouteInput, ServerInput } from "./schema.ts";

export interface CompileIssue {
  readonly path: KeyPath;
  readonly message: string;
}

export interface CompileContext {
  /** recorded as CompiledConfig.source */
  readonly source: string;
  /** relative paths in the config (tls files, state_dir) are resolved against this directory */
  readonly baseDir: string;
}

export type CompileResult = { readonly config: CompiledConfig; readonly issues: readonly [] } | { readonly config: null; readonly issues: readonly CompileIssue[] };

const ARE_NOT_YET = "are not available yet in this build";

export function compile(input: ConfigInput, ctx: CompileContext): CompileResult {
  const issues: CompileIssue[] = [];
  const fail = (path: KeyPath, message: string): void => {
    issues.push({ path, message });
  };
  /** runs a throwing parser; its message becomes an issue at `path` */
  const attempt = <T>(path: KeyPath, fn: () => T): T | null => {
    try {
      return fn();
    } catch (e) {
      fail(path, (e as Error).message);
      return null;
    }
  };

  const g = input.global;
  const workers = resolveWorkers(g.workers);

  // [session.NAME]: cookie keys are derived here (slow on purpose), stores open on first use
  const sessions = compileSessions(input.session ?? {}, resolve(ctx.baseDir, g.state_dir), fail);

  const backends = new Map<string, CompiledBackend>();
  for (const [name, b] of Object.entries(input.backend)) {
    backends.set(name, compileBackend(name, b, ["backend", name], fail, attempt));
  }

  const listeners: CompiledListener[] = [];
  const names = new Map<string, number>();
  const binds = new Map<number, { host: string; who: string }[]>();
  input.listen.forEach((l, i) => {
    const path = ["listen", i];
    const listener = compileListener(l, path, backends, sessions, ctx, fail, attempt);
    listeners.push(listener);
    // An unnamed listener is named after its bind address, whose clash claimPort reports.
    const seen = names.get(listener.name);
    if (seen !== undefined && l.name !== undefined) fail([...path, "name"], `duplicate listener name "${listener.name}" (also listen[${seen}])`);
    else names.set(listener.name, i);
    claimPort(binds, listener.host, listener.port, `listen[${i}]`, [...path, "bind"], fail);
  });

  let admin: CompiledConfig["admin"] = null;
  if (input.admin !== undefined) {
    const bind = attempt(["admin", "bind"], () => parseBind(input.admin!.bind));
    if (bind !== null) {
      claimPort(binds, bind.host, bind.port, "admin", ["admin", "bind"], fail);
      admin = Object.freeze({ host: bind.host, port: bind.port, token: input.admin.token });
    }
  }

  // several processes: what would silently break (port 0; learned tables are replicated)
  checkWorkers(workers, g.workers, listeners, fail);

  if (issues.length > 0) return { config: null, issues };

  const config: CompiledConfig = {
    source: ctx.source,
    workers,
    stateDir: resolve(ctx.baseDir, g.state_dir),
    snapshotInterval: g.snapshot_interval,
    limits: Object.freeze({
      maxHeadBytes: g.max_head_size,
      maxUrlBytes: g.max_url_size,
      maxHeaders: g.max_headers,
      clientIdle: g.timeout.client,
      clientHead: g.timeout.head,
      maxTunnels: g.max_tunnels,
    }),
    listeners: Object.freeze(listeners),
    // Freezing a Map does not stop set(); the core only gets it as ReadonlyMap.
    backends: Object.freeze(backends),
    sessions: sessions as Map<string, SessionManager>, // no issues: none is null
    admin,
    log: Object.freeze({ access: input.log.access, format: input.log.format, file: input.log.file === undefined ? null : resolve(ctx.baseDir, input.log.file) }),
  };
  return { config: Object.freeze(config), issues: [] };
}

type Fail = (path: KeyPath, message: string) => void;
type Attempt = <T>(path: KeyPath, fn: () => T) => T | null;

/**
 * Two listeners on one address would fail at startup with EADDRINUSE; say so now. A wildcard
 * host (0.0.0.0, ::) takes the port on every address, so it clashes with any host on that
 * port. Port 0 is always free.
 */
function claimPort(binds: Map<number, { host: string; who: string }[]>, host: string, port: number, who: string, path: KeyPath, fail: Fail): void {
  if (port === 0) return;
  const taken = binds.get(port) ?? [];
  const wildcard = (h: string): boolean => h === "0.0.0.0" || h === "::";
  const clash = taken.find((t) => t.host === host || wildcard(t.host) || wildcard(host));
  if (clash !== undefined) fail(path, `port ${port} on ${host} is already taken by ${clash.who} (${clash.host}:${port})`);
  else binds.set(port, [...taken, { host, who }]);
}

// ---------------------------------------------------------------------------------------------
// Backends and servers

function compileBackend(name: string, b: BackendInput, path: KeyPath, fail: Fail, attempt: Attempt): CompiledBackend {
  const balance = compileBalance(b.balance);
  const hashBalance = balance.kind === "source" || balance.kind === "uri" || balance.kind === "hdr" || balance.kind === "cookie";

  const ids = new Map<string, number>();
  b.server.forEach((s, i) => {
    const seen = ids.get(s.id);
    if (seen !== undefined) fail([...path, "server", i, "id"], `duplicate server id "${s.id}" (also server[${seen}])`);
    else ids.set(s.id, i);
  });

  const pin = b.persist;
  let values: string[] = b.server.map((s) => s.id);
  if (pin !== undefined && (pin.mode === "insert" || pin.mode === "prefix" || pin.mode === "rewrite")) {
    values = cookieValues(pin, b.server);
  }

  const servers = b.server.map((s, i) => {
    const where = [...path, "server", i];
    const addr = attempt([...where, "address"], () => parseServerAddress(s.address));
    return compileServer(s, i, addr ?? { host: "", port: 0, tls: false, authority: "" }, values[i]!);
  });

  let persist: Persist = null;
  if (pin !== undefined) {
    switch (pin.mode) {
      case "insert":
        persist = compileInsert(pin, b.server, values, path, fail);
        break;
      case "prefix":
      case "rewrite": {
        const byValue = valueMap(b.server, values, path, fail);
        persist =
          pin.mode === "prefix"
            ? Object.freeze({ mode: "prefix", cookie: pin.cookie, cookieBytes: latin1(pin.cookie), byValue, prefixBytes: Object.freeze(values.map((v) => latin1(`${v}~`))) })
            : Object.freeze({ mode: "rewrite", cookie: pin.cookie, cookieBytes: latin1(pin.cookie), byValue, valueBytes: Object.freeze(values.map((v) => latin1(v))) });
        break;
      }
      case "route": {
        const byRoute = new Map<string, number>();
        b.server.forEach((s, i) => {
          if (s.route === undefined) return;
          const seen = byRoute.get(s.route);
          if (seen !== undefined) fail([...path, "server", i, "route"], `route "${s.route}" is also used by server "${b.server[seen]!.id}"`);
          else byRoute.set(s.route, i);
        });
        if (byRoute.size === 0) fail([...path, "persist", "mode"], `mode = "route" needs servers with a \`route\` (Apache route=, Tomcat jvmRoute)`);
        persist = Object.freeze({
          mode: "route",
          cookie: pin.cookie,
          cookieBytes: latin1(pin.cookie),
          urlParam: pin.url_param === undefined ? null : latin1(pin.url_param),
          byRoute,
        });
        break;
      }
      default: {
        if (pin.shared !== undefined) fail([...path, "persist", "shared"], `shared tables (Redis) ${ARE_NOT_YET}`);
        const cookie = pin.mode === "learn" || pin.mode === "param" ? pin.cookie : undefined;
        const header = pin.mode === "header" || pin.mode === "param" ? pin.header : undefined;
        const urlParam = pin.mode === "learn" || pin.mode === "param" ? pin.url_param : undefined;
        const timeoutSec = Math.ceil(pin.timeout / 1000);
        persist = Object.freeze({
          mode: pin.mode,
          cookieBytes: cookie === undefined ? null : latin1(cookie),
          headerLower: header === undefined ? null : latin1(header.toLowerCase()),
          urlParam: urlParam === undefined ? null : latin1(urlParam),
          requestLearn: pin.mode === "learn" ? pin.request_learn : true,
          len: pin.len,
          timeoutSec,
          // the table is runtime state: typed arrays reserved now, touched (and so paid for) as it fills
          table: new SessionTable({ capacity: pin.capacity, maxKeyLen: pin.len, timeoutSec }),
        });
      }
    }
  }

  const health = b.health === undefined ? null : compileHealth(b.health, [...path, "health"], fail, attempt);

  const rules = (list: readonly PersistRuleInput[], key: string): readonly PersistRule[] =>
    Object.freeze(list.map((r, i) => compileRule(r, [...path, key, i], attempt)));

  const ring = hashBalance
    ? (attempt([...path, "server"], () => buildRing(servers)) ?? { points: new Uint32Array(0), servers: new Uint16Array(0) })
    : { points: new Uint32Array(0), servers: new Uint16Array(0) };

  return Object.freeze({
    name,
    balance,
    hashBalance,
    failover: b.failover,
    timeouts: Object.freeze({
      connect: b.timeout.connect,
      server: b.timeout.server,
      tunnel: b.timeout.tunnel,
      queue: b.timeout.queue,
      poolIdle: b.timeout.pool_idle,
    }),
    persist,
    ignorePersist: rules(b.ignore_persist, "ignore_persist"),
    forcePersist: rules(b.force_persist, "force_persist"),
    servers: Object.freeze(servers),
    ringPoints: ring.points,
    ringServers: ring.servers,
    hashBoundFactor: b.hash_balance_factor,
    rr: { next: 0 }, // mutable on purpose: the balancer's cursor
    queue: [], // mutable on purpose: requests waiting for a server under its maxconn
    health,
  });
}

/** [backend.NAME.health]: timeout defaults to the interval and may not exceed it. */
function compileHealth(h: NonNullable<BackendInput["health"]>, path: KeyPath, fail: Fail, attempt: Attempt): HealthCheck | null {
  if (h.interval <= 0) fail([...path, "interval"], "must be more than 0");
  const timeout = h.timeout ?? h.interval;
  if (h.timeout !== undefined && h.timeout <= 0) fail([...path, "timeout"], "must be more than 0");
  else if (timeout > h.interval) fail([...path, "timeout"], `must be at most the interval (${h.interval}ms), got ${timeout}ms`);
  const expect = attempt([...path, "expect"], () => parseStatusRanges(h.expect));
  if (expect === null) return null;
  return Object.freeze({
    path: h.path,
    method: h.method,
    interval: h.interval,
    timeout,
    rise: h.rise,
    fall: h.fall,
    expect,
    host: h.host ?? null,
  });
}

function compileBalance(text: string): BalanceAlgo {
  // The schema has already checked the spelling.
  const colon = text.indexOf(":");
  if (colon === -1) return Object.freeze({ kind: text as "roundrobin" | "leastconn" | "random" | "first" | "source" | "uri" });
  const name = text.slice(colon + 1);
  if (text.startsWith("hdr:")) return Object.freeze({ kind: "hdr", name, nameLower: latin1(name.toLowerCase()) });
  return Object.freeze({ kind: "cookie", name, nameBytes: latin1(name) });
}

function compileServer(s: ServerInput, index: number, addr: ReturnType<typeof parseServerAddress>, cookieValue: string): CompiledServer {
  // Not frozen: the core flips these at run time, and a reload carries them over by id.
  // A server starts up (as HAProxy does); health checks take a dead one down at the first failure.
  const now = Date.now();
  const state: ServerState = {
    up: true,
    admin: s.disabled ? "maint" : s.drain ? "drain" : "ready",
    active: 0,
    total: 0,
    failures: 0,
    rrCurrent: 0,
    upSince: now,
    lastChange: now,
    checks: 0,
    checkFailures: 0,
    lastCheck: "",
    downs: 0,
    failStreak: 0,
  };
  return Object.freeze({
    index,
    id: s.id,
    host: addr.host,
    port: addr.port,
    tls: addr.tls,
    authority: addr.authority,
    hostLine: latin1(`Host: ${addr.authority}\r\n`),
    weight: s.weight,
    backup: s.backup,
    maxconn: s.maxconn,
    slowstart: s.slowstart,
    cookieValue,
    state,
  });
}

// ---------------------------------------------------------------------------------------------
// Persistence: cookie insert

// RFC 6265 cookie-octet, minus "|" (separates the maxidle/maxlife timestamps in the value)
// and "~" (separates the server from the application's value in prefix mode).
const COOKIE_VALUE = /^[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7b\x7d]+$/;

/**
 * The persistence value of each server: its `cookie` if set, else a keyed hash when
 * dynamic_key is set, else its id. An explicit `cookie` wins over the hash as in HAProxy
 * (SRV_F_COOKIESET: "this server has a cookie configured, so don't generate dynamic cookies").
 */
function cookieValues(p: Extract<PersistInput, { mode: "insert" | "prefix" | "rewrite" }>, servers: readonly ServerInput[]): string[] {
  const key = p.mode === "insert" ? p.dynamic_key : undefined;
  // HAProxy's dynamic-cookie-key: the value says which server without naming it.
  // 16 base64url characters = 96 bits, plenty to keep a handful of servers apart.
  return servers.map((s) => s.cookie ?? (key === undefined ? s.id : createHmac("sha256", key).update(s.id).digest("base64url").slice(0, 16)));
}

function compileInsert(
  p: Extract<PersistInput, { mode: "insert" }>,
  servers: readonly ServerInput[],
  values: readonly string[],
  backendPath: KeyPath,
  fail: Fail,
): InsertPersist {
  const samesite = p.samesite === undefined ? undefined : canonicalSameSite(p.samesite);
  // No Max-Age/Expires: like HAProxy's inserted cookie, it is a session cookie; maxidle and
  // maxlife are enforced through timestamps in the value, not by the browser.
  let attributes = `; Path=${p.path}`;
  if (p.domain !== undefined) attributes += `; Domain=${p.domain}`;
  if (p.httponly) attributes += "; HttpOnly";
  // Browsers drop a SameSite=None cookie that is not Secure.
  if (p.secure || samesite === "None") attributes += "; Secure";
  if (samesite !== undefined) attributes += `; SameSite=${samesite}`;

  const byValue = valueMap(servers, values, backendPath, fail);

  const setCookieLine = Object.freeze(values.map((value) => latin1(`Set-Cookie: ${p.cookie}=${value}${attributes}\r\n`)));
  return Object.freeze({
    mode: "insert",
    cookie: p.cookie,
    cookieBytes: latin1(p.cookie),
    indirect: p.indirect,
    nocache: p.nocache,
    postonly: p.postonly,
    preserve: p.preserve,
    attributes,
    maxidle: p.maxidle,
    maxlife: p.maxlife,
    dynamic: p.dynamic_key !== undefined,
    byValue,
    setCookieLine,
  });
}

/** cookie value -> server index, refusing values a cookie cannot carry and values shared by two servers */
function valueMap(servers: readonly ServerInput[], values: readonly string[], backendPath: KeyPath, fail: Fail): Map<string, number> {
  const byValue = new Map<string, number>();
  values.forEach((value, i) => {
    const s = servers[i]!;
    const where = [...backendPath, "server", i, s.cookie !== undefined ? "cookie" : "id"];
    if (!COOKIE_VALUE.test(value)) {
      fail(where, `"${value}" cannot be a cookie value (no spaces, quotes, ",", ";", "\\", "|" or "~")`);
      return;
    }
    const seen = byValue.get(value);
    // The same id twice is already reported as a duplicate id; say it once.
    if (seen !== undefined && servers[seen]!.id === s.id) return;
    if (seen !== undefined) {
      fail(where, `cookie value "${value}" is also used by server "${servers[seen]!.id}": persistence could not tell them apart`);
      return;
    }
    byValue.set(value, i);
  });

  return byValue;
}

function canonicalSameSite(s: string): "Lax" | "Strict" | "None" {
  const lower = s.toLowerCase();
  return lower === "strict" ? "Strict" : lower === "none" ? "None" : "Lax";
}

/** ignore_persist / force_persist: the schema guarantees exactly one condition. */
function compileRule(r: PersistRuleInput, path: KeyPath, attempt: Attempt): PersistRule {
  if (r.header !== undefined && r.contains !== undefined) {
    // Header values are matched as the bytes on the wire; the config text is UTF-8.
    return Object.freeze({ header: Object.freeze({ nameLower: latin1(r.header.toLowerCase()), contains: utf8(r.contains) }) });
  }
  if (r.path !== undefined) return Object.freeze({ pathPrefix: r.path });
  const cidr = attempt([...path, "src"], () => parseCidr(r.src!));
  return Object.freeze(cidr === null ? {} : { cidr: Object.freeze(cidr) });
}

// ---------------------------------------------------------------------------------------------
// Listeners and routes

function compileListener(
  l: ListenInput,
  path: KeyPath,
  backends: ReadonlyMap<string, CompiledBackend>,
  sessions: ReadonlyMap<string, SessionManager | null>,
  ctx: CompileContext,
  fail: Fail,
  attempt: Attempt,
): CompiledListener {
  const bind = attempt([...path, "bind"], () => parseBind(l.bind)) ?? { host: "", port: 0 };

  let tls: CompiledListener["tls"] = null;
  if (l.tls !== undefined) {
    const cert = resolve(ctx.baseDir, l.tls.cert);
    const key = resolve(ctx.baseDir, l.tls.key);
    if (!existsSync(cert)) fail([...path, "tls", "cert"], `file not found: ${cert}`);
    if (!existsSync(key)) fail([...path, "tls", "key"], `file not found: ${key}`);
    tls = Object.freeze({ cert, key });
  }
  const redirectHttps = l.redirect === "https";
  if (redirectHttps && tls !== null) fail([...path, "redirect"], `redirect = "https" on a TLS listener would redirect to itself forever`);
  if (!redirectHttps && l.route.length === 0) fail(path, `no [[listen.route]]: add one, or set redirect = "https"`);

  const routes: CompiledRoute[] = [];
  const seen = new Map<string, number>();
  l.route.forEach((r, i) => {
    const where = [...path, "route", i];
    const route = compileRoute(r, where, backends, sessions, tls !== null, fail, attempt);
    if (route === null) return;
    const key = `${route.hostWildcard ? "*" : ""}${route.host} ${route.path}`;
    const first = seen.get(key);
    if (first !== undefined) fail(where, `same host and path as route[${first}]; this route could never match`);
    else seen.set(key, i);
    routes.push(route);
  });
  // As nginx chooses a server block by Host and then a location by longest prefix: exact
  // hosts first, then wildcards (longest suffix first), then any host; within each, the
  // longest path first. A host whose routes match no path falls through to any-host routes.
  // Array.prototype.sort is stable: ties keep the order written.
  routes.sort((a, b) => hostRank(a) - hostRank(b) || b.host.length - a.host.length || b.path.length - a.path.length);

  return Object.freeze({
    name: l.name ?? l.bind,
    host: bind.host,
    port: bind.port,
    tls,
    redirectHttps,
    routes: Object.freeze(routes),
    xForwardedFor: l.forwarded_for,
    via: l.via,
  });
}

function hostRank(r: CompiledRoute): number {
  return r.host === "" ? 2 : r.hostWildcard ? 1 : 0;
}

function compileRoute(
  r: RouteInput,
  path: KeyPath,
  backends: ReadonlyMap<string, CompiledBackend>,
  sessions: ReadonlyMap<string, SessionManager | null>,
  tls: boolean,
  fail: Fail,
  attempt: Attempt,
): CompiledRoute | null {
  const host = r.host === undefined ? { host: "", wildcard: false } : attempt([...path, "host"], () => parseRouteHost(r.host!));
  const backend = backends.get(r.backend);
  if (backend === undefined) fail([...path, "backend"], `no backend named "${r.backend}"`);
  // the route's view of its [session.NAME]: Secure follows this listener's TLS unless set
  const session = r.session === undefined ? null : (sessions.get(r.session)?.runtime(tls) ?? null);
  if (r.session !== undefined && !sessions.has(r.session)) fail([...path, "session"], `no [session.${r.session}] table`);
  const headerRules: HeaderRule[] = [];
  for (const [name, value] of Object.entries(r.set_headers ?? {})) {
    const cookie = /^cookie:(.*)$/.exec(value);
    if (cookie !== null && !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(cookie[1]!)) {
      fail([...path, "set_headers", name], `"${value}": after "cookie:" comes a cookie name`);
      continue;
    }
    if (/[\x00-\x08\x0a-\x1f\x7f]/.test(value)) {
      fail([...path, "set_headers", name], "a header value cannot hold control characters");
      continue;
    }
    headerRules.push(
      Object.freeze({
        nameLower: latin1(name.toLowerCase()),
        prefix: latin1(`${name}: `),
        literal: cookie === null ? latin1(value) : null,
        cookie: cookie === null ? null : latin1(cookie[1]!),
      }),
    );
  }
  for (const name of r.remove_headers ?? []) {
    headerRules.push(Object.freeze({ nameLower: latin1(name.toLowerCase()), prefix: null, literal: null, cookie: null }));
  }
  const ws = r.websocket;
  const websocket = Object.freeze({
    enabled: ws?.enabled ?? true,
    origins: ws?.origins === undefined ? null : Object.freeze(ws.origins.map((o) => o.toLowerCase())),
    maxPerClient: ws?.max_per_client ?? 0,
  });
  if (host === null || backend === undefined) return null;
  return Object.freeze({
    host: host.host,
    hostWildcard: host.wildcard,
    path: r.path,
    pathBytes: utf8(r.path),
    backend,
    preserveHost: r.preserve_host,
    session,
    headerRules: Object.freeze(headerRules),
    websocket,
  });
}

/** "Example.COM" -> "example.com"; "*.example.com" -> ".example.com" (wildcard: one or more labels). */
function parseRouteHost(text: string): { host: string; wildcard: boolean } {
  const lower = text.toLowerCase();
  const wildcard = lower.startsWith("*.");
  const name = wildcard ? lower.slice(2) : lower;
  if (/^\[[0-9a-f:.]+\]$/.test(name) && !wildcard) return { host: name, wildcard };
  if (name.includes(":")) throw new Error(`"${text}": write the host without a port (it matches any port)`);
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(name)) {
    throw new Error(`"${text}" is not a host name; write "example.com" or "*.example.com"`);
  }
  return { host: wildcard ? `.${name}` : name, wildcard };
}

// ---------------------------------------------------------------------------------------------

/** Exact-size byte copies: never a view into a shared pool, so they are safe to keep forever. */
function latin1(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, "latin1"));
}

function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}
