// Persistence parity with HAProxy (SPEC §4: "every mode must behave as its origin does").
//
// One list of scenarios, run against two proxies (Hono common.case.test.ts style): Latch
// in-process, and Debian's HAProxy 2.6 (`haproxy -db -f cfg`) with the equivalent config.
// Each case asserts what a client sees (status, which backend answered, Set-Cookie with
// attribute names compared case-insensitively - HAProxy writes `path=/`, Latch `Path=/`)
// and what the backend sees (its Cookie header after indirect/prefix stripping).
//
// Where the two legitimately differ, the case says so in a comment and asserts each side's
// behaviour explicitly (`ctx.proxy === "haproxy" ? ... : ...`); nothing is papered over.
// The HAProxy half is skipped only when no haproxy binary is installed.
//
// Every case starts fresh backends and a fresh proxy, so roundrobin always starts at ap01.
// Loopback only; every haproxy started is stopped (per case, and again in afterAll).

import { afterAll, describe, expect, test } from "bun:test";
import { startLatch, simpleConfig } from "../helpers/latch.ts";
import { recordingBackend, request, type RawResponse } from "../helpers/raw.ts";
import { HAPROXY, startHaproxy, stopAllHaproxy } from "../helpers/haproxy.ts";

type ProxyName = "latch" | "haproxy";
type Backend = ReturnType<typeof recordingBackend>;
type Respond = (name: string, req: { head: string; body: Buffer; conn: number }, n: number) => string;

/** One persistence setup, written for both proxies. */
interface Setup {
  /** body of Latch's [backend.app.persist] */
  latch: string;
  /** HAProxy directives in the `listen` section (cookie ..., stick ...) */
  haproxy: string;
  /** indices of servers configured disabled (Latch `disabled = true`, HAProxy `disabled`) */
  disabled?: number[];
  /** the backends' answer; default: 200 with X-Server and Cache-Control: max-age=60 */
  respond?: Respond;
  /** more of Latch's [backend.app] (e.g. [[backend.app.ignore_persist]] tables) */
  latchBackend?: string;
  /** more HAProxy directives in the `listen` section (acl, ignore-persist) */
  haproxyExtra?: string;
}

interface Sent {
  method?: string;
  path?: string;
  cookie?: string;
  body?: string;
  /** more request header lines, each ending in \r\n */
  headers?: string;
}

interface Got {
  raw: RawResponse;
  status: number;
  /** X-Server of the answer: which backend answered */
  server: string | undefined;
  /** Set-Cookie values, normalised (attribute names lower-cased, `; ` separated) */
  setCookie: string[];
  /** Cache-Control values, lower-cased */
  cacheControl: string[];
  /** the Cookie header the answering backend received, as written, or null (none) */
  backendCookieRaw: string | null;
  /** the same, as `name=value` pairs joined by "; " (separator spacing normalised) */
  backendCookie: string | null;
}

interface Ctx {
  proxy: ProxyName;
  send(s?: Sent): Promise<Got>;
  backends: Backend[];
}

interface Case {
  name: string;
  setup: Setup;
  run(ctx: Ctx): Promise<void>;
}

const SERVERS = ["ap01", "ap02"];

// ------------------------------------------------------------------------------ normalisers

/** `SRV=ap01; Path=/; HttpOnly` -> `SRV=ap01; path=/; httponly` (the pair itself untouched) */
function normSetCookie(v: string): string {
  const parts = v.split(";").map((s) => s.trim()).filter((s) => s !== "");
  return [
    parts[0],
    ...parts.slice(1).map((a) => {
      const eq = a.indexOf("=");
      return eq < 0 ? a.toLowerCase() : `${a.slice(0, eq).trim().toLowerCase()}=${a.slice(eq + 1).trim()}`;
    }),
  ].join("; ");
}

function cookieHeader(head: string): string | null {
  const lines = head.split("\r\n").slice(1).filter((l) => /^cookie\s*:/i.test(l));
  if (lines.length === 0) return null;
  return lines.map((l) => l.slice(l.indexOf(":") + 1).trim()).join("; ");
}

function cookiePairs(v: string | null): string | null {
  if (v === null) return null;
  return v.split(";").map((s) => s.trim()).filter((s) => s !== "").join("; ");
}

// ------------------------------------------------------------------------------ the two proxies

const now = () => Math.floor(Date.now() / 1000);

/**
 * Dated insert cookies (maxidle/maxlife) carry dates in each proxy's own encoding, so the
 * cases compare structure (`ap01|<last>|<first>`), never bytes:
 *   Latch:   unix seconds in base 36                      (src/core/persist-insert.ts)
 *   HAProxy: s30tob64(seconds >> 2): 5 characters of the standard base64 alphabet, MSB
 *            first, 4-second resolution (src/tools.c; written as (now + 3) >> 2).
 * Each proxy gets expired or future dates crafted in its own encoding.
 */
const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const DATE_ENC: Record<ProxyName, (sec: number) => string> = {
  latch: (sec) => sec.toString(36),
  haproxy: (sec) => {
    const v = sec >> 2;
    let s = "";
    for (let i = 0; i < 5; i++) s += B64[(v >> (24 - 6 * i)) & 63];
    return s;
  },
};
const DATE_DEC: Record<ProxyName, (s: string) => number> = {
  latch: (s) => parseInt(s, 36),
  haproxy: (s) => {
    let v = 0;
    for (const ch of s) v = v * 64 + B64.indexOf(ch);
    return v * 4;
  },
};

/** The listener section given to HAProxy: the same roundrobin pair and failover as Latch. */
function haproxyListen(s: Setup, ports: number[]): string {
  return `listen web
    bind 127.0.0.1:{PORT}
    balance roundrobin
    option redispatch
    ${`${s.haproxyExtra ?? ""}\n${s.haproxy}`.trim().split("\n").join("\n    ")}
${SERVERS.map((id, i) => `    server ${id} 127.0.0.1:${ports[i]} cookie ${id}${s.disabled?.includes(i) ? " disabled" : ""}`).join("\n")}
`;
}

async function startProxy(proxy: ProxyName, s: Setup, ports: number[]): Promise<{ port: number; stop(): Promise<void> }> {
  if (proxy === "haproxy") return await startHaproxy(haproxyListen(s, ports));
  const r = startLatch(
    simpleConfig({
      servers: SERVERS.map((id, i) => ({ id, port: ports[i]!, extra: s.disabled?.includes(i) ? "disabled = true" : "" })),
      balance: "roundrobin",
      backendExtra: `failover = "redispatch"\n${s.latchBackend ?? ""}`,
      persist: s.latch,
    }),
  );
  return { port: r.port, stop: () => r.stop() };
}

/** Default backend answer: explicitly cacheable (so HAProxy's nocache applies, see below). */
function answer(name: string, extra = "", body = name): string {
  return `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nX-Server: ${name}\r\n${extra}\r\n${body}`;
}
const cacheable: Respond = (name) => answer(name, "Cache-Control: max-age=60\r\n");

async function runCase(proxy: ProxyName, c: Case): Promise<void> {
  const counts = new Map<string, number>();
  const respond = c.setup.respond ?? cacheable;
  const backends = SERVERS.map((name) =>
    recordingBackend(name, (req) => {
      const n = (counts.get(name) ?? 0) + 1;
      counts.set(name, n);
      return respond(name, req, n);
    }),
  );
  let running: { port: number; stop(): Promise<void> } | null = null;
  try {
    running = await startProxy(proxy, c.setup, backends.map((b) => b.port));
    const port = running.port;
    const send = async (s: Sent = {}): Promise<Got> => {
      const method = s.method ?? (s.body !== undefined ? "POST" : "GET");
      const body = s.body ?? "";
      const raw = await request(
        port,
        `${method} ${s.path ?? "/page"} HTTP/1.1\r\nHost: shop.example\r\n` +
          (s.cookie !== undefined ? `Cookie: ${s.cookie}\r\n` : "") +
          (s.headers ?? "") +
          (method === "POST" ? `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${body.length}\r\n` : "") +
          `\r\n${body}`,
      );
      const server = raw.get("x-server");
      const b = backends[SERVERS.indexOf(server ?? "")];
      const seen = b?.requests.at(-1)?.head ?? null;
      const backendCookieRaw = seen === null ? null : cookieHeader(seen);
      return {
        raw,
        status: raw.status,
        server,
        setCookie: raw.all("set-cookie").map(normSetCookie),
        cacheControl: raw.all("cache-control").map((v) => v.toLowerCase()),
        backendCookieRaw,
        backendCookie: cookiePairs(backendCookieRaw),
      };
    };
    await c.run({ proxy, send, backends });
  } finally {
    await running?.stop();
    backends.forEach((b) => b.stop());
  }
}

// ------------------------------------------------------------------------------ the cases

const INSERT: Setup = {
  latch: `mode = "insert"\ncookie = "SRV"\nindirect = true\nnocache = true`,
  haproxy: `cookie SRV insert indirect nocache`,
};
const insertWith = (latch: string, haproxy: string, more: Partial<Setup> = {}): Setup => ({
  latch: `${INSERT.latch}\n${latch}`,
  haproxy: `${INSERT.haproxy} ${haproxy}`,
  ...more,
});
const DATED = insertWith(`maxidle = "30m"\nmaxlife = "8h"`, "maxidle 30m maxlife 8h");

const PREFIX: Setup = {
  latch: `mode = "prefix"\ncookie = "PHPSESSID"`,
  haproxy: `cookie PHPSESSID prefix`,
  respond: (name) => answer(name, "Set-Cookie: PHPSESSID=xyz123; path=/\r\n"),
};

const REWRITE: Setup = {
  latch: `mode = "rewrite"\ncookie = "SRV"`,
  haproxy: `cookie SRV rewrite`,
  // the application sets SRV at login only
  respond: (name, req) => answer(name, req.head.startsWith("POST /login") ? "Set-Cookie: SRV=anything; path=/\r\n" : ""),
};

/** The application sets PHPSESSID=<server>-<n> when the request carries none (as PHP does). */
const phpSession =
  (pad = 0): Respond =>
  (name, req, n) => {
    const has = /\r\ncookie:[^\r]*PHPSESSID=/i.test(req.head);
    const id = `${name}-${n}`.padEnd(pad, "x");
    return answer(name, has ? "" : `Set-Cookie: PHPSESSID=${id}; path=/\r\n`);
  };
const LEARN: Setup = {
  latch: `mode = "learn"\ncookie = "PHPSESSID"\nlen = 32\ntimeout = "30m"`,
  // HAProxy 2.x has no appsession; this is its documented replacement
  haproxy: `stick-table type string len 32 size 1m expire 30m
stick store-response res.cook(PHPSESSID)
stick match req.cook(PHPSESSID)`,
  respond: phpSession(),
};
const LEARN_REQ: Setup = {
  latch: `${LEARN.latch}\nrequest_learn = true`,
  // appsession ... request-learn: `stick on` = match + store-request
  haproxy: `stick-table type string len 32 size 1m expire 30m
stick store-response res.cook(PHPSESSID)
stick on req.cook(PHPSESSID)`,
  respond: phpSession(),
};

/** ignore_persist for load generators, as in seeds/003 (case-sensitive on both sides) */
const IGNORE_AB: Partial<Setup> = {
  latchBackend: `[[backend.app.ignore_persist]]\nheader = "User-Agent"\ncontains = "ApacheBench"`,
  haproxyExtra: `acl ab hdr_sub(User-Agent) ApacheBench\nignore-persist if ab`,
};
const AB = "User-Agent: ApacheBench/2.3\r\n";

const CASES: Case[] = [
  // ---------------------------------------------------------------- insert
  {
    name: "insert: a new client gets SRV=ap01 and Cache-Control: private; the backend sees no SRV",
    setup: INSERT,
    async run({ send }) {
      const r = await send();
      expect(r.status).toBe(200);
      expect(r.server).toBe("ap01");
      expect(r.setCookie).toEqual(["SRV=ap01; path=/"]);
      expect(r.cacheControl).toEqual(["max-age=60", "private"]);
      expect(r.backendCookie).toBeNull();
    },
  },
  {
    name: "insert: a persisted client stays, gets no cookie and no private; roundrobin is not advanced by it",
    setup: INSERT,
    async run({ send }) {
      expect((await send()).server).toBe("ap01");
      for (let i = 0; i < 3; i++) {
        const r = await send({ cookie: "SRV=ap02" });
        expect(r.server).toBe("ap02");
        expect(r.setCookie).toEqual([]);
        expect(r.cacheControl).toEqual(["max-age=60"]);
        expect(r.backendCookieRaw).toBeNull(); // indirect: SRV alone -> no Cookie header at all
      }
      const fresh = await send();
      expect(fresh.server).toBe("ap02");
      expect(fresh.setCookie).toEqual(["SRV=ap02; path=/"]);
    },
  },
  {
    name: "insert indirect: SRV is cut out, the other cookies reach the backend intact",
    setup: INSERT,
    async run({ send }) {
      const cases: [string, string | null][] = [
        ["a=1; SRV=ap02; b=2", "a=1; b=2"],
        ["SRV=ap02; a=1", "a=1"],
        ["a=1; SRV=ap02", "a=1"],
        ["SRV=ap02", null],
      ];
      for (const [sent, seen] of cases) {
        const r = await send({ cookie: sent });
        expect(r.server).toBe("ap02");
        expect(r.backendCookie).toBe(seen);
        if (seen !== null) expect(r.backendCookieRaw).toBe(seen); // canonical input: same bytes on both
      }
    },
  },
  {
    // DIFFERENCE (bytes only): HAProxy rebuilds a Cookie header it cuts with "; " between
    // the remaining pairs; Latch cuts the pair in place and keeps the client's separators.
    // The cookies the backend gets are the same; a header without SRV passes untouched on both.
    name: "insert indirect: separators around the cut pair (HAProxy re-spaces, Latch keeps)",
    setup: INSERT,
    async run({ proxy, send }) {
      const r = await send({ cookie: "a=1;SRV=ap02;b=2" });
      expect(r.server).toBe("ap02");
      expect(r.backendCookie).toBe("a=1; b=2");
      expect(r.backendCookieRaw).toBe(proxy === "haproxy" ? "a=1; b=2" : "a=1;b=2");
      const untouched = await send({ cookie: "a=1;b=2" });
      expect(untouched.backendCookieRaw).toBe("a=1;b=2");
    },
  },
  {
    name: "insert: a cookie naming no server is balanced and replaced",
    setup: INSERT,
    async run({ send }) {
      const r = await send({ cookie: "a=1; SRV=zz99" });
      expect(r.server).toBe("ap01");
      expect(r.setCookie).toEqual(["SRV=ap01; path=/"]);
      expect(r.backendCookie).toBe("a=1");
    },
  },
  {
    name: "insert: a cookie for a disabled server is redispatched and re-persisted",
    setup: { ...INSERT, disabled: [1] },
    async run({ send }) {
      for (const cookie of ["SRV=ap02", "a=1; SRV=ap02; b=2"]) {
        const r = await send({ cookie });
        expect(r.status).toBe(200);
        expect(r.server).toBe("ap01");
        expect(r.setCookie).toEqual(["SRV=ap01; path=/"]);
        expect(r.cacheControl).toEqual(["max-age=60", "private"]);
        expect(r.backendCookie).toBe(cookie === "SRV=ap02" ? null : "a=1; b=2");
      }
    },
  },
  {
    name: "insert postonly: GET responses carry no cookie, the POST response does",
    setup: insertWith("postonly = true", "postonly"),
    async run({ proxy, send }) {
      const g1 = await send();
      expect(g1.server).toBe("ap01");
      expect(g1.setCookie).toEqual([]);
      expect(g1.cacheControl).toEqual(["max-age=60"]);
      const post = await send({ path: "/login", body: "user=x" });
      expect(post.server).toBe("ap02");
      expect(post.setCookie).toEqual(["SRV=ap02; path=/"]);
      // DIFFERENCE (see the nocache case): HAProxy never counts a response to POST as
      // cacheable, so its nocache adds no private there; Latch marks every response that
      // carries the inserted cookie.
      expect(post.cacheControl).toEqual(proxy === "haproxy" ? ["max-age=60"] : ["max-age=60", "private"]);
      const g2 = await send({ cookie: "SRV=ap02" });
      expect(g2.server).toBe("ap02");
      expect(g2.setCookie).toEqual([]);
    },
  },
  {
    name: "insert without preserve: the backend's own SRV cookie is replaced by the proxy's",
    setup: {
      ...INSERT,
      respond: (name) => answer(name, "Cache-Control: max-age=60\r\nSet-Cookie: SRV=mine\r\nSet-Cookie: other=1\r\n"),
    },
    async run({ send }) {
      const r = await send();
      expect(r.server).toBe("ap01");
      expect(r.setCookie.sort()).toEqual(["SRV=ap01; path=/", "other=1"].sort());
    },
  },
  {
    name: "insert preserve: the backend deleting SRV (logout) is left alone and nothing is inserted",
    setup: insertWith("preserve = true", "preserve", {
      respond: (name, req) =>
        answer(name, "Cache-Control: max-age=60\r\n" + (req.head.startsWith("GET /logout") ? "Set-Cookie: SRV=; Max-Age=0\r\n" : "")),
    }),
    async run({ send }) {
      const fresh = await send();
      expect(fresh.setCookie).toEqual(["SRV=ap01; path=/"]);
      const out = await send({ path: "/logout", cookie: "SRV=ap01" });
      expect(out.server).toBe("ap01");
      expect(out.setCookie).toEqual(["SRV=; max-age=0"]);
      expect(out.cacheControl).toEqual(["max-age=60"]);
      // a new client logging out: the backend's deletion wins over an insert too
      const anon = await send({ path: "/logout" });
      expect(anon.server).toBe("ap02");
      expect(anon.setCookie).toEqual(["SRV=; max-age=0"]);
    },
  },
  {
    name: "insert httponly secure: the attributes follow path",
    setup: insertWith("httponly = true\nsecure = true", "httponly secure"),
    async run({ send }) {
      const r = await send();
      expect(r.setCookie).toEqual(["SRV=ap01; path=/; httponly; secure"]);
    },
  },
  {
    // DIFFERENCE: when `nocache` adds Cache-Control: private.
    // HAProxy adds it only when it judges the response cacheable: explicit freshness
    // (max-age, Expires, Last-Modified) and no private/no-cache/no-store; a response with no
    // caching headers at all, or only `public`/`must-revalidate`, gets the cookie and no
    // private; nor does a response to POST (postonly case). Latch adds private to every
    // response carrying the inserted cookie unless it is already private/no-cache/no-store
    // (SPEC §4.1; a shared cache may still store a response without freshness information
    // heuristically).
    name: "insert nocache: which responses get Cache-Control: private (differs)",
    setup: {
      ...INSERT,
      respond: (name, req) => {
        const m = /^GET \/cc\/(\w+)/.exec(req.head);
        const hdr: Record<string, string> = {
          none: "",
          public: "Cache-Control: public\r\n",
          lastmod: "Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n",
          nostore: "Cache-Control: no-store\r\n",
        };
        return answer(name, hdr[m?.[1] ?? "none"] ?? "");
      },
    },
    async run({ proxy, send }) {
      const none = await send({ path: "/cc/none" });
      expect(none.setCookie).toEqual(["SRV=ap01; path=/"]);
      expect(none.cacheControl).toEqual(proxy === "haproxy" ? [] : ["private"]);
      const pub = await send({ path: "/cc/public" });
      expect(pub.setCookie).toEqual(["SRV=ap02; path=/"]);
      expect(pub.cacheControl).toEqual(proxy === "haproxy" ? ["public"] : ["public", "private"]);
      // the same on both: explicit freshness -> private added; no-store -> left alone
      const lm = await send({ path: "/cc/lastmod" });
      expect(lm.setCookie).toEqual(["SRV=ap01; path=/"]);
      expect(lm.cacheControl).toEqual(["private"]);
      const ns = await send({ path: "/cc/nostore" });
      expect(ns.setCookie).toEqual(["SRV=ap02; path=/"]);
      expect(ns.cacheControl).toEqual(["no-store"]);
    },
  },
  {
    name: "insert maxidle/maxlife: a fresh client gets a dated cookie that is accepted back",
    setup: DATED,
    async run({ proxy, send }) {
      const r = await send();
      expect(r.server).toBe("ap01");
      const m = /^SRV=(ap01)\|([^|;]+)\|([^|;]+); path=\/$/.exec(r.setCookie[0] ?? "");
      expect(m).not.toBeNull();
      // both dates are "now" in the proxy's own encoding (HAProxy: 4 s resolution)
      expect(Math.abs(DATE_DEC[proxy](m![2]!) - now())).toBeLessThan(10);
      expect(m![3]).toBe(m![2]);
      // sent back at once: routes to ap01 (roundrobin would say ap02), not re-issued
      const back = await send({ cookie: `SRV=${m![1]}|${m![2]}|${m![3]}` });
      expect(back.server).toBe("ap01");
      expect(back.setCookie).toEqual([]);
      expect(back.backendCookieRaw).toBeNull();
    },
  },
  {
    name: "insert maxidle/maxlife: an undated cookie is accepted and dated",
    setup: DATED,
    async run({ proxy, send }) {
      const r = await send({ cookie: "SRV=ap02" });
      expect(r.server).toBe("ap02");
      const m = /^SRV=ap02\|([^|;]+)\|([^|;]+); path=\/$/.exec(r.setCookie[0] ?? "");
      expect(m).not.toBeNull();
      expect(Math.abs(DATE_DEC[proxy](m![1]!) - now())).toBeLessThan(10);
    },
  },
  {
    name: "insert maxidle/maxlife: past maxidle or maxlife the cookie counts as absent (dates in each proxy's encoding)",
    setup: DATED,
    async run({ proxy, send }) {
      const enc = DATE_ENC[proxy];
      const idle = now() - 2 * 3600; // 2 h unseen > maxidle 30m
      const r1 = await send({ cookie: `SRV=ap02|${enc(idle)}|${enc(idle)}` });
      expect(r1.server).toBe("ap01");
      expect(r1.setCookie[0]).toMatch(/^SRV=ap01\|[^|;]+\|[^|;]+; path=\/$/);
      expect(r1.backendCookieRaw).toBeNull();
      const old = now() - 9 * 3600; // first seen 9 h ago > maxlife 8h, though seen just now
      const r2 = await send({ cookie: `SRV=ap01|${enc(now())}|${enc(old)}` });
      expect(r2.server).toBe("ap02");
      expect(r2.setCookie[0]).toMatch(/^SRV=ap02\|[^|;]+\|[^|;]+; path=\/$/);
    },
  },

  {
    name: "insert maxidle/maxlife: dates more than a day ahead are rejected, an hour ahead accepted as is",
    setup: DATED,
    async run({ proxy, send }) {
      const enc = DATE_ENC[proxy];
      const far = now() + 2 * 86400;
      const r1 = await send({ cookie: `SRV=ap02|${enc(far)}|${enc(far)}` });
      expect(r1.server).toBe("ap01");
      expect(r1.setCookie[0]).toMatch(/^SRV=ap01\|/);
      const near = now() + 3600;
      const r2 = await send({ cookie: `SRV=ap02|${enc(near)}|${enc(near)}` });
      expect(r2.server).toBe("ap02");
      expect(r2.setCookie).toEqual([]);
    },
  },
  {
    // DIFFERENCE: when the last-seen date is renewed. HAProxy re-issues the cookie as soon as
    // its last-seen date is in the past (4 s resolution), i.e. on nearly every request of an
    // active client. Latch renews it once a quarter of maxidle has passed (here 7.5 min), so
    // an active client gets a Set-Cookie every few minutes rather than on every page; the
    // price is that idleness is counted from the last renewal (up to maxidle/4 early).
    // Both keep the first-seen date, and both route to the cookie's server.
    name: "insert maxidle/maxlife: renewal of the last-seen date (differs: HAProxy every request, Latch after maxidle/4)",
    setup: DATED,
    async run({ proxy, send }) {
      const enc = DATE_ENC[proxy];
      const first = enc(now() - 3600);
      const minute = await send({ cookie: `SRV=ap02|${enc(now() - 60)}|${first}` });
      expect(minute.server).toBe("ap02");
      if (proxy === "haproxy") {
        expect(minute.setCookie).toHaveLength(1);
        const m = /^SRV=ap02\|([^|;]+)\|([^|;]+); path=\/$/.exec(minute.setCookie[0]!);
        expect(Math.abs(DATE_DEC[proxy](m![1]!) - now())).toBeLessThan(10);
        expect(m![2]).toBe(first);
      } else {
        expect(minute.setCookie).toEqual([]);
      }
      // past a quarter of maxidle: renewed on both, first-seen kept
      const quarter = await send({ cookie: `SRV=ap02|${enc(now() - 15 * 60)}|${first}` });
      expect(quarter.server).toBe("ap02");
      const m = /^SRV=ap02\|([^|;]+)\|([^|;]+); path=\/$/.exec(quarter.setCookie[0] ?? "");
      expect(m).not.toBeNull();
      expect(Math.abs(DATE_DEC[proxy](m![1]!) - now())).toBeLessThan(10);
      expect(m![2]).toBe(first);
    },
  },
  {
    // DIFFERENCE (format): with maxidle alone HAProxy writes one date (`ap01|<last>`) and
    // adds the first-seen date only with maxlife; Latch always writes both.
    name: "insert maxidle alone: the value's dates (differs: HAProxy one, Latch two)",
    setup: insertWith(`maxidle = "30m"`, "maxidle 30m"),
    async run({ proxy, send }) {
      const r = await send();
      expect(r.server).toBe("ap01");
      expect(r.setCookie[0]).toMatch(proxy === "haproxy" ? /^SRV=ap01\|[^|;]+; path=\/$/ : /^SRV=ap01\|[^|;]+\|[^|;]+; path=\/$/);
      // and it is accepted back
      const v = /^SRV=([^;]+);/.exec(r.setCookie[0]!)![1];
      const back = await send({ cookie: `SRV=${v}` });
      expect(back.server).toBe("ap01");
    },
  },
  {
    name: "insert ignore_persist (ignore-persist): a load generator's cookie is not followed and nothing is inserted",
    setup: { ...INSERT, ...IGNORE_AB },
    async run({ send }) {
      const got: (string | undefined)[] = [];
      for (let i = 0; i < 2; i++) {
        const r = await send({ cookie: "a=1; SRV=ap02", headers: AB });
        got.push(r.server);
        expect(r.setCookie).toEqual([]);
        expect(r.cacheControl).toEqual(["max-age=60"]);
        expect(r.backendCookie).toBe("a=1");
      }
      expect(got).toEqual(["ap01", "ap02"]);
      // others still persist
      expect((await send({ cookie: "SRV=ap02" })).server).toBe("ap02");
    },
  },

  // ---------------------------------------------------------------- prefix
  {
    name: "prefix: the backend's PHPSESSID=xyz123 reaches the client as ap01~xyz123",
    setup: PREFIX,
    async run({ send }) {
      const r = await send();
      expect(r.server).toBe("ap01");
      expect(r.setCookie).toEqual(["PHPSESSID=ap01~xyz123; path=/"]);
      expect(r.backendCookieRaw).toBeNull();
    },
  },
  {
    name: "prefix: ap02~abc routes to ap02 and the backend sees its own PHPSESSID=abc",
    setup: PREFIX,
    async run({ send }) {
      for (let i = 0; i < 3; i++) {
        const r = await send({ cookie: "PHPSESSID=ap02~abc" });
        expect(r.server).toBe("ap02");
        expect(r.backendCookieRaw).toBe("PHPSESSID=abc");
        expect(r.setCookie).toEqual(["PHPSESSID=ap02~xyz123; path=/"]);
      }
      const mixed = await send({ cookie: "a=1; PHPSESSID=ap02~abc; b=2" });
      expect(mixed.server).toBe("ap02");
      expect(mixed.backendCookieRaw).toBe("a=1; PHPSESSID=abc; b=2");
      // only the first "~" ends the prefix
      const tildes = await send({ cookie: "PHPSESSID=ap02~b~c" });
      expect(tildes.server).toBe("ap02");
      expect(tildes.backendCookieRaw).toBe("PHPSESSID=b~c");
      // an empty application value keeps its (empty) pair
      const empty = await send({ cookie: "PHPSESSID=ap02~" });
      expect(empty.server).toBe("ap02");
      expect(empty.backendCookieRaw).toBe("PHPSESSID=");
    },
  },
  {
    name: "prefix: a prefix for a disabled server is redispatched, still stripped, re-prefixed",
    setup: { ...PREFIX, disabled: [1] },
    async run({ send }) {
      const r = await send({ cookie: "PHPSESSID=ap02~abc" });
      expect(r.server).toBe("ap01");
      expect(r.backendCookieRaw).toBe("PHPSESSID=abc");
      expect(r.setCookie).toEqual(["PHPSESSID=ap01~xyz123; path=/"]);
    },
  },
  {
    // A prefix naming no server (a server since removed, `~abc`, another case): both balance,
    // prefix the answer with the server that took it, and strip everything up to the first
    // "~" whatever it names, so the application gets `abc` back.
    name: "prefix: an unknown server prefix is balanced and stripped",
    setup: PREFIX,
    async run({ proxy, send }) {
      const order = ["ap01", "ap02", "ap01"];
      const values = ["ap09~abc", "~abc", "AP01~abc"];
      for (const [i, value] of values.entries()) {
        const r = await send({ cookie: `a=1; PHPSESSID=${value}` });
        expect(r.server).toBe(order[i]);
        expect(r.setCookie).toEqual([`PHPSESSID=${order[i]}~xyz123; path=/`]);
        expect(r.backendCookieRaw).toBe("a=1; PHPSESSID=abc");
      }
    },
  },
  {
    // ignore-persist on prefix: the request is balanced but its prefix is still the
    // proxy's and is stripped; the answer's cookie is passed unprefixed (HAProxy
    // SF_IGNORE_PRST; Latch: c.persistRes).
    name: "prefix ignore_persist: balanced, prefix still stripped, response cookie not prefixed",
    setup: { ...PREFIX, ...IGNORE_AB },
    async run({ send }) {
      const got: (string | undefined)[] = [];
      for (let i = 0; i < 2; i++) {
        const r = await send({ cookie: "a=1; PHPSESSID=ap02~abc", headers: AB });
        got.push(r.server);
        expect(r.backendCookieRaw).toBe("a=1; PHPSESSID=abc");
        expect(r.setCookie).toEqual(["PHPSESSID=xyz123; path=/"]);
      }
      expect(got).toEqual(["ap01", "ap02"]);
    },
  },
  {
    // A value without "~": both balance an application value naming no server and pass it
    // untouched; when the whole value equals a server's cookie value (`PHPSESSID=ap01`), both
    // route to that server (the part before the delimiter is all of it).
    name: "prefix: a value without ~ is untouched, and routes when it equals a server's value",
    setup: PREFIX,
    async run({ proxy, send }) {
      const plain = await send({ cookie: "PHPSESSID=abc" });
      expect(plain.server).toBe("ap01");
      expect(plain.backendCookieRaw).toBe("PHPSESSID=abc");
      // roundrobin would now pick ap02 for a balanced request and ap01 after it: ask twice
      const a = await send({ cookie: "PHPSESSID=ap01" });
      const b = await send({ cookie: "PHPSESSID=ap01" });
      expect(a.backendCookieRaw).toBe("PHPSESSID=ap01");
      expect([a.server, b.server]).toEqual(["ap01", "ap01"]);
    },
  },

  // ---------------------------------------------------------------- rewrite
  {
    name: "rewrite: the backend's SRV=anything reaches the client as SRV=<server>; nothing is inserted otherwise",
    setup: REWRITE,
    async run({ send }) {
      const plain = await send();
      expect(plain.server).toBe("ap01");
      expect(plain.setCookie).toEqual([]);
      const login = await send({ path: "/login", body: "user=x" });
      expect(login.server).toBe("ap02");
      expect(login.setCookie).toEqual(["SRV=ap02; path=/"]);
    },
  },
  {
    name: "rewrite: SRV=ap02 routes to ap02 and is not stripped; an unknown value is balanced",
    setup: REWRITE,
    async run({ send }) {
      for (let i = 0; i < 3; i++) {
        const r = await send({ cookie: "a=1; SRV=ap02" });
        expect(r.server).toBe("ap02");
        expect(r.backendCookieRaw).toBe("a=1; SRV=ap02");
      }
      const login = await send({ path: "/login", body: "u=1", cookie: "SRV=ap02" });
      expect(login.server).toBe("ap02");
      expect(login.setCookie).toEqual(["SRV=ap02; path=/"]);
      const x = await send({ cookie: "SRV=zz" });
      const y = await send({ cookie: "SRV=zz" });
      expect([x.server, y.server]).toEqual(["ap01", "ap02"]);
      expect(x.backendCookieRaw).toBe("SRV=zz");
    },
  },
  {
    name: "rewrite: a cookie for a disabled server is redispatched",
    setup: { ...REWRITE, disabled: [1] },
    async run({ send }) {
      const r = await send({ path: "/login", body: "u=1", cookie: "SRV=ap02" });
      expect(r.server).toBe("ap01");
      expect(r.setCookie).toEqual(["SRV=ap01; path=/"]);
    },
  },

  // ---------------------------------------------------------------- learn
  {
    name: "learn: the first response setting PHPSESSID binds it; that cookie stays while roundrobin alternates",
    setup: LEARN,
    async run({ send }) {
      const first = await send();
      expect(first.server).toBe("ap01");
      expect(first.setCookie).toEqual(["PHPSESSID=ap01-1; path=/"]); // passed untouched
      const seq: (string | undefined)[] = [];
      const fresh: (string | undefined)[] = [];
      for (let i = 0; i < 3; i++) {
        const r = await send({ cookie: "PHPSESSID=ap01-1" });
        seq.push(r.server);
        expect(r.backendCookieRaw).toBe("PHPSESSID=ap01-1"); // not stripped
        expect(r.setCookie).toEqual([]);
        fresh.push((await send()).server);
      }
      expect(seq).toEqual(["ap01", "ap01", "ap01"]);
      expect(fresh).toEqual(["ap02", "ap01", "ap02"]);
      // the second server's sessions are learnt too
      const r = await send({ cookie: "PHPSESSID=ap02-1" });
      expect(r.server).toBe("ap02");
    },
  },
  {
    name: "learn: an unknown cookie is balanced (nothing learnt from requests without request_learn)",
    setup: LEARN,
    async run({ send }) {
      const got: (string | undefined)[] = [];
      for (let i = 0; i < 4; i++) got.push((await send({ cookie: "PHPSESSID=from-elsewhere" })).server);
      expect(got).toEqual(["ap01", "ap02", "ap01", "ap02"]);
    },
  },
  {
    name: "learn request_learn (HAProxy `stick on`): an unknown request cookie binds to the server it reached",
    setup: LEARN_REQ,
    async run({ send }) {
      const got: (string | undefined)[] = [];
      const fresh: (string | undefined)[] = [];
      for (let i = 0; i < 3; i++) {
        got.push((await send({ cookie: "PHPSESSID=from-elsewhere" })).server);
        fresh.push((await send()).server);
      }
      expect(got).toEqual(["ap01", "ap01", "ap01"]);
      expect(fresh).toEqual(["ap02", "ap01", "ap02"]);
    },
  },
  {
    // DIFFERENCE: HAProxy 2.x `ignore-persist` acts on cookie persistence only; stick-table
    // rules (the appsession replacement) still store and match for the ignored request, so
    // the table grows with every load-generator session (what seeds/003 used ignore-persist
    // on appsession to avoid). Latch's ignore_persist covers the learned table too: an
    // ignored request neither follows nor creates an entry (SPEC §4 shared rules).
    name: "learn ignore_persist (differs: HAProxy's ignore-persist does not apply to stick tables)",
    setup: { ...LEARN_REQ, ...IGNORE_AB },
    async run({ proxy, send }) {
      const ab = await send({ headers: AB });
      expect(ab.server).toBe("ap01");
      expect(ab.setCookie).toEqual(["PHPSESSID=ap01-1; path=/"]); // passed untouched on both
      const abAgain: (string | undefined)[] = [];
      for (let i = 0; i < 2; i++) abAgain.push((await send({ cookie: "PHPSESSID=ap01-1", headers: AB })).server);
      const browser: (string | undefined)[] = [];
      for (let i = 0; i < 2; i++) browser.push((await send({ cookie: "PHPSESSID=ap01-1" })).server);
      if (proxy === "haproxy") {
        // learnt from the ignored request's response, and followed by ignored requests
        expect(abAgain).toEqual(["ap01", "ap01"]);
        expect(browser).toEqual(["ap01", "ap01"]);
      } else {
        // nothing learnt, nothing followed: balanced; the browser's own request then binds it
        expect(abAgain).toEqual(["ap02", "ap01"]);
        expect(browser).toEqual(["ap02", "ap02"]);
      }
    },
  },
  {
    name: "learn len 32: only the first 32 bytes of the session id are the key",
    setup: { ...LEARN, respond: phpSession(40) },
    async run({ send }) {
      const first = await send();
      const id = /^PHPSESSID=([^;]+);/.exec(first.setCookie[0] ?? "")?.[1] ?? "";
      expect(id.length).toBe(40);
      expect(first.server).toBe("ap01");
      // same first 32 bytes, another tail: the same key
      const r = await send({ cookie: `PHPSESSID=${id.slice(0, 32)}DIFFERNT` });
      expect(r.server).toBe("ap01");
      const r2 = await send({ cookie: `PHPSESSID=${id}` });
      expect(r2.server).toBe("ap01");
      // 31 bytes: another key, balanced (roundrobin says ap02)
      const r3 = await send({ cookie: `PHPSESSID=${id.slice(0, 31)}` });
      expect(r3.server).toBe("ap02");
    },
  },
];

// ------------------------------------------------------------------------------ run both

afterAll(async () => {
  await stopAllHaproxy();
});

const PROXIES: { name: ProxyName; skip: boolean }[] = [
  { name: "latch", skip: false },
  { name: "haproxy", skip: HAPROXY === null }, // skipped only when the binary is absent
];

for (const p of PROXIES) {
  describe(p.name, () => {
    for (const c of CASES) test.skipIf(p.skip)(c.name, () => runCase(p.name, c), 20_000);
  });
}
