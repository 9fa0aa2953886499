// The shape of latch.toml, as a valibot schema. Key names are the public contract of
// /work/shared/CONFIG.md (plus the documented additions in docs/configuration.md).
//
// The schema checks types, ranges and spelling, fills defaults, and turns durations and sizes
// into milliseconds and bytes. Everything that needs more than one key at a time (does the
// route's backend exist, are cookie values unique, is a feature available in this build) is
// compile.ts's job. Every table is strict: an unknown key is an error, never ignored, because
// a misspelt `indirect` silently ignored is a production incident.

import * as v from "valibot";
import { parseDuration, parseSize } from "./duration.ts";

// ---------------------------------------------------------------------------------------------
// Messages: short, in the operator's words, with what was found.

/** How a TOML value reads in a message. */
export function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  if (typeof value === "string") return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (Array.isArray(value)) return "an array";
  if (value !== null && typeof value === "object") return "a table";
  return String(value);
}

const got = (issue: { input: unknown }): string => describe(issue.input);

/** Edit distance, to suggest the key that was meant. Keys are short; the table is tiny. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j]!;
      row[j] = Math.min(up + 1, row[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return row[b.length]!;
}

function unknownKey(key: string, known: readonly string[], where: string): string {
  let best = "";
  let bestDistance = 3; // at most two edits away, or it is not a typo
  for (const k of known) {
    const d = distance(key.toLowerCase(), k);
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return `unknown key${where}${best === "" ? "" : ` (did you mean "${best}"?)`}`;
}

/**
 * A strict table. valibot reports the table's own type error, each unknown key and each
 * missing required key through the same message function; tell them apart here.
 */
function table<const E extends v.ObjectEntries>(entries: E, where = "") {
  const known = Object.keys(entries);
  return v.strictObject(entries, (issue) => {
    const last = issue.path?.[issue.path.length - 1];
    if (issue.expected === "never") return unknownKey(String(issue.input), known, where);
    if (last?.origin === "key" && issue.input === undefined) return "required key is missing";
    return `expected a table, got ${got(issue)}`;
  });
}

// ---------------------------------------------------------------------------------------------
// Scalars

const str = () => v.string((i) => `expected a string, got ${got(i)}`);
const nonEmpty = () => v.pipe(str(), v.minLength(1, "must not be empty"));
const bool = () => v.boolean((i) => `expected true or false, got ${got(i)}`);

function int(min: number, max = Number.MAX_SAFE_INTEGER) {
  const range = max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `from ${min} to ${max}`;
  return v.pipe(
    v.number((i) => `expected an integer, got ${got(i)}`),
    v.integer((i) => `expected an integer, got ${got(i)}`),
    v.minValue(min, (i) => `must be ${range}, got ${got(i)}`),
    v.maxValue(max, (i) => `must be ${range}, got ${got(i)}`),
  );
}

function oneOf<const T extends readonly [string, ...string[]]>(options: T) {
  const list = options.map((o) => `"${o}"`).join(", ");
  return v.picklist(options, (i) => `expected one of ${list}, got ${got(i)}`);
}

/** Turns a parse-or-throw function into a transforming schema whose error is the thrown message. */
function parsed(parse: (text: string) => number) {
  return v.pipe(
    str(),
    v.rawTransform(({ dataset, addIssue, NEVER }) => {
      try {
        return parse(dataset.value);
      } catch (e) {
        addIssue({ message: (e as Error).message });
        return NEVER;
      }
    }),
  );
}

/** "30s" -> 30000 (ms) */
const duration = () => parsed(parseDuration);
/** "64KB" -> 65536 (bytes) */
const size = () => parsed(parseSize);

// RFC 9110 token / RFC 6265 cookie-name: what may be written as a header or cookie name.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const token = (what: string) => v.pipe(str(), v.regex(TOKEN, (i) => `${got(i)} is not a valid ${what}`));

// Names that appear in admin URLs, logs and metrics labels: keep them plain.
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.:-]*$/;
const name = (what: string) =>
  v.pipe(str(), v.regex(NAME, (i) => `${got(i)} is not a valid ${what} (letters, digits, "_", ".", ":", "-")`));

const BALANCE = /^(roundrobin|leastconn|random|first|source|uri|(hdr|cookie):[!#$%&'*+\-.^_`|~0-9A-Za-z]+)$/;

// ---------------------------------------------------------------------------------------------
// Tables

const globalTable = table({
  workers: v.optional(
    v.union([v.literal("auto"), int(1, 1024)], (i) => `expected a number of processes or "auto", got ${got(i)}`),
    1,
  ),
  state_dir: v.optional(nonEmpty(), ".latch"),
  /** learned tables are saved to state_dir this often; "0s": only on stop and reload */
  snapshot_interval: v.optional(duration(), "60s"),
  max_head_size: v.optional(size(), "32KB"),
  max_url_size: v.optional(size(), "8KB"),
  max_headers: v.optional(int(1, 10_000), 100),
  /** concurrent WebSocket/Upgrade tunnels in this process; beyond it 503 (0 = no limit) */
  max_tunnels: v.optional(int(0), 0),
  timeout: v.optional(
    table({
      client: v.optional(duration(), "60s"),
      head: v.optional(duration(), "10s"),
    }),
    {},
  ),
});

const adminTable = table({
  bind: nonEmpty(),
  token: v.optional(str(), ""),
});

const logTable = table({
  access: v.optional(bool(), false),
  format: v.optional(oneOf(["combined", "json"]), "combined"),
  /** access-log file, relative to the config file's directory; absent = stdout */
  file: v.optional(nonEmpty()),
});

const routeTable = table({
  host: v.optional(nonEmpty()),
  path: v.optional(
    v.pipe(str(), v.startsWith("/", (i) => `must start with "/", got ${got(i)}`)),
    "/",
  ),
  backend: nonEmpty(),
  preserve_host: v.optional(bool(), false),
  // accepted now, compiled later (see compile.ts)
  session: v.optional(nonEmpty()),
  set_headers: v.optional(v.record(token("header name"), str(), (i) => `expected a table, got ${got(i)}`)),
  remove_headers: v.optional(v.array(token("header name"), (i) => `expected an array of header names, got ${got(i)}`)),
  websocket: v.optional(
    table({
      enabled: v.optional(bool(), true),
      origins: v.optional(v.array(nonEmpty(), (i) => `expected an array of strings, got ${got(i)}`)),
      max_per_client: v.optional(int(0), 0),
    }),
  ),
});

const listenTable = table({
  name: v.optional(name("listener name")),
  bind: nonEmpty(),
  tls: v.optional(table({ cert: nonEmpty(), key: nonEmpty() })),
  redirect: v.optional(oneOf(["https"])),
  forwarded_for: v.optional(bool(), true),
  via: v.optional(str(), ""),
  route: v.optional(v.array(routeTable, (i) => `expected [[listen.route]] tables, got ${got(i)}`), []),
});

const serverTable = table({
  id: name("server id"),
  address: nonEmpty(),
  weight: v.optional(int(0, 256), 1),
  cookie: v.optional(nonEmpty()),
  route: v.optional(nonEmpty()),
  backup: v.optional(bool(), false),
  maxconn: v.optional(int(0), 0),
  /** after coming back up, the server's weight ramps from ~5% to full over this time (HAProxy slowstart) */
  slowstart: v.optional(duration(), "0s"),
  disabled: v.optional(bool(), false),
  drain: v.optional(bool(), false),
});

// Persistence: one table shape per mode, chosen by `mode`, so a key of another mode is
// reported as unknown for this one instead of being ignored.
const cookieName = () => token("cookie name");
const tableKeys = {
  len: v.optional(int(1, 4096), 64),
  timeout: v.optional(duration(), "30m"),
  capacity: v.optional(int(1, 100_000_000), 1_000_000),
  shared: v.optional(nonEmpty()),
};
const MODES = ["insert", "prefix", "rewrite", "learn", "route", "source", "header", "param"] as const;

const persistTable = v.variant(
  "mode",
  [
    table(
      {
        mode: v.literal("insert"),
        cookie: cookieName(),
        indirect: v.optional(bool(), false),
        nocache: v.optional(bool(), false),
        postonly: v.optional(bool(), false),
        preserve: v.optional(bool(), false),
        httponly: v.optional(bool(), false),
        secure: v.optional(bool(), false),
        samesite: v.optional(
          v.pipe(
            str(),
            v.check((s) => /^(lax|strict|none)$/i.test(s), (i) => `expected "Lax", "Strict" or "None", got ${got(i)}`),
          ),
        ),
        domain: v.optional(
          v.pipe(str(), v.regex(/^\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/, (i) => `${got(i)} is not a domain name`)),
        ),
        path: v.optional(
          v.pipe(
            str(),
            v.regex(/^\/[\x21-\x3a\x3c-\x7e]*$/, (i) => `must start with "/" and hold no ";", space or control byte, got ${got(i)}`),
          ),
          "/",
        ),
        maxidle: v.optional(duration(), "0s"),
        maxlife: v.optional(duration(), "0s"),
        dynamic_key: v.optional(nonEmpty()),
      },
      ' for mode = "insert"',
    ),
    table({ mode: v.literal("prefix"), cookie: cookieName() }, ' for mode = "prefix"'),
    table({ mode: v.literal("rewrite"), cookie: cookieName() }, ' for mode = "rewrite"'),
    table(
      {
        mode: v.literal("learn"),
        cookie: cookieName(),
        request_learn: v.optional(bool(), false),
        url_param: v.optional(nonEmpty()),
        ...tableKeys,
      },
      ' for mode = "learn"',
    ),
    table({ mode: v.literal("route"), cookie: cookieName(), url_param: v.optional(nonEmpty()) }, ' for mode = "route"'),
    table({ mode: v.literal("source"), ...tableKeys }, ' for mode = "source"'),
    table({ mode: v.literal("header"), header: token("header name"), ...tableKeys }, ' for mode = "header"'),
    table(
      {
        mode: v.literal("param"),
        url_param: nonEmpty(),
        cookie: v.optional(cookieName()),
        header: v.optional(token("header name")),
        ...tableKeys,
      },
      ' for mode = "param"',
    ),
  ],
  (i) => {
    const last = i.path?.[i.path.length - 1];
    if (last?.key === "mode") {
      if (i.input === undefined) return `required key is missing (one of ${MODES.join(", ")})`;
      return `expected one of ${MODES.map((m) => `"${m}"`).join(", ")}, got ${got(i)}`;
    }
    return `expected a table, got ${got(i)}`;
  },
);

/** ignore_persist / force_persist: one condition per rule; several rules are alternatives. */
const persistRule = v.pipe(
  table({
    header: v.optional(token("header name")),
    contains: v.optional(v.pipe(str(), v.minLength(1, "must not be empty"))),
    path: v.optional(v.pipe(str(), v.startsWith("/", (i) => `must start with "/", got ${got(i)}`))),
    src: v.optional(nonEmpty()),
  }),
  v.check((r) => {
    const kinds = (r.header !== undefined || r.contains !== undefined ? 1 : 0) + (r.path !== undefined ? 1 : 0) + (r.src !== undefined ? 1 : 0);
    return kinds === 1 && (r.header === undefined) === (r.contains === undefined);
  }, 'a rule has exactly one condition: header + contains, path, or src'),
);

// Active health checks (src/health/checker.ts). Cross-key rules (timeout <= interval) and the
// `expect` syntax (src/config/status-ranges.ts) are compile.ts's.
const healthTable = table({
  path: v.optional(
    v.pipe(
      str(),
      v.startsWith("/", (i) => `must start with "/", got ${got(i)}`),
      v.regex(/^[\x21-\x7e]+$/, (i) => `must hold no space or control byte, got ${got(i)}`),
    ),
    "/",
  ),
  interval: v.optional(duration(), "2s"),
  /** unset: the interval */
  timeout: v.optional(duration()),
  rise: v.optional(int(1, 100), 2),
  fall: v.optional(int(1, 100), 3),
  expect: v.optional(
    v.union([str(), int(100, 599)], (i) => `expected status codes such as "200-399", "2xx" or "200,302", got ${got(i)}`),
    "200-399",
  ),
  /** unset: the server's authority, as in its address */
  host: v.optional(v.pipe(str(), v.regex(/^[\x21-\x7e]+$/, (i) => `${got(i)} is not a valid Host header value`))),
  method: v.optional(oneOf(["GET", "HEAD"]), "GET"),
});

const backendTable = table({
  balance: v.optional(
    v.pipe(
      str(),
      v.regex(BALANCE, (i) => `expected roundrobin, leastconn, random, first, source, uri, "hdr:NAME" or "cookie:NAME", got ${got(i)}`),
    ),
    "roundrobin",
  ),
  failover: v.optional(oneOf(["redispatch", "strict"]), "redispatch"),
  hash_balance_factor: v.optional(
    v.pipe(
      v.number((i) => `expected a number, got ${got(i)}`),
      v.gtValue(1, (i) => `must be greater than 1, got ${got(i)}`),
    ),
    1.25,
  ),
  timeout: v.optional(
    table({
      connect: v.optional(duration(), "5s"),
      server: v.optional(duration(), "30s"),
      tunnel: v.optional(duration(), "1h"),
      queue: v.optional(duration(), "5s"),
      pool_idle: v.optional(duration(), "30s"),
    }),
    {},
  ),
  persist: v.optional(persistTable),
  ignore_persist: v.optional(v.array(persistRule, (i) => `expected [[...ignore_persist]] tables, got ${got(i)}`), []),
  force_persist: v.optional(v.array(persistRule, (i) => `expected [[...force_persist]] tables, got ${got(i)}`), []),
  health: v.optional(healthTable),
  server: v.pipe(
    v.array(serverTable, (i) => `expected [[...server]] tables, got ${got(i)}`),
    v.minLength(1, "a backend needs at least one [[server]]"),
  ),
});

// Proxy-managed sessions (mod_session). Cross-key rules (passphrases per store, lengths,
// update_interval against idle) are in compile-session.ts.
const sessionTable = table({
  store: v.optional(oneOf(["cookie", "sqlite", "redis"]), "cookie"),
  cookie: v.optional(cookieName(), "session"),
  passphrases: v.optional(v.array(nonEmpty(), (i) => `expected an array of strings, got ${got(i)}`)),
  max_age: v.optional(duration()),
  idle: v.optional(duration()),
  header: v.optional(token("header name"), "X-Session"),
  update_header: v.optional(token("header name"), "X-Replace-Session"),
  renew_header: v.optional(token("header name"), "X-Session-Renew"),
  update_interval: v.optional(duration(), "60s"),
  /** store = "redis": the server; default redis://127.0.0.1:6379 (applied by compile) */
  redis: v.optional(nonEmpty()),
  path: v.optional(
    v.pipe(
      str(),
      v.regex(/^\/[\x21-\x3a\x3c-\x7e]*$/, (i) => `must start with "/" and hold no ";", space or control byte, got ${got(i)}`),
    ),
    "/",
  ),
  domain: v.optional(
    v.pipe(str(), v.regex(/^\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/, (i) => `${got(i)} is not a domain name`)),
  ),
  httponly: v.optional(bool(), true),
  /** unset: on when the route's listener has TLS */
  secure: v.optional(bool()),
  samesite: v.optional(
    v.pipe(
      str(),
      v.check((s) => /^(lax|strict|none)$/i.test(s), (i) => `expected "Lax", "Strict" or "None", got ${got(i)}`),
    ),
    "Lax",
  ),
});

export const configSchema = table({
  global: v.optional(globalTable, {}),
  admin: v.optional(adminTable),
  log: v.optional(logTable, {}),
  listen: v.pipe(
    v.array(listenTable, (i) => `expected [[listen]] tables, got ${got(i)}`),
    v.minLength(1, "at least one [[listen]] table is required"),
  ),
  backend: v.optional(v.record(name("backend name"), backendTable, (i) => `expected [backend.NAME] tables, got ${got(i)}`), {}),
  session: v.optional(v.record(name("session name"), sessionTable, (i) => `expected [session.NAME] tables, got ${got(i)}`)),
});

/** The validated config: defaults filled, durations in ms, sizes in bytes. compile.ts's input. */
export type ConfigInput = v.InferOutput<typeof configSchema>;
export type BackendInput = ConfigInput["backend"][string];
export type ListenInput = ConfigInput["listen"][number];
export type RouteInput = ListenInput["route"][number];
export type ServerInput = BackendInput["server"][number];
export type PersistInput = NonNullable<BackendInput["persist"]>;
export type PersistRuleInput = BackendInput["ignore_persist"][number];
export type SessionInput = NonNullable<ConfigInput["session"]>[string];
