// Persistence ("sticky sessions"), every mode behind two phases the forwarding path calls:
//
//   persistRequest   before balancing: which server does this request's persistence name,
//                    what to cut from the request head (indirect / prefix), what to learn
//   persistLearn     after balancing: bind the learned key to the server chosen
//   persistSetCookie / persistResponseHeader
//                    while walking the response head: insert, prefix, rewrite, learn
//
// Results go to one module-level object (`pd`): a request is decided synchronously, so no
// per-request object is made. A request carrying persistence for a server that can take it
// (up, not in maintenance; draining is fine) goes there whatever the algorithm says.

import type { CompiledBackend, CompiledServer, Persist, TablePersist } from "./types.ts";
import { M_POST, type Head } from "./h1-head.ts";
import { findCookie, found, cookieCut, cut, checkValue, verdict } from "./persist-insert.ts";
import { findHeader, matchRules } from "./rules.ts";
import { planCut } from "./splice.ts";
import { counters } from "./counters.ts";

export interface ClientLike {
  readonly ip: string;
  ipBytes(): Uint8Array | null;
}

/** The request's persistence decision. */
export const pd = {
  /** the persisted server to use, or null: balance */
  server: null as CompiledServer | null,
  /** non-empty: answer 503 with this reason (failover = strict) */
  fail: "",
  /** insert mode: add the cookie to the response; first-seen date to carry */
  insert: false,
  insertFirst: 0,
  /** a cut inside Cookie header line `cutHdr` (indirect pair removal, prefix strip) */
  cutHdr: -1,
  cutS: 0,
  cutE: 0,
  /** table modes: the key to bind to the chosen server after balancing */
  learnS: -1,
  learnE: -1,
  learnIp: false,
  /** ignore_persist matched: no persistence on the request nor on its response */
  ignored: false,
  /** for the access log: what the request carried (N none, V valid, D server down, I invalid, - off) */
  seen: "-",
  /** the persistence key or value in the request head, for the access log (-1: none) */
  keyS: -1,
  keyE: -1,
};

/** url parameter search result */
const param = { s: 0, e: 0 };

/**
 * Finds `name=value` as a `;name=value` path parameter or a `?name=value` / `&name=value`
 * query parameter of the target [ts, te). Fills `param`.
 */
export function findUrlParam(buf: Uint8Array, ts: number, te: number, name: Uint8Array): boolean {
  const n = name.length;
  let i = ts;
  while (i < te) {
    const c = buf[i++];
    if (c !== 59 && c !== 63 && c !== 38) continue; // ';' '?' '&'
    if (te - i <= n || buf[i + n] !== 61) continue;
    let same = true;
    for (let j = 0; j < n; j++) {
      if (buf[i + j] !== name[j]) {
        same = false;
        break;
      }
    }
    if (!same) continue;
    const s = i + n + 1;
    let e = s;
    // a path parameter ends at '?', '/', ';' or '#'; a query parameter at '&', ';' or '#'
    while (e < te) {
      const d = buf[e];
      if (d === 38 || d === 59 || d === 35 || d === 63 || (c === 59 && d === 47)) break;
      e++;
    }
    param.s = s;
    param.e = e;
    return e > s;
  }
  return false;
}

function usable(s: CompiledServer): boolean {
  return s.state.up && s.state.admin !== "maint";
}

function reset(nowSec: number): void {
  pd.server = null;
  pd.fail = "";
  pd.insert = false;
  pd.insertFirst = nowSec;
  pd.cutHdr = -1;
  pd.learnS = -1;
  pd.learnE = -1;
  pd.learnIp = false;
  pd.ignored = false;
  pd.seen = "-";
  pd.keyS = -1;
}

/**
 * Take server `idx` if it can serve a persisted client (or force_persist says so);
 * otherwise strict -> fail, redispatch -> count and balance. Returns true when taken.
 */
function take(b: CompiledBackend, idx: number, buf: Buffer, h: Head, pathStart: number, c: ClientLike): boolean {
  const s = b.servers[idx];
  if (idx === exclude) {
    // this very request could not connect to it a moment ago
    if (b.failover === "strict") pd.fail = `persisted server ${s.id} refused the connection (failover = strict)`;
    else counters.persistRedispatch++;
    pd.seen = "D";
    return false;
  }
  if (usable(s) || (b.forcePersist.length > 0 && matchRules(b.forcePersist, buf, h, pathStart, c))) {
    pd.server = s;
    pd.seen = "V";
    counters.persistHits++;
    return true;
  }
  pd.seen = "D";
  if (b.failover === "strict") pd.fail = `persisted server ${s.id} is ${s.state.up ? s.state.admin : "down"} (failover = strict)`;
  else counters.persistRedispatch++;
  return false;
}

/** a server index this request must not use (its connection just failed), or -1 */
let exclude = -1;

export function persistRequest(c: ClientLike, b: CompiledBackend, buf: Buffer, h: Head, pathStart: number, nowSec: number, excluded = -1): void {
  reset(nowSec);
  exclude = excluded;
  const p = b.persist;
  if (p === null) return;
  pd.seen = "N";
  if (b.ignorePersist.length > 0 && matchRules(b.ignorePersist, buf, h, pathStart, c)) {
    pd.ignored = true;
    pd.seen = "-";
    // neither used nor created, but the proxy's own bytes (indirect cookie, "<server>~")
    // are still cut from the request, as HAProxy does whatever ignore-persist says
    if (p.mode !== "insert" && p.mode !== "prefix") return;
  }
  switch (p.mode) {
    case "insert": {
      let valid = false;
      verdict.refresh = false;
      if (findCookie(buf, h, p.cookieBytes)) {
        if (p.indirect) {
          cookieCut(buf, h);
          pd.cutHdr = found.header;
          pd.cutS = cut.s;
          pd.cutE = cut.e;
        }
        if (pd.ignored) return;
        pd.keyS = found.valS;
        pd.keyE = found.valE;
        pd.seen = "I";
        checkValue(p, buf, found.valS, found.valE, nowSec);
        if (verdict.server >= 0) {
          valid = take(b, verdict.server, buf, h, pathStart, c);
          if (valid) pd.insertFirst = verdict.first;
        } else if (b.failover === "strict" && !p.dynamic && !(p.maxidle > 0 || p.maxlife > 0)) {
          pd.fail = "persistence cookie names no known server (failover = strict)";
        }
      }
      if (pd.ignored) return;
      pd.insert = (!valid || verdict.refresh) && (!p.postonly || h.method === M_POST);
      return;
    }
    case "prefix": {
      // As HAProxy: the part before the first '~' (all of it without one) names the server;
      // everything up to and including the first '~' is the proxy's and is stripped, whatever
      // it names, so the application always gets its own value back.
      if (!findCookie(buf, h, p.cookieBytes)) return;
      let tilde = buf.indexOf(126, found.valS); // '~'
      if (tilde >= found.valE) tilde = -1;
      if (tilde >= 0) {
        pd.cutHdr = found.header;
        pd.cutS = found.valS;
        pd.cutE = tilde + 1;
      }
      if (pd.ignored) return;
      pd.keyS = found.valS;
      pd.keyE = found.valE;
      pd.seen = "I";
      const idx = p.byValue.get(buf.latin1Slice(found.valS, tilde < 0 ? found.valE : tilde));
      if (idx !== undefined) take(b, idx, buf, h, pathStart, c);
      return;
    }
    case "rewrite": {
      if (!findCookie(buf, h, p.cookieBytes)) return;
      pd.keyS = found.valS;
      pd.keyE = found.valE;
      pd.seen = "I";
      const idx = p.byValue.get(buf.latin1Slice(found.valS, found.valE));
      if (idx !== undefined) take(b, idx, buf, h, pathStart, c);
      return;
    }
    case "route": {
      // Apache find_session_route: the URL parameter first, then the cookie
      let s: number, e: number;
      if (p.urlParam !== null && findUrlParam(buf, h.targetStart, h.targetEnd, p.urlParam)) {
        s = param.s;
        e = param.e;
      } else if (findCookie(buf, h, p.cookieBytes)) {
        s = found.valS;
        e = found.valE;
      } else return;
      pd.keyS = s;
      pd.keyE = e;
      pd.seen = "I";
      // Tomcat jvmRoute: the route is what follows the last '.'
      let dot = e - 1;
      while (dot >= s && buf[dot] !== 46) dot--;
      if (dot < s) return;
      const idx = p.byRoute.get(buf.latin1Slice(dot + 1, e));
      if (idx !== undefined) take(b, idx, buf, h, pathStart, c);
      return;
    }
    default:
      tableRequest(p, c, b, buf, h, pathStart, nowSec);
  }
}

function tableRequest(p: TablePersist, c: ClientLike, b: CompiledBackend, buf: Buffer, h: Head, pathStart: number, nowSec: number): void {
  let idx = -1;
  let fromRequest = false;
  if (p.mode === "source") {
    idx = p.table.lookupString(c.ip, nowSec);
    pd.learnIp = true;
  } else {
    let s = -1, e = -1;
    if (p.mode === "header") {
      const k = findHeader(buf, h, p.headerLower!);
      if (k >= 0 && h.ve[k] > h.vs[k]) {
        s = h.vs[k];
        e = h.ve[k];
      }
    } else if (p.cookieBytes !== null && p.mode === "learn" && findCookie(buf, h, p.cookieBytes) && found.valE > found.valS) {
      s = found.valS;
      e = found.valE;
    }
    if (s < 0 && p.urlParam !== null && findUrlParam(buf, h.targetStart, h.targetEnd, p.urlParam)) {
      s = param.s;
      e = param.e;
    }
    if (s < 0) return; // no key: balance, learn nothing
    if (e - s > p.len) e = s + p.len;
    pd.keyS = s;
    pd.keyE = e;
    idx = p.table.lookup(buf, s, e, nowSec);
    pd.learnS = s;
    pd.learnE = e;
    fromRequest = true;
  }
  if (idx >= 0 && idx < b.servers.length && take(b, idx, buf, h, pathStart, c)) {
    // known and usable: nothing to learn
    pd.learnS = -1;
    pd.learnIp = false;
    return;
  }
  // unknown key: learn it from this request only where the mode says so (learn needs
  // request_learn); a known key whose server failed is re-persisted on redispatch
  if (idx < 0 && fromRequest && !p.requestLearn) pd.learnS = -1;
}

/** After balancing: bind the request's key to the server that will answer. */
export function persistLearn(b: CompiledBackend, server: CompiledServer, buf: Buffer, ip: string, nowSec: number): void {
  const p = b.persist as TablePersist;
  if (pd.learnIp) p.table.storeString(ip, server.index, nowSec);
  else p.table.store(buf, pd.learnS, pd.learnE, server.index, nowSec);
}

export function needsLearn(): boolean {
  return pd.learnS >= 0 || pd.learnIp;
}

/**
 * A response Set-Cookie for the persistence cookie (name already matched by the caller):
 * insert drops the server's own unless preserve; prefix splices "<server>~" in front of the
 * value; rewrite replaces the value; learn/param bind the value to the server.
 * Returns true when the backend's cookie stays and Latch must not insert its own.
 */
export function persistSetCookie(p: NonNullable<Persist>, server: CompiledServer, buf: Buffer, h: Head, k: number, nameLen: number, nowSec: number): boolean {
  const vs = h.vs[k] + nameLen + 1; // after "NAME="
  switch (p.mode) {
    case "insert":
      if (p.preserve) return true;
      planCut(h.ns[k], h.le[k], null); // ours replaces the server's (HAProxy insert without preserve)
      return false;
    case "prefix":
      planCut(vs, vs, p.prefixBytes[server.index]);
      return false;
    case "rewrite": {
      let e = vs;
      const ve = h.ve[k];
      while (e < ve && buf[e] !== 59) e++;
      while (e > vs && (buf[e - 1] === 32 || buf[e - 1] === 9)) e--;
      planCut(vs, e, p.valueBytes[server.index]);
      return false;
    }
    case "learn":
    case "param": {
      // Pound: the session is bound when the backend sets the cookie; a new value re-binds
      let e = vs;
      const ve = h.ve[k];
      while (e < ve && buf[e] !== 59) e++;
      while (e > vs && (buf[e - 1] === 32 || buf[e - 1] === 9)) e--;
      // a quoted value is keyed without its quotes, as findCookie reads it back from the request
      let s = vs;
      if (e - s >= 2 && buf[s] === 34 && buf[e - 1] === 34) {
        s++;
        e--;
      }
      if (e > s) p.table.store(buf, s, e - s > p.len ? s + p.len : e, server.index, nowSec);
      return false;
    }
  }
  return false;
}

/** The cookie name a response Set-Cookie must carry for persistSetCookie, or null. */
export function setCookieName(p: Persist): Uint8Array | null {
  if (p === null) return null;
  switch (p.mode) {
    case "insert":
    case "prefix":
    case "rewrite":
      return p.cookieBytes;
    case "learn":
    case "param":
      return p.cookieBytes;
  }
  return null;
}

/** header/param modes: a response header (name matched by the caller) the backend sets binds its value. */
export function persistResponseHeader(p: TablePersist, server: CompiledServer, buf: Buffer, h: Head, k: number, nowSec: number): void {
  const vs = h.vs[k];
  let ve = h.ve[k];
  if (ve <= vs) return;
  if (ve - vs > p.len) ve = vs + p.len;
  p.table.store(buf, vs, ve, server.index, nowSec);
}

/** The response header whose value the table learns, or null. */
export function learnHeaderName(p: Persist): Uint8Array | null {
  if (p === null || (p.mode !== "header" && p.mode !== "param")) return null;
  return p.headerLower;
}

