// The shapes the forwarding core sees of a proxy-managed session (SPEC §5, Apache mod_session).
// src/core/types.ts imports these as types only: the core never loads src/session's code, it
// calls the SessionRuntime object that config compile put on the route.

export type SessionStoreKind = "cookie" | "sqlite" | "redis";

/**
 * What the request's session cookie turned out to be.
 *   none     no cookie
 *   ok       a live session: `data` holds it
 *   invalid  garbage, tampered, truncated, foreign, sealed for another cookie name or with an
 *            unknown passphrase; for server-side stores also an id the store does not know
 *   expired  genuine, but past `idle` or `max_age`
 *   error    the store could not be asked (Redis down, SQLite failed): treated as an empty
 *            session for this request, and the client's cookie is left alone
 * Every status but `ok` means an empty session; the request always proceeds.
 */
export type SessionStatus = "none" | "ok" | "invalid" | "expired" | "error";

/** One request's session, from open() to commit(). Plain data; the core only passes it back. */
export interface SessionState {
  readonly status: SessionStatus;
  /** the session in mod_session encoding ("k=v&k2=v2"); "" unless status is "ok" */
  readonly data: string;
  /** server-side stores: the id from the cookie (only when it was well-formed); null for the cookie store */
  readonly id: string | null;
  /** unix seconds: when the session was created or last renewed (max_age counts from here) */
  readonly created: number;
  /** unix seconds: when the session was last marked as used (idle counts from here) */
  readonly lastSeen: number;
  /** cookie store: opened with an older passphrase; commit() re-seals it with the first */
  readonly resealNeeded: boolean;
}

/** Counters, incremented by the runtime and read by the admin side (never reset). */
export interface SessionStats {
  /** requests that arrived with a live session */
  opened: number;
  /** requests without a session cookie */
  none: number;
  /** requests whose cookie was not a session (see SessionStatus "invalid") */
  invalid: number;
  /** server-side stores: well-formed ids the store did not know (also counted in invalid) */
  unknown: number;
  /** requests whose session had expired (idle or max_age) */
  expired: number;
  /** new sessions (the backend set data for a client without one) */
  created: number;
  /** sessions whose data the backend changed */
  updated: number;
  /** sessions the backend deleted (empty update header) */
  deleted: number;
  /** sessions renewed on the renew header: new id (server-side) or fresh seal */
  renewed: number;
  /** cookies re-issued / rows touched only because update_interval had passed */
  touched: number;
  /** cookies opened with an older passphrase and sealed again with the first */
  resealed: number;
  /** invalid or expired cookies removed from the client (Max-Age=0) */
  cleared: number;
  /** Set-Cookie values longer than 4096 bytes (browsers drop them): keep cookie sessions small */
  oversize: number;
  /** store failures; the request went on with an empty session */
  errors: number;
  /** expired rows deleted by the periodic sweep (sqlite) */
  swept: number;
  /** the last store failure's message, "" if none */
  lastError: string;
}

/**
 * The session of one route, as the forwarding core calls it. Built by config compile for
 * each (session, listener TLS) pair, so that `secure` and the Set-Cookie bytes are decided
 * before the first request.
 *
 * Per request, on a route with a session:
 *   1. request head: find the cookie named `cookieName`; remove every request header named
 *      `headerLower` (the client may never supply the session); `state = open(value, now)`
 *      (a Promise when `async`: redis). open() never throws and never rejects.
 *   2. if `requestHeader(state)` is not null, add that line to the request sent to the backend.
 *   3. response head: take and remove `updateHeaderLower` (its value; "" deletes the session)
 *      and `renewHeaderLower` (present = renew, whatever its value); then
 *      `line = commit(state, update, renew, now)` (always synchronous: a Redis write is sent
 *      without waiting, queued ahead of the client's next read on the same connection), and add
 *      `line` to the response when it is not null. commit() never throws.
 */
export interface SessionRuntime {
  readonly name: string;
  readonly store: SessionStoreKind;
  /** true for redis: open() returns a Promise; false: a plain value. commit() is always synchronous */
  readonly async: boolean;
  /** the session cookie's name, as text and as bytes for the cookie scan */
  readonly cookie: string;
  readonly cookieName: Uint8Array;
  /** request header carrying the session to the backend, as configured, and lowercased bytes */
  readonly header: string;
  readonly headerLower: Uint8Array;
  /** response header with which the backend replaces the session (lowercased bytes) */
  readonly updateHeaderLower: Uint8Array;
  /** response header with which the backend asks for a new id / fresh seal (lowercased bytes) */
  readonly renewHeaderLower: Uint8Array;
  /** whether the cookie carries `Secure` on this route */
  readonly secure: boolean;
  /** shared by every route using this [session.NAME] */
  readonly stats: SessionStats;

  /** The request's session from its cookie value (null: no cookie). `nowMs`: ms since the epoch. */
  open(cookieValue: string | null, nowMs: number): SessionState | Promise<SessionState>;
  /** "<header>: k=v&k2=v2\r\n" for the request to the backend; null when the session is empty. */
  requestHeader(state: SessionState): Uint8Array | null;
  /**
   * The response's effect on the session. `update`: the backend's update header value (null:
   * not sent, "": delete the session); `renew`: the backend sent the renew header. Returns
   * the "Set-Cookie: ...\r\n" line to add to the response, or null for none.
   */
  commit(state: SessionState, update: string | null, renew: boolean, nowMs: number): Uint8Array | null;
  /** resolves once the store writes commit() sent have been answered */
  settled(): Promise<void>;
}
