// The compiled runtime snapshot: the only shape the forwarding core reads.
// src/config/compile.ts builds it once from the validated TOML and freezes it; a reload
// builds a new one and swaps the reference. Nothing here is parsed per request: byte
// needles, Set-Cookie lines and hash rings are prepared at compile time.

import type { SessionManager } from "../session/session.ts";
import type { SessionRuntime } from "../session/types.ts";
import type { SessionTable } from "./session-table.ts";

/** Durations are milliseconds, sizes are bytes, everywhere in the snapshot. */
export type Ms = number;

export interface Limits {
  readonly maxHeadBytes: number; // whole request head; beyond -> 431
  readonly maxUrlBytes: number; // request target; beyond -> 414
  readonly maxHeaders: number; // header lines; beyond -> 431
  readonly clientIdle: Ms; // keep-alive idle / slowloris: head must complete within this
  readonly clientHead: Ms; // a started head must complete within this (slowloris)
  readonly maxTunnels: number; // concurrent tunnels in this process, 0 = no limit
}

export interface Timeouts {
  readonly connect: Ms;
  readonly server: Ms; // time to first response byte, and between response chunks
  readonly tunnel: Ms;
  readonly queue: Ms;
  readonly poolIdle: Ms; // an idle upstream keep-alive connection is closed after this
}

/** Mutable per-server runtime state. Lives beside the frozen config; carried over by id on reload. */
export interface ServerState {
  /** true while health says the server answers (passive/active checks flip it). */
  up: boolean;
  /** "ready" | "drain" | "maint". drain: keeps persisted clients, no new ones. maint: nothing. */
  admin: "ready" | "drain" | "maint";
  active: number; // requests in flight on this server
  total: number; // requests sent
  failures: number; // connection failures
  /** current effective weight for smooth weighted round robin */
  rrCurrent: number;
  /** when `up` last became true (Date.now() ms; compile time at first): slowstart counts from here */
  upSince: number;
  /** when `up` last changed (Date.now() ms; compile time at first) */
  lastChange: number;
  /** active health checks completed / failed (src/health/checker.ts; 0 without [health]) */
  checks: number;
  checkFailures: number;
  /** result of the last check: "200", "connection refused", "timeout after 2000ms"...; "" before the first */
  lastCheck: string;
  /** up -> down transitions (HAProxy chkdown) */
  downs: number;
  /** consecutive failed connections (passive health: `fall` of them mark the server down) */
  failStreak: number;
  /** idle keep-alive connections to this server; owned by the core's pool, created lazily */
  pool?: unknown[];
}

export interface CompiledServer {
  readonly index: number; // position in backend.servers
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  /** "host:port" as written in Host when preserve_host is off, and as matched for Location rewriting. */
  readonly authority: string;
  /** "Host: <authority>\r\n", spliced in when preserve_host is off */
  readonly hostLine: Uint8Array;
  readonly weight: number;
  readonly backup: boolean;
  readonly maxconn: number; // 0 = unlimited
  /** ms over which the weight ramps up after the server comes back up; 0 = off */
  readonly slowstart: Ms;
  /** Persistence value carried in the insert cookie (server id, `cookie` override, or keyed hash). */
  readonly cookieValue: string;
  readonly state: ServerState;
}

export type BalanceAlgo =
  | { readonly kind: "roundrobin" }
  | { readonly kind: "leastconn" }
  | { readonly kind: "random" }
  | { readonly kind: "first" }
  | { readonly kind: "source" }
  | { readonly kind: "uri" }
  | { readonly kind: "hdr"; readonly name: string; readonly nameLower: Uint8Array }
  | { readonly kind: "cookie"; readonly name: string; readonly nameBytes: Uint8Array };

export interface PersistRule {
  /** header match: case-insensitive header name, value contains (case-sensitive) */
  readonly header?: { readonly nameLower: Uint8Array; readonly contains: Uint8Array };
  /** path prefix */
  readonly pathPrefix?: string;
  /** source CIDR (IPv4 or IPv6) */
  readonly cidr?: { readonly v6: boolean; readonly addr: Uint8Array; readonly bits: number };
}

export interface InsertPersist {
  readonly mode: "insert";
  readonly cookie: string;
  readonly cookieBytes: Uint8Array; // NAME
  readonly indirect: boolean;
  readonly nocache: boolean;
  readonly postonly: boolean;
  readonly preserve: boolean;
  /** attributes appended after the value, e.g. "; Path=/; HttpOnly; SameSite=Lax" */
  readonly attributes: string;
  readonly maxidle: Ms; // 0 = off
  readonly maxlife: Ms; // 0 = off
  readonly dynamic: boolean; // cookieValue is a keyed hash
  /** cookie value -> server index (primary lookup) */
  readonly byValue: ReadonlyMap<string, number>;
  /** "Set-Cookie: NAME=value<attributes>\r\n" per server, when no timestamps are needed */
  readonly setCookieLine: readonly Uint8Array[];
}

/** prefix (HAProxy `cookie NAME prefix`): the backend's NAME=xyz travels as NAME=<server>~xyz */
export interface PrefixPersist {
  readonly mode: "prefix";
  readonly cookie: string;
  readonly cookieBytes: Uint8Array;
  readonly byValue: ReadonlyMap<string, number>;
  /** "<cookieValue>~" per server, spliced in front of the application's value */
  readonly prefixBytes: readonly Uint8Array[];
}

/** rewrite (HAProxy `cookie NAME rewrite`): the backend's NAME=anything becomes NAME=<server> */
export interface RewritePersist {
  readonly mode: "rewrite";
  readonly cookie: string;
  readonly cookieBytes: Uint8Array;
  readonly byValue: ReadonlyMap<string, number>;
  readonly valueBytes: readonly Uint8Array[];
}

/** route (Apache stickysession with member route=): route = the part after the last "." */
export interface RoutePersist {
  readonly mode: "route";
  readonly cookie: string;
  readonly cookieBytes: Uint8Array;
  readonly urlParam: Uint8Array | null;
  readonly byRoute: ReadonlyMap<string, number>;
}

/** The modes that learn key -> server in a SessionTable (typed arrays, preallocated). */
export interface TablePersist {
  readonly mode: "learn" | "source" | "header" | "param";
  /** learn: the application's session cookie; param: a cookie the backend sets (optional) */
  readonly cookieBytes: Uint8Array | null;
  /** header: the request header; header/param: also a response header the backend sets */
  readonly headerLower: Uint8Array | null;
  /** learn/param: `;name=value` path parameter and `?name=value` query parameter */
  readonly urlParam: Uint8Array | null;
  /** learn: also learn from request cookies the table has not seen */
  readonly requestLearn: boolean;
  /** key bytes kept (HAProxy appsession `len`) */
  readonly len: number;
  readonly timeoutSec: number;
  /** mutable runtime state, created once per compile and carried over on reload */
  readonly table: SessionTable;
}

export type Persist = InsertPersist | PrefixPersist | RewritePersist | RoutePersist | TablePersist | null;

export interface CompiledBackend {
  readonly name: string;
  readonly balance: BalanceAlgo;
  readonly hashBalance: boolean;
  readonly failover: "redispatch" | "strict";
  readonly timeouts: Timeouts;
  readonly persist: Persist;
  readonly ignorePersist: readonly PersistRule[];
  readonly forcePersist: readonly PersistRule[];
  readonly servers: readonly CompiledServer[];
  /** consistent-hash ring for source/uri/hdr/cookie balancing: sorted points and their server index */
  readonly ringPoints: Uint32Array;
  readonly ringServers: Uint16Array;
  /** bounded-load factor for consistent hashing (1.25 = a server takes at most 125% of the mean) */
  readonly hashBoundFactor: number;
  /** mutable balancer cursor (roundrobin / first) */
  readonly rr: { next: number };
  /** requests waiting for a server below its maxconn (mutable, owned by the core) */
  readonly queue: unknown[];
  /** active health check ([backend.NAME.health]); null = none. Read by src/health/checker.ts, never by the core */
  readonly health: HealthCheck | null;
}

/** [backend.NAME.health], compiled: one HTTP/1.1 request per server every `interval`. */
export interface HealthCheck {
  readonly path: string;
  readonly method: "GET" | "HEAD";
  readonly interval: Ms;
  /** a check not answered (status line read) within this fails; <= interval */
  readonly timeout: Ms;
  /** consecutive successes that bring a down server up */
  readonly rise: number;
  /** consecutive failures that take an up server down */
  readonly fall: number;
  /** accepted status codes: sorted, merged inclusive [low, high] ranges */
  readonly expect: readonly (readonly [number, number])[];
  /** Host header sent; null = each server's authority */
  readonly host: string | null;
}

/** A request header the route sets (every incoming copy removed first) or removes. */
export interface HeaderRule {
  readonly nameLower: Uint8Array;
  /** "Name: " as configured; null = remove only */
  readonly prefix: Uint8Array | null;
  /** literal value, or null when the value comes from a cookie */
  readonly literal: Uint8Array | null;
  /** "cookie:NAME": copy the request cookie's value (no header when the cookie is absent) */
  readonly cookie: Uint8Array | null;
}

export interface WebSocketOptions {
  /** tunnel Upgrade: websocket requests on this route (HAProxy does by default) */
  readonly enabled: boolean;
  /** allowed Origin values, lowercase; null = any */
  readonly origins: readonly string[] | null;
  /** concurrent tunnels per client address, 0 = no limit */
  readonly maxPerClient: number;
}

export interface CompiledRoute {
  /** lowercase host; "" = any; "*.example.com" stored as suffix ".example.com" with wildcard=true */
  readonly host: string;
  readonly hostWildcard: boolean;
  readonly path: string;
  readonly pathBytes: Uint8Array;
  readonly backend: CompiledBackend;
  readonly preserveHost: boolean;
  /** proxy-managed session ([session.NAME], route `session =`), bound to this listener's TLS; null = none */
  readonly session: SessionRuntime | null;
  /** set_headers then remove_headers, in one list */
  readonly headerRules: readonly HeaderRule[];
  readonly websocket: WebSocketOptions;
}

export interface CompiledListener {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly tls: { readonly cert: string; readonly key: string } | null;
  /** redirect = "https": every request gets 301 to https://host/path */
  readonly redirectHttps: boolean;
  /** routes sorted by path length, longest first, then host-specific before any-host */
  readonly routes: readonly CompiledRoute[];
  readonly xForwardedFor: boolean;
  readonly via: string; // "" = off
}

export interface CompiledConfig {
  readonly source: string; // file name the snapshot came from
  readonly workers: number;
  readonly stateDir: string;
  /** learned tables are saved to stateDir this often (src/state/table-snapshots.ts); 0 = only on stop/reload */
  readonly snapshotInterval: Ms;
  readonly limits: Limits;
  readonly listeners: readonly CompiledListener[];
  readonly backends: ReadonlyMap<string, CompiledBackend>;
  /** [session.NAME] by name: counters for admin; close() the old ones after a reload swap */
  readonly sessions: ReadonlyMap<string, SessionManager>;
  readonly admin: { readonly host: string; readonly port: number; readonly token: string } | null;
  /** access log (src/log/access-log.ts); file: absolute path, null = stdout */
  readonly log: { readonly access: boolean; readonly format: "combined" | "json"; readonly file: string | null };
}
