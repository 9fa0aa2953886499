// One [session.NAME]: its keys, its store, its counters, and the SessionRuntime views the
// routes call (src/session/types.ts has the contract). Built by config compile: passphrases
// are stretched then (scrypt, see seal.ts), Set-Cookie attributes assembled then. Server-side
// stores are opened lazily, on first use, so `latch check` creates no file and opens no socket.
//
// Lifetimes (Apache SessionMaxAge and its idle cousin), enforced by Latch from the times in
// the seal or the row, never trusted to the browser:
//   max_age          absolute, from creation (or the last renewal)
//   idle             since the session was last marked as used
//   update_interval  mod_session's SessionExpiryUpdateInterval: a response re-issues the
//                    cookie / touches the row only when the last mark is at least this old, so
//                    an unchanged session does not cost a Set-Cookie (or a write) per response.
//                    A session may thus expire up to update_interval earlier than `idle` says.
// The cookie carries Max-Age = what is left of the session's life (min of idle and the rest of
// max_age), so the browser forgets it about when Latch would refuse it; with neither limit it
// is a browser-session cookie.
//
// commit() decides, in this order:
//   - a store error at open: change nothing (the client's cookie may well be good);
//   - update "" (or an update that decodes to nothing): delete the session, expire the cookie;
//   - no data and an invalid/expired cookie: expire the cookie (it would come back forever);
//   - data for a client without a live session: a new session;
//   - renew: a new id (the old row is deleted: the old id stops working) or a fresh seal
//     (new nonce, new creation time; a sealed cookie cannot be revoked before it expires);
//   - changed data, an old passphrase, or update_interval passed: write and re-issue;
//   - otherwise nothing.

import { canonical } from "./codec.ts";
import { isId, newId } from "./id.ts";
import { deriveKey, Sealer } from "./seal.ts";
import { RedisStore, type RedisRecord } from "./store-redis.ts";
import { SqliteStore } from "./store-sqlite.ts";
import type { SessionRuntime, SessionState, SessionStats, SessionStatus, SessionStoreKind } from "./types.ts";

export interface SessionOptions {
  readonly name: string;
  readonly store: SessionStoreKind;
  readonly cookie: string;
  /** cookie store: the first seals, all open */
  readonly passphrases: readonly string[];
  /** ms; 0 = none */
  readonly maxAge: number;
  readonly idle: number;
  readonly updateInterval: number;
  readonly header: string;
  readonly updateHeader: string;
  readonly renewHeader: string;
  readonly path: string;
  readonly domain: string | null;
  readonly httponly: boolean;
  /** null: on when the route's listener has TLS */
  readonly secure: boolean | null;
  readonly samesite: "Lax" | "Strict" | "None";
  /** sqlite store: the database file */
  readonly file: string;
  /** redis store: the server URL */
  readonly redis: string;
  /** sqlite store: how often expired rows are deleted, ms (default 60 s) */
  readonly sweepEvery?: number;
}

/** Browsers keep at most about 4096 bytes of name=value per cookie. */
const COOKIE_LIMIT = 4096;

class State implements SessionState {
  constructor(
    readonly status: SessionStatus,
    readonly data: string,
    readonly id: string | null,
    readonly created: number,
    readonly lastSeen: number,
    readonly resealNeeded: boolean,
  ) {}
}

const NONE = new State("none", "", null, 0, 0, false);

// commit plans
const P_NOTHING = 0;
const P_DELETE = 1; // delete the live session, expire the cookie
const P_CLEAR = 2; // expire a bad cookie
const P_WRITE = 3;

interface Plan {
  kind: number;
  data: string;
  created: number;
  /** a new id (server-side) / a new seal is needed: a new session or a renewal */
  fresh: boolean;
  changed: boolean;
}

export function newStats(): SessionStats {
  return {
    opened: 0,
    none: 0,
    invalid: 0,
    unknown: 0,
    expired: 0,
    created: 0,
    updated: 0,
    deleted: 0,
    renewed: 0,
    touched: 0,
    resealed: 0,
    cleared: 0,
    oversize: 0,
    errors: 0,
    swept: 0,
    lastError: "",
  };
}

/** Control characters or non-ASCII: not something to put in a header as it is. */
function headerSafe(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

/**
 * The update header's value arrives as latin1 text (one char per byte). Unescaped non-ASCII
 * from a backend is UTF-8 (the encoding's own charset), so read it as such: otherwise "ä"
 * written raw would be stored as the two characters "Ã¤".
 */
function utf8(s: string): string {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return Buffer.from(s, "latin1").toString("utf8");
  return s;
}

/** One [session.NAME]. */
export class SessionManager {
  readonly name: string;
  readonly options: SessionOptions;
  readonly stats: SessionStats = newStats();
  /** cookie store only */
  readonly sealer: Sealer | null;
  private sqliteStore: SqliteStore | null = null;
  private redisStore: RedisStore | null = null;
  private sweepTimer: ReturnType<typeof setInterval> | null = null;
  private closed = false;
  private readonly views: (SessionView | undefined)[] = [undefined, undefined];
  private readonly plan: Plan = { kind: P_NOTHING, data: "", created: 0, fresh: false, changed: false };

  /** Derives the cookie keys now (slow: scrypt, ~50-100 ms per passphrase not derived before in this process). */
  constructor(options: SessionOptions) {
    this.name = options.name;
    this.options = options;
    this.sealer =
      options.store === "cookie"
        ? new Sealer(
            options.cookie,
            options.passphrases.map((p) => deriveKey(options.name, p)),
            { maxAge: options.maxAge, idle: options.idle },
          )
        : null;
  }

  /** The view a route on a listener with (`tls`) or without TLS calls. */
  runtime(tls: boolean): SessionRuntime {
    const i = tls ? 1 : 0;
    return (this.views[i] ??= new SessionView(this, this.options.secure ?? tls));
  }

  /** Stops the sweep timer and closes the store. Later calls on the runtimes give empty sessions (status "error"). */
  close(): void {
    this.closed = true;
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    this.sqliteStore?.close();
    this.sqliteStore = null;
    this.redisStore?.close();
    this.redisStore = null;
  }

  /** sqlite: deletes expired rows now; returns how many. (Redis expires keys itself.) */
  sweep(nowMs: number = Date.now()): number {
    if (this.options.store !== "sqlite" || this.closed) return 0;
    try {
      const n = this.sqlite().sweep(Math.floor(nowMs / 1000), this.options.idle / 1000, this.options.maxAge / 1000);
      this.stats.swept += n;
      return n;
    } catch (e) {
      this.failed(e);
      return 0;
    }
  }

  /** The SQLite store, opened on first use (file and directory created then). */
  sqlite(): SqliteStore {
    if (this.closed) throw new Error(`session "${this.name}" is closed`);
    if (this.sqliteStore === null) {
      const { idle, maxAge } = this.options;
      this.sqliteStore = new SqliteStore(this.options.file, idle > 0 ? "last_seen" : maxAge > 0 ? "created" : null);
      const every = this.options.sweepEvery ?? 60_000;
      if (every > 0) {
        this.sweepTimer = setInterval(() => this.sweep(), every);
        this.sweepTimer.unref();
      }
    }
    return this.sqliteStore;
  }

  /** The Redis store; the client connects on its first command. */
  redis(): RedisStore {
    if (this.closed) throw new Error(`session "${this.name}" is closed`);
    return (this.redisStore ??= new RedisStore(this.options.redis, this.name));
  }

  // -------------------------------------------------------------------------------------------
  // open

  open(value: string | null, nowMs: number): SessionState | Promise<SessionState> {
    const nowSec = Math.floor(nowMs / 1000);
    if (value === null || value.length === 0) {
      this.stats.none++;
      return NONE;
    }
    switch (this.options.store) {
      case "cookie":
        return this.openSealed(value, nowSec);
      case "sqlite":
        return this.openSqlite(value, nowSec);
      case "redis":
        return this.openRedis(value, nowSec);
    }
  }

  private openSealed(value: string, nowSec: number): SessionState {
    const o = this.sealer!.open(value, nowSec);
    switch (o.status) {
      case "ok":
        this.stats.opened++;
        return new State("ok", o.data, null, o.issued, o.lastSeen, o.resealNeeded);
      case "expired":
        this.stats.expired++;
        return new State("expired", "", null, o.issued, o.lastSeen, false);
      case "none":
        this.stats.none++;
        return NONE;
      default:
        this.stats.invalid++;
        return new State("invalid", "", null, 0, 0, false);
    }
  }

  private openSqlite(value: string, nowSec: number): SessionState {
    if (!isId(value)) {
      this.stats.invalid++;
      return new State("invalid", "", null, 0, 0, false);
    }
    let row;
    try {
      row = this.sqlite().get(value);
    } catch (e) {
      this.failed(e);
      return new State("error", "", value, 0, 0, false);
    }
    if (row === null) return this.unknown(value);
    if (this.expired(row.created, row.last_seen, nowSec)) {
      try {
        this.sqlite().delete(value);
      } catch (e) {
        this.failed(e);
      }
      this.stats.expired++;
      return new State("expired", "", value, row.created, row.last_seen, false);
    }
    this.stats.opened++;
    return new State("ok", row.data, value, row.created, row.last_seen, false);
  }

  private async openRedis(value: string, nowSec: number): Promise<SessionState> {
    if (!isId(value)) {
      this.stats.invalid++;
      return new State("invalid", "", null, 0, 0, false);
    }
    let rec: RedisRecord | null;
    try {
      rec = await this.redis().get(value);
      this.redisDown = false;
    } catch (e) {
      this.failed(e);
      return new State("error", "", value, 0, 0, false);
    }
    if (rec === null) return this.unknown(value);
    if (this.expired(rec.created, rec.lastSeen, nowSec)) {
      try {
        this.redis()
          .delete(value)
          .catch((e) => this.failed(e));
      } catch (e) {
        this.failed(e);
      }
      this.stats.expired++;
      return new State("expired", "", value, rec.created, rec.lastSeen, false);
    }
    this.stats.opened++;
    return new State("ok", rec.data, value, rec.created, rec.lastSeen, false);
  }

  private unknown(id: string): SessionState {
    this.stats.invalid++;
    this.stats.unknown++;
    return new State("invalid", "", id, 0, 0, false);
  }

  private expired(created: number, lastSeen: number, nowSec: number): boolean {
    const { maxAge, idle } = this.options;
    return (maxAge > 0 && (nowSec - created) * 1000 >= maxAge) || (idle > 0 && (nowSec - lastSeen) * 1000 >= idle);
  }

  /** Redis failed and has not answered since: issue no cookie for a session that could not be stored */
  private redisDown = false;
  /** Redis writes sent and not yet answered (see commitRedis) */
  private readonly inflight = new Set<Promise<unknown>>();

  /** Resolves once every Redis write sent so far has been answered (for a graceful stop, and tests). */
  async settled(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  private lastProbe = 0;

  private probe(nowMs: number): void {
    if (nowMs - this.lastProbe < 1000) return;
    this.lastProbe = nowMs;
    this.track(this.redis().ping());
  }

  private track(p: Promise<unknown>): void {
    this.inflight.add(p);
    p.then(
      () => {
        this.redisDown = false;
        this.inflight.delete(p);
      },
      (e) => {
        this.failed(e);
        this.inflight.delete(p);
      },
    );
  }

  private failed(e: unknown): void {
    if (this.options.store === "redis") this.redisDown = true;
    this.stats.errors++;
    this.stats.lastError = e instanceof Error ? e.message : String(e);
  }

  // -------------------------------------------------------------------------------------------
  // commit

  /** Fills this.plan; counts the outcome. */
  private decide(s: SessionState, update: string | null, renew: boolean, nowSec: number): Plan {
    const p = this.plan;
    p.kind = P_NOTHING;
    if (s.status === "error") return p;
    const live = s.status === "ok";
    let data = live ? s.data : "";
    let changed = false;
    if (update !== null) {
      const next = update.length === 0 ? "" : canonical(utf8(update));
      changed = next !== data;
      data = next;
    }
    if (data.length === 0) {
      if (live) {
        p.kind = P_DELETE;
        this.stats.deleted++;
      } else if (s.status === "invalid" || s.status === "expired") {
        p.kind = P_CLEAR;
        this.stats.cleared++;
      }
      return p;
    }
    const fresh = !live || renew;
    if (!fresh && !changed && !s.resealNeeded && (nowSec - s.lastSeen) * 1000 < this.options.updateInterval) return p;
    if (!live) this.stats.created++;
    else {
      if (renew) this.stats.renewed++;
      if (changed) this.stats.updated++;
      else if (s.resealNeeded) this.stats.resealed++;
      else if (!renew) this.stats.touched++;
    }
    p.kind = P_WRITE;
    p.data = data;
    p.created = fresh ? nowSec : s.created;
    p.fresh = fresh;
    p.changed = changed;
    return p;
  }

  commit(view: SessionView, s: SessionState, update: string | null, renew: boolean, nowMs: number): Uint8Array | null {
    const nowSec = Math.floor(nowMs / 1000);
    const p = this.decide(s, update, renew, nowSec);
    if (p.kind === P_NOTHING) return null;
    switch (this.options.store) {
      case "cookie":
        if (p.kind !== P_WRITE) return view.deleteLine;
        return view.line(this.sealer!.seal(p.data, p.created, nowSec), this.maxAgeSec(p.created, nowMs));
      case "sqlite":
        return this.commitSqlite(view, s, p, nowSec, nowMs);
      case "redis":
        return this.commitRedis(view, s, p.kind, p.data, p.created, p.fresh, nowSec, nowMs);
    }
  }

  private commitSqlite(view: SessionView, s: SessionState, p: Plan, nowSec: number, nowMs: number): Uint8Array | null {
    try {
      if (p.kind !== P_WRITE) {
        if (p.kind === P_DELETE && s.id !== null) this.sqlite().delete(s.id);
        return view.deleteLine;
      }
      const db = this.sqlite();
      let id = s.status === "ok" ? s.id! : null;
      if (p.fresh) {
        const next = newId();
        if (id !== null) db.replace(id, next, p.data, p.created, nowSec);
        else db.insert(next, p.data, p.created, nowSec);
        id = next;
      } else if (!(p.changed ? db.update(id!, p.data, nowSec) : db.touch(id!, nowSec))) {
        // swept between this request's open and its commit: write it back
        db.insert(id!, p.data, p.created, nowSec);
      }
      return view.line(id!, this.maxAgeSec(p.created, nowMs));
    } catch (e) {
      this.failed(e);
      return p.kind === P_WRITE ? null : view.deleteLine;
    }
  }

  /**
   * Redis writes are sent without waiting: the id and the Set-Cookie line do not depend on
   * Redis's answer, and the client's next request reads through the same auto-pipelined
   * connection, so its GET is queued behind this write. A failed write is counted and logged
   * in stats; the client then finds no session (an empty one), never an error.
   */
  private commitRedis(
    view: SessionView,
    s: SessionState,
    kind: number,
    data: string,
    created: number,
    fresh: boolean,
    nowSec: number,
    nowMs: number,
  ): Uint8Array | null {
    try {
      const store = this.redis();
      if (kind !== P_WRITE) {
        if (kind === P_DELETE && s.id !== null) this.track(store.delete(s.id));
        return view.deleteLine;
      }
      // Redis is failing: a cookie for a session that cannot be stored would only mislead.
      // Ask it (at most once a second) whether it is back: clients without a cookie never
      // read from it, so without this nothing would ever clear redisDown.
      if (this.redisDown) {
        this.probe(nowMs);
        return null;
      }
      const rec = { data, created, lastSeen: nowSec };
      const ttl = this.ttlMs(created, nowMs);
      const old = s.status === "ok" ? s.id! : null;
      let id = old!;
      if (fresh) {
        id = newId();
        this.track(old !== null ? store.replace(old, id, rec, ttl) : store.put(id, rec, ttl));
      } else this.track(store.put(id, rec, ttl));
      return view.line(id, this.maxAgeSec(created, nowMs));
    } catch (e) {
      this.failed(e);
      return kind === P_WRITE ? null : view.deleteLine;
    }
  }

  /** ms left of a session created at `created` (s) and used now; 0 = no limit. */
  private ttlMs(created: number, nowMs: number): number {
    const { maxAge, idle } = this.options;
    let left = idle > 0 ? idle : Infinity;
    if (maxAge > 0) left = Math.min(left, created * 1000 + maxAge - nowMs);
    return left === Infinity ? 0 : Math.max(1, left);
  }

  /** Max-Age for the cookie, seconds; -1 = none (a browser-session cookie). */
  private maxAgeSec(created: number, nowMs: number): number {
    const ttl = this.ttlMs(created, nowMs);
    return ttl === 0 ? -1 : Math.max(1, Math.floor(ttl / 1000));
  }
}

function latin1(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, "latin1"));
}

/** A [session.NAME] as one route sees it: Secure decided, Set-Cookie bytes prepared. */
export class SessionView implements SessionRuntime {
  readonly name: string;
  readonly store: SessionStoreKind;
  readonly async: boolean;
  readonly cookie: string;
  readonly cookieName: Uint8Array;
  readonly header: string;
  readonly headerLower: Uint8Array;
  readonly updateHeaderLower: Uint8Array;
  readonly renewHeaderLower: Uint8Array;
  readonly secure: boolean;
  readonly stats: SessionStats;
  /** "Set-Cookie: NAME=; <attributes>; Max-Age=0 ...\r\n" */
  readonly deleteLine: Uint8Array;
  private readonly manager: SessionManager;
  private readonly linePrefix: string;
  private readonly attrsBefore: string;
  private readonly attrsAfter: string;
  private readonly headerPrefix: string;

  constructor(manager: SessionManager, secure: boolean) {
    const o = manager.options;
    this.manager = manager;
    this.name = o.name;
    this.store = o.store;
    this.async = o.store === "redis";
    this.cookie = o.cookie;
    this.cookieName = latin1(o.cookie);
    this.header = o.header;
    this.headerLower = latin1(o.header.toLowerCase());
    this.updateHeaderLower = latin1(o.updateHeader.toLowerCase());
    this.renewHeaderLower = latin1(o.renewHeader.toLowerCase());
    // browsers drop a SameSite=None cookie that is not Secure
    this.secure = secure || o.samesite === "None";
    this.stats = manager.stats;
    this.linePrefix = `Set-Cookie: ${o.cookie}=`;
    this.attrsBefore = `; Path=${o.path}${o.domain === null ? "" : `; Domain=${o.domain}`}`;
    this.attrsAfter = `${o.httponly ? "; HttpOnly" : ""}${this.secure ? "; Secure" : ""}; SameSite=${o.samesite}\r\n`;
    this.headerPrefix = `${o.header}: `;
    this.deleteLine = latin1(`${this.linePrefix}${this.attrsBefore}; Max-Age=0${this.attrsAfter}`);
  }

  open(cookieValue: string | null, nowMs: number): SessionState | Promise<SessionState> {
    return this.manager.open(cookieValue, nowMs);
  }

  requestHeader(state: SessionState): Uint8Array | null {
    if (state.status !== "ok" || state.data.length === 0) return null;
    // stored rows are the operator's to edit: never let one break the head
    const data = headerSafe(state.data) ? state.data : canonical(state.data);
    if (data.length === 0) return null;
    return Buffer.from(`${this.headerPrefix}${data}\r\n`, "latin1");
  }

  settled(): Promise<void> {
    return this.manager.settled();
  }

  commit(state: SessionState, update: string | null, renew: boolean, nowMs: number): Uint8Array | null {
    return this.manager.commit(this, state, update, renew, nowMs);
  }

  /** "Set-Cookie: NAME=value; Path=..; Max-Age=..; ...\r\n" */
  line(value: string, maxAgeSec: number): Uint8Array {
    if (value.length + this.cookie.length + 1 > COOKIE_LIMIT) this.stats.oversize++;
    const age = maxAgeSec < 0 ? "" : `; Max-Age=${maxAgeSec}`;
    return Buffer.from(`${this.linePrefix}${value}${this.attrsBefore}${age}${this.attrsAfter}`, "latin1");
  }
}
