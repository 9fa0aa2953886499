// `store = "redis"`: sessions in Redis, shared by every Latch process and machine that points
// at the same server, the cookie holding only an opaque id. Bun's built-in RedisClient (one
// connection, auto-pipelined), so every operation is a Promise.
//
//   key   latch:session:<name>:<id>
//   value msgpack array [data, created, lastSeen]   (unix seconds)
//   TTL   what is left of the session's life: min(idle, max_age - age), as PX milliseconds
// Redis itself forgets idle sessions, so there is nothing to sweep; the times inside the value
// are checked on every read all the same (a key written without TTL by hand is not trusted).
//
// Each command is bounded by COMMAND_TIMEOUT ms: a Redis that stops answering must not hold
// requests forever. Methods reject on failure (server down, timeout, a foreign value is
// reported as null); the session runtime catches and counts.

import { RedisClient } from "bun";
import { Packr } from "msgpackr";

export const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379";
export const COMMAND_TIMEOUT = 2000;

const packr = new Packr({ useRecords: false, mapsAsObjects: false });

export interface RedisRecord {
  data: string;
  created: number;
  lastSeen: number;
}

class Timeout extends Error {
  constructor() {
    super(`Redis did not answer within ${COMMAND_TIMEOUT} ms`);
  }
}

function bounded<T>(p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Timeout()), COMMAND_TIMEOUT);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

export class RedisStore {
  readonly url: string;
  readonly prefix: string;
  private client: RedisClient | null = null;
  private closed = false;
  private lastConnectAttempt = 0;

  constructor(url: string, sessionName: string) {
    this.url = url;
    this.prefix = `latch:session:${sessionName}:`;
  }

  key(id: string): string {
    return this.prefix + id;
  }

  /** The client, (re)created when the previous one has given up reconnecting; at most one attempt a second. */
  private redis(): RedisClient {
    if (this.closed) throw new Error("session store closed");
    let c = this.client;
    if (c !== null && c.connected) return c;
    const now = Date.now();
    if (c === null || now - this.lastConnectAttempt >= 1000) {
      this.lastConnectAttempt = now;
      if (c !== null) c.close();
      c = new RedisClient(this.url, { connectionTimeout: COMMAND_TIMEOUT, autoReconnect: true, maxRetries: 3, enableOfflineQueue: true });
      this.client = c;
    }
    return c!;
  }

  async get(id: string): Promise<RedisRecord | null> {
    const raw = await bounded(this.redis().getBuffer(this.key(id)));
    if (raw === null) return null;
    return decodeRecord(raw);
  }

  /** Writes the session with a TTL of `ttlMs` (0 = none). */
  async put(id: string, rec: RedisRecord, ttlMs: number): Promise<void> {
    const value = packr.pack([rec.data, rec.created, rec.lastSeen]);
    const c = this.redis();
    if (ttlMs > 0) await bounded(c.set(this.key(id), value, "PX", String(Math.max(1, Math.ceil(ttlMs)))));
    else await bounded(c.set(this.key(id), value));
  }

  async delete(id: string): Promise<boolean> {
    return (await bounded(this.redis().del(this.key(id)))) > 0;
  }

  /** One round trip: resolves once Redis answers (used to learn that a failed Redis is back). */
  async ping(): Promise<void> {
    await bounded(this.redis().send("PING", []));
  }

  /** Milliseconds left before Redis forgets the session: -2 = no such key, -1 = no TTL. */
  async pttl(id: string): Promise<number> {
    return await bounded(this.redis().pttl(this.key(id)));
  }

  /** Renewal: the new id holds the session, then the old one is deleted (in that order: a failure loses nothing). */
  async replace(oldId: string, newId: string, rec: RedisRecord, ttlMs: number): Promise<void> {
    await this.put(newId, rec, ttlMs);
    await this.delete(oldId);
  }

  close(): void {
    this.closed = true;
    if (this.client !== null) this.client.close();
    this.client = null;
  }
}

/** [data, created, lastSeen] -> record; anything else (a value someone else wrote) -> null. */
function decodeRecord(raw: Uint8Array): RedisRecord | null {
  let v: unknown;
  try {
    v = packr.unpack(raw);
  } catch {
    return null;
  }
  if (!Array.isArray(v) || v.length !== 3) return null;
  const [data, created, lastSeen] = v as unknown[];
  if (typeof data !== "string" || typeof created !== "number" || typeof lastSeen !== "number") return null;
  if (!Number.isFinite(created) || !Number.isFinite(lastSeen)) return null;
  return { data, created, lastSeen };
}
