// [session.NAME] tables -> SessionManager objects (src/session/session.ts), with the rules
// that need more than one key: which keys each store takes, passphrase length, lifetimes.
// Cookie keys are derived here (scrypt, ~50-100 ms per passphrase the first time in a
// process): config compile is the one place allowed to be slow. Nothing is opened here:
// server-side stores open on first use, so `latch check` touches no file and no socket.

import { resolve } from "node:path";
import { MIN_PASSPHRASE_CHARS } from "../session/seal.ts";
import { SessionManager } from "../session/session.ts";
import { DEFAULT_REDIS_URL } from "../session/store-redis.ts";
import type { KeyPath } from "./locate.ts";
import type { SessionInput } from "./schema.ts";

type Fail = (path: KeyPath, message: string) => void;

const REDIS_SCHEMES = new Set(["redis:", "rediss:", "valkey:", "valkeys:", "redis+tls:", "redis+unix:", "redis+tls+unix:"]);

/** Every [session.NAME], by name. Problems go to `fail`; a session with problems maps to null. */
export function compileSessions(input: Readonly<Record<string, SessionInput>>, stateDir: string, fail: Fail): Map<string, SessionManager | null> {
  const out = new Map<string, SessionManager | null>();
  for (const [name, s] of Object.entries(input)) out.set(name, compileSession(name, s, ["session", name], stateDir, fail));
  return out;
}

function compileSession(name: string, s: SessionInput, path: KeyPath, stateDir: string, fail: Fail): SessionManager | null {
  let ok = true;
  const bad = (key: KeyPath, message: string): void => {
    ok = false;
    fail([...path, ...key], message);
  };

  const passphrases = s.passphrases ?? [];
  if (s.store === "cookie") {
    if (passphrases.length === 0) bad(["passphrases"], `store = "cookie" needs passphrases = ["<at least ${MIN_PASSPHRASE_CHARS} characters>"] to seal the cookie`);
    const seen = new Map<string, number>();
    passphrases.forEach((p, i) => {
      // never echo a secret into a log: say how long it is, not what it is
      const chars = [...p].length;
      if (chars < MIN_PASSPHRASE_CHARS) {
        bad(["passphrases", i], `passphrase ${i + 1} is ${chars} characters long; use at least ${MIN_PASSPHRASE_CHARS} (a random one: openssl rand -base64 32)`);
      }
      const first = seen.get(p);
      if (first !== undefined) bad(["passphrases", i], `passphrase ${i + 1} repeats passphrase ${first + 1}`);
      else seen.set(p, i);
    });
  } else {
    if (s.passphrases !== undefined) bad(["passphrases"], `passphrases are only used by store = "cookie" (the ${s.store} store keeps only a random id in the cookie)`);
    // a row nobody comes back for would stay forever
    if (s.idle === undefined && s.max_age === undefined) bad(["store"], `store = "${s.store}" needs idle or max_age, so that abandoned sessions are removed`);
  }

  let redis = DEFAULT_REDIS_URL;
  if (s.redis !== undefined) {
    if (s.store !== "redis") bad(["redis"], `redis is only used by store = "redis"`);
    // not echoed: a URL may carry a password
    else if (!redisUrl(s.redis)) bad(["redis"], `the value is not a Redis URL (redis://[user:password@]host:port[/db], rediss://... for TLS)`);
    else redis = s.redis;
  }

  const idle = s.idle ?? 0;
  const maxAge = s.max_age ?? 0;
  if (idle > 0 && s.update_interval >= idle) {
    bad(["update_interval"], `update_interval must be shorter than idle (${s.update_interval} ms >= ${idle} ms): sessions in use would expire`);
  }

  const lower = (h: string) => h.toLowerCase();
  if (lower(s.renew_header) === lower(s.update_header)) bad(["renew_header"], `renew_header and update_header must differ`);

  const samesite = canonicalSameSite(s.samesite);
  // RFC 6265bis cookie prefixes: browsers refuse the cookie otherwise
  const prefixed = s.cookie.startsWith("__Secure-") || s.cookie.startsWith("__Host-");
  if (prefixed && s.secure === false) bad(["secure"], `a cookie named "${s.cookie}" must be Secure`);
  if (s.cookie.startsWith("__Host-")) {
    if (s.domain !== undefined) bad(["domain"], `a cookie named "${s.cookie}" may not have a domain`);
    if (s.path !== "/") bad(["path"], `a cookie named "${s.cookie}" must have path = "/"`);
  }

  if (!ok) return null;
  return new SessionManager({
    name,
    store: s.store,
    cookie: s.cookie,
    passphrases,
    maxAge,
    idle,
    updateInterval: s.update_interval,
    header: s.header,
    updateHeader: s.update_header,
    renewHeader: s.renew_header,
    path: s.path,
    domain: s.domain ?? null,
    httponly: s.httponly,
    secure: s.secure ?? (prefixed ? true : null),
    samesite,
    file: resolve(stateDir, `sessions-${name}.sqlite`),
    redis,
  });
}

function redisUrl(text: string): boolean {
  try {
    return REDIS_SCHEMES.has(new URL(text).protocol);
  } catch {
    return false;
  }
}

function canonicalSameSite(s: string): "Lax" | "Strict" | "None" {
  const lower = s.toLowerCase();
  return lower === "strict" ? "Strict" : lower === "none" ? "None" : "Lax";
}
