// The forwarding path, as phases over one parsed head (the design card's pipeline):
//   parse head -> route -> persist/balance -> rewrite request head -> forward (+ body)
//   -> parse response head -> rewrite response head -> pipe body -> finish (pool or close)
//
// One ClientConn per accepted socket and one UpstreamConn per backend socket, each in its
// socket's `data`; the handlers are module-level objects shared by every socket. A client
// connection carries at most one request in flight: pipelined requests wait in its input
// buffer and are answered in order. Writes go out once per direction per event; what the
// kernel does not take is kept and sent on `drain`, and the opposite socket is paused
// meanwhile, so memory stays bounded whatever the peers' speeds.

import type { Socket, SocketHandler } from "bun";
import type { CompiledBackend, CompiledListener, CompiledRoute, CompiledServer, Limits, TablePersist } from "./types.ts";
import type { SessionState } from "../session/types.ts";
import {
  Head, H_OTHER, eqLower, findHeadEnd, hasBareLineBreak, parseRequestHead, parseResponseHead,
  H_DROP, H_CONNECTION, H_KEEP_ALIVE, H_PROXY_CONNECTION, H_TE, H_UPGRADE, H_PROXY_AUTHORIZATION,
  H_X_FORWARDED_PROTO, H_X_FORWARDED_HOST, H_HOST, H_COOKIE, H_SET_COOKIE, H_LOCATION,
  H_CONTENT_LOCATION, H_CACHE_CONTROL, M_HEAD, M_GET, M_OPTIONS,
} from "./h1-head.ts";
import { Framing, FRAMING_ERROR, F_CLOSE } from "./h1-body.ts";
import { planReset, planCut, planAdd, planAddAll, planEmpty, emit, CRLF } from "./splice.ts";
import { findCookie, found, setCookieLine } from "./persist-insert.ts";
import {
  pd, persistRequest, persistLearn, needsLearn, persistSetCookie, setCookieName,
  persistResponseHeader, learnHeaderName,
} from "./persist.ts";
import { anyFull, chooseServer, hashKey, hashString } from "./balance.ts";
import { findHeader, ipBytes, startsWith } from "./rules.ts";
import { clock, watch, unwatch, type Timed } from "./clock.ts";
import { errorResponse } from "./errors.ts";
import { counters } from "./counters.ts";
import { report } from "./report.ts";
import { access, type AccessRecord } from "./access.ts";
import { requestRecord, badRequestRecord, logDone } from "./access-record.ts";
import { tokenListHas, ruleNamesHeader, addHeaderRules } from "./header-rules.ts";

/** The per-listener runtime: what a connection reads its config through (swapped on reload). */
export interface ListenerRt {
  cfg: CompiledListener;
  limits: Limits;
  hostRouting: boolean;
  proto: "http" | "https";
  /** a graceful stop is under way: answer what is in flight, keep nothing alive */
  draining: boolean;
}

// pause reasons of a client socket
const P_UPSTREAM = 1; // the backend is not taking the request body fast enough
const P_PIPELINE = 2; // too many pipelined bytes waiting

/** Bytes of pipelined input held before the client is paused. */
const PIPELINE_LIMIT = 64 * 1024;

const HEAD = new Head();

const XFH = Buffer.from("X-Forwarded-Host: ");
const CONN_CLOSE = Buffer.from("Connection: close\r\n");
const CONN_KEEP_ALIVE = Buffer.from("Connection: keep-alive\r\n");
const CC_PRIVATE = Buffer.from("Cache-Control: private\r\n");
const NEEDLE_PRIVATE = Buffer.from("private");
const NEEDLE_NO_STORE = Buffer.from("no-store");
const NEEDLE_NO_CACHE = Buffer.from("no-cache");
const N_SEC_WS_KEY = Buffer.from("sec-websocket-key");
const N_SEC_WS_ACCEPT = Buffer.from("sec-websocket-accept");
const N_ORIGIN = Buffer.from("origin");
const T_WEBSOCKET = Buffer.from("websocket");
const CONN_UPGRADE = Buffer.from("Connection: Upgrade\r\n");

/** open tunnels per client address, for websocket.max_per_client */
const tunnelsPerIp = new Map<string, number>();

// ------------------------------------------------------------------------------------
// Client side

export class ClientConn implements Timed {
  sock: Socket<ClientConn>;
  readonly lst: ListenerRt;
  readonly ip: string;
  private ipB: Uint8Array | null | undefined = undefined;
  /** "X-Forwarded-For: <ip>\r\nX-Forwarded-Proto: <proto>\r\n", made once per connection */
  readonly fwd: Buffer;
  /** input not yet consumed: a head in progress, or pipelined requests */
  in: Buffer | null = null;
  searched = 0;
  /** a request is in flight (head parsed, response not finished) */
  busy = false;
  reqBodyDone = true;
  readonly reqFraming = new Framing();
  up: UpstreamConn | null = null;
  /** bytes the client socket has not taken yet */
  out: Buffer | null = null;
  paused = 0;
  closing = false; // end the connection once `out` is flushed
  closed = false;
  clientEnded = false; // the client sent FIN
  /** the request in flight asks for a WebSocket upgrade */
  upgrade = false;
  /** after 101: both sockets are a byte pipe */
  tunnel = false;
  /** proxy-managed session of the request in flight (route `session =`), for its response */
  sess: SessionState | null = null;
  /** a session opened asynchronously (redis) for the request waiting in `in` */
  sessOpened: SessionState | null = null;
  deadline = 0;
  // --- the request in flight, kept for its response
  route: CompiledRoute | null = null;
  server: CompiledServer | null = null;
  keepAlive = true;
  isHead = false;
  minor = 1;
  insertFirst = -1; // >=0: add the persistence cookie (first-seen seconds for dated cookies)
  persistRes = false; // the response takes part in persistence (a mode is set, ignore_persist did not match)
  reqBuf: Buffer | null = null; // head bytes of the request, for Host in Location rewriting
  hostS = 0;
  hostE = 0;
  /** request bytes to replay once if a reused keep-alive connection closes before answering */
  replay: Buffer | null = null;
  retried = false;
  /** replayed once on a fresh connection after a reused one closed (does not use up `retried`) */
  replayed = false;
  /** head end in reqBuf, and whether reqBuf holds the whole request (it can be run again) */
  reqEnd = 0;
  rerunnable = false;
  /** a server this request must avoid (its connection failed), or -1 */
  exclude = -1;
  /** the request was routed by persistence (strict failover does not move it) */
  persisted = false;
  /** access log: the request's record (only while a sink is set), and when its head began */
  rec: AccessRecord | null = null;
  tStart = 0;
  tDispatch = 0;
  /** waiting in its backend's queue for a server under maxconn */
  queued = false;
  queueOf: CompiledBackend | null = null;
  queuedSince = 0;

  constructor(sock: Socket<ClientConn>, lst: ListenerRt) {
    this.sock = sock;
    this.lst = lst;
    this.ip = sock.remoteAddress;
    const fwd = lst.cfg.xForwardedFor ? `X-Forwarded-For: ${this.ip}\r\nX-Forwarded-Proto: ${lst.proto}\r\n` : "";
    this.fwd = Buffer.from(fwd + (lst.cfg.via ? `Via: 1.1 ${lst.cfg.via}\r\n` : ""), "latin1");
  }

  ipBytes(): Uint8Array | null {
    if (this.ipB === undefined) this.ipB = ipBytes(this.ip);
    return this.ipB;
  }

  expire(): void {
    if (this.closed) return;
    if (this.queued) {
      leaveQueue(this, this.queueOf!);
      counters.queueTimeouts++;
      this.fail(503, `waited ${clock.now - this.queuedSince} ms in the queue: every server at its maxconn`);
      return;
    }
    if (this.busy) {
      // only reached while a request body stalls: the client stopped sending it
      report("warn", `client ${this.ip}: request body not received in time, closing`);
      this.abort();
      return;
    }
    if (this.in !== null && this.in.length > 0) {
      counters.badRequests++;
      this.fail(408, "request head not completed in time");
    } else this.sock.end();
  }

  /** Answer with an error and close (nothing may follow a request of unknown framing). */
  fail(status: number, why: string): void {
    if (status >= 500) report("warn", `${status} for ${this.ip}: ${why}`);
    this.in = null;
    this.busy = true; // nothing more is parsed
    this.closing = true;
    const r = errorResponse(status);
    this.send(r);
    if (access.sink !== null) {
      const rec = this.rec ?? badRequestRecord(this);
      rec.status = status;
      rec.bytesOut += r.length;
      rec.note = why;
      logDone(this, rec);
    }
  }

  /** Abandon the connection without a response (one was already under way). */
  abort(): void {
    if (this.closed) return;
    if (this.rec !== null) {
      if (this.rec.note === "") this.rec.note = "aborted mid-response";
      logDone(this, this.rec);
    }
    this.closed = true;
    const u = this.up;
    this.up = null;
    if (u !== null) u.destroy();
    this.sock.terminate();
  }

  /** One write; the remainder is kept for drain. Returns true when all went out. */
  send(data: Uint8Array): boolean {
    if (this.closed) return false;
    if (this.rec !== null) this.rec.bytesOut += data.length;
    if (this.out !== null) {
      this.out = Buffer.concat([this.out, data]);
      return false;
    }
    const n = this.sock.write(data);
    if (n < data.length) {
      this.out = Buffer.from(data.subarray(n > 0 ? n : 0));
      return false;
    }
    if (this.closing) this.sock.end();
    return true;
  }

  pause(reason: number): void {
    if (this.paused === 0) this.sock.pause();
    this.paused |= reason;
  }

  resume(reason: number): void {
    if ((this.paused & reason) === 0) return;
    this.paused &= ~reason;
    if (this.paused === 0 && !this.closed) this.sock.resume();
  }
}

/** Open client connections, for a graceful stop. */
const openClients = new Set<ClientConn>();

/**
 * Graceful stop of these listeners: idle keep-alive connections close now; a connection
 * with a request in flight gets its response (with `Connection: close`) and then closes.
 */
export function drainClients(listeners: readonly ListenerRt[]): void {
  for (const l of listeners) l.draining = true;
  for (const c of openClients) {
    if (c.lst.draining && !c.busy && !c.closed) {
      c.closing = true;
      if (c.out === null) c.sock.end();
    }
  }
}

function onClientOpen(sock: Socket<ClientConn>): void {
  // data was set to the ListenerRt by Bun.listen; replace it with the connection
  const lst = sock.data as unknown as ListenerRt;
  const c = new ClientConn(sock, lst);
  sock.data = c;
  counters.connections++;
  counters.connectionsOpen++;
  openClients.add(c);
  c.deadline = clock.now + lst.limits.clientIdle;
  watch(c);
}

function onClientData(sock: Socket<ClientConn>, chunk: Buffer): void {
  const c = sock.data;
  if (c.closed) return;
  if (c.tunnel) {
    const u = c.up;
    if (u !== null) {
      u.deadline = clock.now + u.tunnelTimeout;
      u.send(chunk);
    }
    return;
  }
  if (c.busy) {
    if (!c.reqBodyDone && c.up !== null) {
      forwardRequestBody(c, c.up, chunk);
      return;
    }
    if (c.closing) return; // after an error: discard
    // pipelined: keep for later, in order
    c.in = c.in === null ? chunk : Buffer.concat([c.in, chunk]);
    if (c.in.length > PIPELINE_LIMIT) c.pause(P_PIPELINE);
    return;
  }
  c.in = c.in === null ? chunk : Buffer.concat([c.in, chunk]);
  processInput(c);
}

function onClientDrain(sock: Socket<ClientConn>): void {
  const c = sock.data;
  const out = c.out;
  if (out === null || c.closed) return;
  const n = sock.write(out);
  if (n < out.length) {
    c.out = n > 0 ? out.subarray(n) : out;
    return;
  }
  c.out = null;
  if (c.closing) {
    sock.end();
    return;
  }
  const u = c.up;
  if (u !== null && u.sock !== null) u.sock.resume();
  else if (!c.busy && c.in !== null) {
    processInput(c);
    closeIfEnded(c);
  }
}

function onClientEnd(sock: Socket<ClientConn>): void {
  const c = sock.data;
  c.clientEnded = true;
  if (c.tunnel) {
    // half-close: the backend gets FIN once what the client sent has gone out
    const u = c.up;
    if (u !== null) u.endWhenFlushed();
    else sock.end();
    return;
  }
  if (!c.busy) {
    // a partial head will never complete
    sock.end();
  } else if (!c.reqBodyDone) {
    c.abort(); // the body can never complete
  }
  // otherwise: answer the request in flight, then close
}

function onClientClose(sock: Socket<ClientConn>): void {
  const c = sock.data;
  if (!(c instanceof ClientConn)) return;
  counters.connectionsOpen--;
  openClients.delete(c);
  if (c.tunnel) endTunnel(c);
  if (c.queued) leaveQueue(c, c.queueOf!);
  unwatch(c);
  c.closed = true;
  c.out = null;
  c.in = null;
  const u = c.up;
  if (u !== null) {
    c.up = null;
    u.destroy();
  }
}

export const clientHandlers: SocketHandler<ClientConn> = {
  open: onClientOpen,
  data: onClientData,
  drain: onClientDrain,
  end: onClientEnd,
  close: onClientClose,
  error(_sock, err) {
    report("warn", `client socket error: ${err?.message ?? err}`);
  },
};

/** Parse as many requests as the input holds, one at a time (answers go out in order). */
function processInput(c: ClientConn): void {
  while (!c.busy && !c.closed) {
    let buf = c.in;
    if (buf === null) return;
    if (c.tStart === 0 && access.sink !== null) c.tStart = Date.now();
    // tolerate empty lines before a request line (RFC 9112 2.2)
    let skip = 0;
    while (skip < buf.length && (buf[skip] === 13 || buf[skip] === 10)) skip++;
    if (skip > 0) {
      if (skip === buf.length) {
        c.in = null;
        return;
      }
      buf = c.in = buf.subarray(skip);
      c.searched = 0;
    }
    const lim = c.lst.limits;
    const end = findHeadEnd(buf, c.searched);
    if (end < 0) {
      if (buf.length > lim.maxHeadBytes) {
        counters.badRequests++;
        c.fail(431, "request head too large");
      } else if (hasBareLineBreak(buf, c.searched > 1 ? c.searched - 1 : 0, buf.length)) {
        counters.badRequests++;
        c.fail(400, "bare CR or LF in request head");
      } else {
        if (c.searched === 0) c.deadline = clock.now + lim.clientHead;
        c.searched = buf.length;
        // a retained slice of a large chunk pins the chunk: keep a copy of small heads
        if (buf.byteOffset !== 0 && buf.length < 4096) c.in = Buffer.from(buf);
      }
      return;
    }
    c.searched = 0;
    if (end > lim.maxHeadBytes) {
      counters.badRequests++;
      c.fail(431, "request head too large");
      return;
    }
    const st = parseRequestHead(buf, end, HEAD, lim.maxUrlBytes, lim.maxHeaders);
    if (st !== 0) {
      counters.badRequests++;
      c.fail(st, "malformed request");
      return;
    }
    startRequest(c, buf, end);
  }
}

// ------------------------------------------------------------------------------------
// Request phases

/** where the path starts in the target (after scheme://authority in absolute-form) */
let pathStart = 0;
/** lowercase host without port, made only when the listener routes by host */
let hostName = "";

function routeRequest(lst: ListenerRt, buf: Buffer, h: Head): CompiledRoute | null {
  let ts = h.targetStart;
  const te = h.targetEnd;
  hostName = "";
  let hs = -1, he = -1;
  if (buf[ts] !== 47 /* '/' */ && buf[ts] !== 42 /* '*' */) {
    // absolute-form: scheme://authority/path
    const sep = buf.indexOf("://", ts);
    if (sep > 0 && sep < te) {
      hs = sep + 3;
      let p = hs;
      while (p < te && buf[p] !== 47 && buf[p] !== 63) p++;
      he = p;
      ts = p;
    }
  } else if (h.host >= 0) {
    hs = h.vs[h.host];
    he = h.ve[h.host];
  }
  pathStart = ts;
  const routes = lst.cfg.routes;
  if (lst.hostRouting && hs >= 0) {
    let e = he;
    if (buf[hs] === 91 /* '[' */) {
      const rb = buf.indexOf(93, hs);
      if (rb > 0 && rb < he) e = rb + 1;
    } else {
      for (let i = hs; i < he; i++) if (buf[i] === 58) { e = i; break; }
    }
    hostName = buf.latin1Slice(hs, e).toLowerCase();
  }
  for (let i = 0; i < routes.length; i++) {
    const r = routes[i];
    if (r.host !== "") {
      if (r.hostWildcard ? !hostName.endsWith(r.host) : hostName !== r.host) continue;
    }
    if (r.path.length <= 1 || startsWith(buf, ts, te, r.path)) return r;
  }
  return null;
}

/** Key for hash balancing, or -1 when the request has none (falls back to roundrobin). */
function balanceKey(c: ClientConn, b: CompiledBackend, buf: Buffer, h: Head): number {
  const a = b.balance;
  switch (a.kind) {
    case "source":
      return hashString(c.ip);
    case "uri": {
      let e = pathStart;
      while (e < h.targetEnd && buf[e] !== 63) e++;
      return hashKey(buf, pathStart, e);
    }
    case "hdr": {
      const k = findHeader(buf, h, a.nameLower);
      return k < 0 ? -1 : hashKey(buf, h.vs[k], h.ve[k]);
    }
    case "cookie":
      return findCookie(buf, h, a.nameBytes) ? hashKey(buf, found.valS, found.valE) : -1;
  }
  return -1;
}

function startRequest(c: ClientConn, buf: Buffer, end: number): void {
  const h = HEAD;
  counters.requests++;
  const lst = c.lst;
  if (lst.cfg.redirectHttps) {
    redirectToHttps(c, buf, h, end);
    return;
  }
  const route = routeRequest(lst, buf, h);
  if (access.sink !== null && c.rec === null) c.rec = requestRecord(c, buf, h);
  if (route === null) {
    c.fail(404, "no route");
    return;
  }
  const b = route.backend;
  const p = b.persist;

  // --- WebSocket upgrade: same routing and persistence as HTTP, then a byte pipe
  let upgrade = false;
  if (h.connUpgrade && h.upgrade >= 0 && route.websocket.enabled && tokenListHas(buf, h.vs[h.upgrade], h.ve[h.upgrade], T_WEBSOCKET)) {
    const refused = checkUpgrade(c, route, buf, h);
    if (refused !== 0) {
      if (refused === 503) counters.tunnelsRefused++;
      c.fail(refused, refused === 403 ? "websocket origin not allowed" : refused === 400 ? "bad websocket upgrade" : "websocket tunnel limit reached");
      return;
    }
    upgrade = true;
  }

  // --- proxy-managed session (mod_session): opened before anything is sent
  const sess = route.session;
  let sstate: SessionState | null = null;
  if (sess !== null) {
    if (c.sessOpened !== null) {
      sstate = c.sessOpened; // this very head, parsed again once the store answered
      c.sessOpened = null;
    } else {
      const v = findCookie(buf, h, sess.cookieName) ? buf.latin1Slice(found.valS, found.valE) : null;
      const opened = sess.open(v, clock.now);
      if (opened instanceof Promise) {
        awaitSession(c, opened);
        return;
      }
      sstate = opened;
    }
  } else c.sessOpened = null; // a reload took the session off this route meanwhile

  // --- persistence, then balancing
  let server: CompiledServer | null = null;
  if (p !== null) {
    persistRequest(c, b, buf, h, pathStart, clock.sec, c.exclude);
    if (pd.fail !== "") {
      c.fail(503, pd.fail);
      return;
    }
    server = pd.server;
  }
  c.persisted = server !== null;
  if (server !== null && server.maxconn > 0 && server.state.active >= server.maxconn) {
    enqueue(c, b); // a persisted client waits for its own server (HAProxy's server queue)
    return;
  }
  if (server === null) {
    server = chooseServer(b, b.hashBalance ? balanceKey(c, b, buf, h) : -1, c.exclude);
    if (server === null) {
      if (anyFull(b, c.exclude, true)) {
        enqueue(c, b);
        return;
      }
      counters.noServer++;
      c.fail(503, `backend ${b.name}: no server available`);
      return;
    }
    if (p !== null && needsLearn()) persistLearn(b, server, buf, c.ip, clock.sec);
  }
  if (c.queued) leaveQueue(c, b);
  const rec = c.rec;
  if (rec !== null) {
    rec.backend = b.name;
    rec.server = server.id;
    rec.persist = p === null ? "--" : pd.seen + (needsLearn() ? "L" : "N");
    if (sstate !== null && sstate.id !== null) rec.sessionId = sstate.id;
    else if (p !== null && pd.keyS >= 0) rec.sessionId = buf.latin1Slice(pd.keyS, pd.keyE);
    else if (p !== null && p.mode === "source") rec.sessionId = c.ip;
    rec.tw = c.queuedSince > 0 ? clock.now - c.queuedSince : 0;
  }
  c.queuedSince = 0;
  const cutHdr = p !== null ? pd.cutHdr : -1;

  // --- rewrite the request head
  planReset();
  const xff = lst.cfg.xForwardedFor;
  const rules = route.headerRules;
  for (let k = 0; k < h.count; k++) {
    if (rules.length > 0 && ruleNamesHeader(rules, buf, h.ns[k], h.ne[k])) {
      planCut(h.ns[k], h.le[k], null); // set_headers replace every incoming copy; remove_headers drop them
      continue;
    }
    if (sess !== null && eqLower(buf, h.ns[k], h.ne[k], sess.headerLower)) {
      planCut(h.ns[k], h.le[k], null); // the session header comes from Latch only
      continue;
    }
    switch (h.id[k]) {
      case H_UPGRADE:
        if (!upgrade) planCut(h.ns[k], h.le[k], null);
        break;
      case H_CONNECTION:
        planCut(h.ns[k], h.le[k], upgrade ? CONN_UPGRADE : null);
        break;
      case H_DROP:
      case H_KEEP_ALIVE:
      case H_PROXY_CONNECTION:
      case H_TE:
      case H_PROXY_AUTHORIZATION:
        planCut(h.ns[k], h.le[k], null);
        break;
      case H_X_FORWARDED_PROTO:
      case H_X_FORWARDED_HOST:
        if (xff) planCut(h.ns[k], h.le[k], null); // ours replace what the client claimed
        break;
      case H_HOST:
        if (!route.preserveHost) planCut(h.ns[k], h.le[k], server.hostLine);
        break;
      case H_COOKIE:
        if (k === cutHdr) planCut(pd.cutS, pd.cutE, null);
        break;
    }
  }
  if (c.fwd.length > 0) planAddAll(c.fwd);
  if (xff && h.host >= 0) {
    planAddAll(XFH);
    planAdd(buf, h.vs[h.host], h.ve[h.host]);
    planAddAll(CRLF);
  }
  if (rules.length > 0) addHeaderRules(rules, buf, h);
  if (sstate !== null) {
    const line = sess!.requestHeader(sstate);
    if (line !== null) planAddAll(line);
  }

  // --- body framing of the request
  const f = c.reqFraming;
  if (h.chunked) f.startChunked();
  else f.startLength(h.contentLength > 0 ? h.contentLength : 0);
  const bodyEnd = f.feed(buf, end, buf.length);
  if (bodyEnd === FRAMING_ERROR) {
    counters.badRequests++;
    c.fail(400, "malformed chunked body");
    return;
  }
  const out = emit(buf, end, end, bodyEnd);

  // --- remember what the response needs
  c.busy = true;
  c.reqBodyDone = f.done;
  c.route = route;
  c.server = server;
  c.minor = h.minor;
  c.isHead = h.method === M_HEAD;
  c.upgrade = upgrade;
  c.sess = sstate;
  c.keepAlive = h.minor >= 1 ? !h.connClose : h.connKeepAlive;
  c.insertFirst = p !== null && pd.insert ? pd.insertFirst : -1;
  c.persistRes = p !== null && !pd.ignored;
  c.reqBuf = buf;
  c.hostS = h.host >= 0 ? h.vs[h.host] : 0;
  c.hostE = h.host >= 0 ? h.ve[h.host] : 0;
  c.reqEnd = end;
  c.rerunnable = f.done;
  c.replay = f.done && (h.method === M_GET || h.method === M_HEAD || h.method === M_OPTIONS) ? out : null;
  // pipelined bytes after this request stay for later
  if (bodyEnd < buf.length) {
    const rest = buf.subarray(bodyEnd);
    c.in = rest.length < 4096 ? Buffer.from(rest) : rest;
  } else c.in = null;
  c.deadline = f.done ? 0 : clock.now + lst.limits.clientIdle;

  dispatch(c, server, out);
}

/**
 * A session store that answers asynchronously (redis): the request waits, unparsed, in
 * `c.in`; once the store answers, the same head is parsed again and goes on with the session.
 * Bytes arriving meanwhile queue behind it as pipelined input.
 */
function awaitSession(c: ClientConn, p: Promise<SessionState>): void {
  counters.requests--; // counted again when the head is parsed again
  c.busy = true;
  c.deadline = 0;
  p.then((st) => {
    if (c.closed) return;
    c.sessOpened = st;
    c.busy = false;
    c.resume(P_PIPELINE); // bytes held back meanwhile may be this request's body: let the rest come
    processInput(c);
  });
}

/** `redirect = "https"` listeners: 301 to the same host and target over https. */
function redirectToHttps(c: ClientConn, buf: Buffer, h: Head, end: number): void {
  if (h.host < 0) {
    c.fail(400, "no Host to redirect to");
    return;
  }
  let he = h.ve[h.host];
  const hs = h.vs[h.host];
  if (buf[hs] !== 91) for (let i = hs; i < he; i++) if (buf[i] === 58) { he = i; break; }
  const keep = (h.minor >= 1 ? !h.connClose : h.connKeepAlive) && h.contentLength <= 0 && !h.chunked;
  const head =
    `HTTP/1.1 301 Moved Permanently\r\nLocation: https://${buf.latin1Slice(hs, he)}${buf.latin1Slice(h.targetStart, h.targetEnd)}\r\n` +
    `Content-Length: 0\r\n${keep ? "" : "Connection: close\r\n"}\r\n`;
  const rest = buf.length > end ? Buffer.from(buf.subarray(end)) : null;
  if (!keep) {
    c.busy = true;
    c.closing = true;
    c.in = null;
  } else c.in = rest;
  c.deadline = clock.now + c.lst.limits.clientIdle;
  c.send(Buffer.from(head, "latin1"));
}

/** Send the request head (+ first body bytes) on a pooled or a new connection. */
function dispatch(c: ClientConn, server: CompiledServer, out: Buffer): void {
  server.state.active++;
  server.state.total++;
  const b = c.route!.backend;
  let u = takeIdle(server);
  if (c.rec !== null) {
    c.tDispatch = Date.now();
    c.rec.tc = u !== null ? 0 : -1;
  }
  if (u !== null) {
    counters.upstreamReuses++;
    u.attach(c, b.timeouts.server);
    c.up = u;
    u.send(out);
    return;
  }
  counters.upstreamConnects++;
  u = new UpstreamConn(server);
  u.attach(c, 0);
  u.deadline = clock.now + b.timeouts.connect;
  u.out = out;
  c.up = u;
  connect(u);
}

function connect(u: UpstreamConn): void {
  const s = u.server;
  const p = s.tls
    ? Bun.connect({ hostname: s.host, port: s.port, tls: { rejectUnauthorized: false }, data: u, socket: upstreamHandlers })
    : Bun.connect({ hostname: s.host, port: s.port, data: u, socket: upstreamHandlers });
  p.catch(() => {}); // failures arrive in connectError
}

function forwardRequestBody(c: ClientConn, u: UpstreamConn, chunk: Buffer): void {
  const f = c.reqFraming;
  const end = f.feed(chunk, 0, chunk.length);
  if (end === FRAMING_ERROR) {
    counters.badRequests++;
    if (u.resStarted) c.abort();
    else {
      c.up = null;
      u.destroy();
      c.fail(400, "malformed chunked body");
    }
    return;
  }
  if (end > 0) u.send(end === chunk.length ? chunk : chunk.subarray(0, end));
  // both sides are active while a body flows: restart their inactivity timeouts
  if (!u.resStarted && u.state === U_BUSY) u.deadline = clock.now + u.serverTimeout;
  c.deadline = f.done ? 0 : clock.now + c.lst.limits.clientIdle;
  if (f.done) {
    c.reqBodyDone = true;
    if (end < chunk.length) c.in = Buffer.from(chunk.subarray(end));
    if (u.resDone) finishExchange(c, u);
  }
}

// ------------------------------------------------------------------------------------
// Upstream side

const U_CONNECTING = 0;
const U_BUSY = 1;
const U_IDLE = 2;
const U_CLOSED = 3;

export class UpstreamConn implements Timed {
  sock: Socket<UpstreamConn> | null = null;
  readonly server: CompiledServer;
  client: ClientConn | null = null;
  state = U_CONNECTING;
  out: Buffer | null = null;
  in: Buffer | null = null;
  searched = 0;
  readonly resFraming = new Framing();
  resStarted = false; // a final response head went to the client
  resDone = false;
  gotBytes = false;
  reused = false;
  reusable = false;
  deadline = 0;
  serverTimeout = 0;
  /** the backend of the request it carries (for its queue when a slot frees) */
  backend: CompiledBackend | null = null;
  /** after 101: a byte pipe to the client; idle for tunnelTimeout closes it */
  tunnel = false;
  tunnelTimeout = 0;
  /** send FIN once `out` is flushed (the client half-closed its side of a tunnel) */
  private finPending = false;

  constructor(server: CompiledServer) {
    this.server = server;
    watch(this);
  }

  endWhenFlushed(): void {
    if (this.sock === null) return;
    // shutdown(), not end(): Bun's end() closes both directions at once, which would lose
    // what the backend still sends after the client's FIN
    if (this.out === null) this.sock.shutdown();
    else this.finPending = true;
  }

  flushed(): void {
    if (this.finPending && this.sock !== null) {
      this.finPending = false;
      this.sock.shutdown();
    }
  }

  attach(c: ClientConn, serverTimeout: number): void {
    this.client = c;
    this.backend = c.route!.backend;
    this.in = null;
    this.searched = 0;
    this.resStarted = false;
    this.resDone = false;
    this.gotBytes = false;
    this.reusable = false;
    this.serverTimeout = c.route!.backend.timeouts.server;
    if (this.state === U_IDLE) {
      this.state = U_BUSY;
      this.reused = true;
    }
    this.deadline = serverTimeout > 0 ? clock.now + serverTimeout : this.deadline;
  }

  send(data: Uint8Array): void {
    const c = this.client;
    if (this.out !== null || this.sock === null) {
      this.out = this.out === null ? Buffer.from(data) : Buffer.concat([this.out, data]);
      if (c !== null && this.out.length > PIPELINE_LIMIT) c.pause(P_UPSTREAM);
      return;
    }
    const n = this.sock.write(data);
    if (n < data.length) {
      this.out = Buffer.from(data.subarray(n > 0 ? n : 0));
      if (c !== null) c.pause(P_UPSTREAM);
    }
  }

  expire(): void {
    const c = this.client;
    if (this.state === U_IDLE) {
      this.destroy(); // pool idle timeout
      return;
    }
    if (this.tunnel) {
      report("info", `tunnel ${c?.ip ?? "?"} <-> server ${this.server.id} idle for ${this.tunnelTimeout} ms, closing`);
      counters.tunnelTimeouts++;
      this.destroy();
      if (c !== null) {
        c.up = null;
        c.abort();
      }
      return;
    }
    counters.upstreamTimeouts++;
    const what = this.state === U_CONNECTING ? "connect" : "response";
    const connecting = this.state === U_CONNECTING;
    this.destroy();
    if (c === null) return;
    c.up = null;
    if (connecting) {
      passiveFailure(this.server, this.backend, "connect timeout");
      const why = `server ${this.server.id} (${this.server.authority}): connect timeout`;
      if (!retryElsewhere(c, this.server, why)) c.fail(504, why);
      return;
    }
    if (c.out !== null) {
      // the response is stuck on our side: the client stopped reading it
      report("warn", `client ${c.ip} stopped reading the response from server ${this.server.id}, closing both`);
      c.abort();
    } else if (this.resStarted) {
      report("warn", `server ${this.server.id}: ${what} timeout mid-response, closing client ${c.ip}`);
      c.abort();
    } else c.fail(504, `server ${this.server.id} (${this.server.authority}): ${what} timeout`);
  }

  destroy(): void {
    if (this.state === U_CLOSED) return;
    if (this.state === U_IDLE) dropIdle(this);
    else if (this.client !== null) release(this.server, this.backend);
    this.state = U_CLOSED;
    this.client = null;
    unwatch(this);
    const s = this.sock;
    if (s !== null) s.terminate();
  }
}

/** Closes the idle keep-alive connections of a server (reload: the server object is replaced). */
export function closeIdle(server: CompiledServer): void {
  const pool = server.state.pool as UpstreamConn[] | undefined;
  if (pool === undefined) return;
  while (pool.length > 0) pool.pop()!.destroy();
}

/** Reload: requests queued on an old backend are parsed again under the new config. */
export function rerunQueued(b: CompiledBackend): void {
  while (b.queue.length > 0) {
    const c = b.queue.shift() as ClientConn;
    if (c.closed) continue;
    c.queued = false;
    c.busy = false;
    queueMicrotask(() => processInput(c));
  }
}

function takeIdle(server: CompiledServer): UpstreamConn | null {
  const pool = server.state.pool as UpstreamConn[] | undefined;
  if (pool === undefined) return null;
  while (pool.length > 0) {
    const u = pool.pop()!;
    if (u.state === U_IDLE && u.sock !== null) return u;
  }
  return null;
}

function dropIdle(u: UpstreamConn): void {
  const pool = u.server.state.pool as UpstreamConn[] | undefined;
  if (pool === undefined) return;
  const i = pool.indexOf(u);
  if (i >= 0) pool.splice(i, 1);
}

function putIdle(u: UpstreamConn, idleMs: number): void {
  const st = u.server.state;
  const pool = (st.pool ??= []) as UpstreamConn[];
  u.state = U_IDLE;
  u.client = null;
  u.in = null;
  u.deadline = clock.now + idleMs;
  pool.push(u);
}

function onUpOpen(sock: Socket<UpstreamConn>): void {
  const u = sock.data;
  if (u.state === U_CLOSED) {
    sock.terminate();
    return;
  }
  u.sock = sock;
  u.state = U_BUSY;
  u.deadline = clock.now + u.serverTimeout;
  u.server.state.failStreak = 0;
  const c0 = u.client;
  if (c0 !== null && c0.rec !== null) c0.rec.tc = Date.now() - c0.tDispatch;
  const out = u.out;
  if (out !== null) {
    u.out = null;
    u.send(out);
    if (u.out === null && u.client !== null) u.client.resume(P_UPSTREAM);
  }
}

function onUpConnectError(sock: Socket<UpstreamConn>, err: Error): void {
  const u = sock.data;
  if (u.state === U_CLOSED) return;
  const c = u.client;
  counters.upstreamConnectErrors++;
  passiveFailure(u.server, u.backend, (err as { code?: string }).code ?? err.message);
  u.sock = null;
  u.destroy();
  if (c === null || c.closed) return;
  c.up = null;
  const why = `connect to server ${u.server.id} (${u.server.authority}) failed: ${(err as { code?: string }).code ?? err.message}`;
  if (retryElsewhere(c, u.server, why)) return;
  // already moved once (exclude set) and refused again: no server could take it (HAProxy: 503)
  if (c.exclude >= 0) c.fail(503, `${why}, after another server refused too: no server available`);
  else c.fail(502, why);
}

/**
 * Passive health: with `[health]` configured, `fall` consecutive failed connections mark the
 * server down at once, without waiting for the next check; the active checks bring it back
 * after `rise` successes. Without `[health]` nothing would bring it back, so it is not marked
 * (each failed request is still retried elsewhere).
 */
function passiveFailure(s: CompiledServer, b: CompiledBackend | null, why: string): void {
  const st = s.state;
  st.failures++;
  st.failStreak++;
  const hc = b?.health;
  if (hc == null || !st.up || st.failStreak < hc.fall) return;
  st.up = false;
  st.downs++;
  st.lastChange = Date.now();
  report("warn", `passive health: backend ${b!.name} server ${s.id} DOWN (${st.failStreak} consecutive connection failures: ${why})`);
}

/**
 * Failover: nothing of the request reached the server (its connection failed), so the same
 * request is run again from its head, once, with that server excluded: persistence treats it
 * as down (redispatch re-persists to the server that answers; strict answers 503), balancing
 * skips it. Only when the whole request is still at hand (its body came with its head).
 */
function retryElsewhere(c: ClientConn, failed: CompiledServer, why: string): boolean {
  const b = c.route!.backend;
  if (c.retried || !c.rerunnable || c.reqBuf === null || b.servers.length < 2) return false;
  report("warn", `${why}; retrying the request on another server`);
  counters.retries++;
  c.retried = true;
  c.exclude = failed.index;
  const buf = c.reqBuf;
  const pipelined = c.in; // bytes after this request, kept whatever the rerun does
  const lim = c.lst.limits;
  c.busy = false;
  if (parseRequestHead(buf, c.reqEnd, HEAD, lim.maxUrlBytes, lim.maxHeaders) !== 0) return false; // cannot happen: it parsed before
  counters.requests--; // counted again by startRequest
  c.sessOpened = c.sess; // opened for the first try: an async store asked again would re-parse c.in, not this head
  startRequest(c, buf, c.reqEnd);
  if (!c.closing) c.in = pipelined;
  return true;
}

// ------------------------------------------------------------------------------------
// maxconn queue

/** The request waits, unparsed in `c.in`, until a slot frees or `timeout.queue` passes (503). */
function enqueue(c: ClientConn, b: CompiledBackend): void {
  counters.requests--; // counted again when it is parsed again
  if (!c.queued) {
    c.queued = true;
    c.queueOf = b;
    c.queuedSince = Date.now();
    c.deadline = c.queuedSince + b.timeouts.queue; // a fresh clock: the queue timeout is not cut short by the tick
    b.queue.push(c);
    counters.queued++;
  } else b.queue.unshift(c); // woken but beaten to the slot: keep its place at the head
  c.busy = true;
}

function leaveQueue(c: ClientConn, b: CompiledBackend): void {
  c.queued = false;
  const i = b.queue.indexOf(c);
  if (i >= 0) b.queue.splice(i, 1);
}

/** A request on `s` ended: one fewer active, and a queued request may go. */
function release(s: CompiledServer, b: CompiledBackend | null): void {
  s.state.active--;
  // woken in a microtask: the caller may be in the middle of using the shared head state
  if (b !== null && b.queue.length > 0) queueMicrotask(() => wake(b));
}

/** Runs the first live queued request again from its head; if the slot is gone meanwhile, enqueue() puts it back first. */
function wake(b: CompiledBackend): void {
  while (b.queue.length > 0) {
    const c = b.queue.shift() as ClientConn;
    if (c.closed) continue;
    c.busy = false;
    processInput(c);
    return;
  }
}

function onUpDrain(sock: Socket<UpstreamConn>): void {
  const u = sock.data;
  const out = u.out;
  if (out === null) return;
  const n = sock.write(out);
  if (n < out.length) {
    u.out = n > 0 ? out.subarray(n) : out;
    return;
  }
  u.out = null;
  u.flushed();
  if (u.client !== null) u.client.resume(P_UPSTREAM);
}

function onUpData(sock: Socket<UpstreamConn>, chunk: Buffer): void {
  const u = sock.data;
  const c = u.client;
  if (c === null || u.state !== U_BUSY) {
    u.destroy(); // bytes from an idle or orphaned connection: never reuse it
    return;
  }
  u.gotBytes = true;
  if (u.tunnel) {
    u.deadline = clock.now + u.tunnelTimeout;
    if (!c.send(chunk)) sock.pause();
    return;
  }
  if (u.resStarted) {
    forwardResponseBody(c, u, chunk, 0);
    return;
  }
  let buf = u.in === null ? chunk : Buffer.concat([u.in, chunk]);
  // heads: interim 1xx responses, then the final one
  for (;;) {
    const end = findHeadEnd(buf, u.searched);
    if (end < 0) {
      if (buf.length > 65536) return badGateway(c, u, "response head too large");
      u.in = buf;
      u.searched = buf.length;
      return;
    }
    u.searched = 0;
    const h = HEAD;
    if (parseResponseHead(buf, end, h) !== 0) return badGateway(c, u, "malformed response head");
    if (h.status < 200) {
      if (h.status === 101) {
        if (!c.upgrade) return badGateway(c, u, "101 Switching Protocols to a request that asked for no upgrade");
        if (findHeader(buf, h, N_SEC_WS_ACCEPT) < 0) return badGateway(c, u, "101 without Sec-WebSocket-Accept");
        u.in = null;
        startResponse(c, u, buf, end);
        return;
      }
      // interim (100 Continue, 103 Early Hints): to the client as it is
      c.send(end === buf.length ? buf : buf.subarray(0, end));
      if (end === buf.length) {
        u.in = null;
        return;
      }
      buf = buf.subarray(end);
      continue;
    }
    u.in = null;
    startResponse(c, u, buf, end);
    return;
  }
}

function badGateway(c: ClientConn, u: UpstreamConn, why: string): void {
  u.destroy();
  c.up = null;
  c.fail(502, `server ${u.server.id}: ${why}`);
}

function startResponse(c: ClientConn, u: UpstreamConn, buf: Buffer, end: number): void {
  const h = HEAD;
  const route = c.route!;
  const b = route.backend;
  const p = b.persist;
  const f = u.resFraming;
  const switching = h.status === 101; // only reached for a WebSocket upgrade we asked for
  if (c.isHead || switching || h.status === 204 || h.status === 304) f.startNone();
  else if (h.chunked) f.startChunked();
  else if (h.contentLength >= 0) f.startLength(h.contentLength);
  else f.startClose();
  u.reusable = f.kind !== F_CLOSE && (h.minor >= 1 ? !h.connClose : h.connKeepAlive);
  // the client connection goes on only if both the client and the framing allow it
  // (a client that sent FIN still gets answers to the pipelined requests it sent before)
  const keep = switching || (c.keepAlive && !c.lst.draining && !(c.clientEnded && c.in === null) && f.kind !== F_CLOSE && c.reqBodyDone);
  c.keepAlive = keep;

  planReset();
  let backendSetsCookie = false;
  let cacheable = true;
  // an ignored request's response neither learns nor rewrites (HAProxy SF_IGNORE_PRST)
  const scName = c.persistRes ? setCookieName(p) : null;
  const learnHdr = c.persistRes ? learnHeaderName(p) : null;
  const sess = c.sess !== null ? route.session : null;
  let sessUpdate: string | null = null;
  let sessRenew = false;
  const rec = c.rec;
  if (rec !== null) {
    rec.status = h.status;
    rec.tr = Date.now() - c.tDispatch - (rec.tc > 0 ? rec.tc : 0);
  }
  for (let k = 0; k < h.count; k++) {
    if (sess !== null && h.id[k] === H_OTHER) {
      // the backend's word on the session: taken, never passed to the client
      if (eqLower(buf, h.ns[k], h.ne[k], sess.updateHeaderLower)) {
        sessUpdate = buf.latin1Slice(h.vs[k], h.ve[k]);
        planCut(h.ns[k], h.le[k], null);
        continue;
      }
      if (eqLower(buf, h.ns[k], h.ne[k], sess.renewHeaderLower)) {
        sessRenew = true;
        planCut(h.ns[k], h.le[k], null);
        continue;
      }
    }
    switch (h.id[k]) {
      case H_CONNECTION:
      case H_UPGRADE:
        if (!switching) planCut(h.ns[k], h.le[k], null); // a 101 keeps "Connection: upgrade" and "Upgrade"
        break;
      case H_DROP:
      case H_KEEP_ALIVE:
      case H_PROXY_CONNECTION:
      case H_TE:
        planCut(h.ns[k], h.le[k], null);
        break;
      case H_SET_COOKIE:
        if (scName !== null && setCookieNames(buf, h.vs[k], h.ve[k], scName)) {
          if (persistSetCookie(p!, c.server!, buf, h, k, scName.length, clock.sec)) backendSetsCookie = true;
          else if (rec !== null && p!.mode !== "insert") rec.persist = rec.persist[0] + (p!.mode === "prefix" || p!.mode === "rewrite" ? "P" : "L");
        }
        break;
      case H_OTHER:
        if (learnHdr !== null && eqLower(buf, h.ns[k], h.ne[k], learnHdr)) {
          persistResponseHeader(p as TablePersist, c.server!, buf, h, k, clock.sec);
          if (rec !== null) rec.persist = rec.persist[0] + "L";
        }
        break;
      case H_LOCATION:
      case H_CONTENT_LOCATION:
        rewriteLocation(c, u.server, buf, h, k);
        break;
      case H_CACHE_CONTROL: {
        const vs = h.vs[k], ve = h.ve[k];
        const i = Math.max(
          indexWithin(buf, NEEDLE_PRIVATE, vs, ve),
          indexWithin(buf, NEEDLE_NO_STORE, vs, ve),
          indexWithin(buf, NEEDLE_NO_CACHE, vs, ve),
        );
        if (i >= 0) cacheable = false;
        break;
      }
    }
  }
  if (p !== null && p.mode === "insert" && c.insertFirst >= 0 && !backendSetsCookie) {
    planAddAll(setCookieLine(p, b, c.server!.index, clock.sec, c.insertFirst));
    counters.persistInserts++;
    if (rec !== null) {
      rec.persist = rec.persist[0] + (rec.persist[0] === "V" ? "U" : "I");
      if (rec.sessionId === "-") rec.sessionId = c.server!.cookieValue; // the value just handed out
    }
    if (p.nocache && cacheable) {
      planAddAll(CC_PRIVATE);
      cacheable = false;
    }
  }
  if (sess !== null) {
    const line = sess.commit(c.sess!, sessUpdate, sessRenew, clock.now);
    c.sess = null;
    if (line !== null) {
      planAddAll(line);
      if (cacheable) planAddAll(CC_PRIVATE); // a shared cache must never hand a session cookie to another user
    }
  }
  if (!keep) {
    if (c.minor >= 1) planAddAll(CONN_CLOSE);
  } else if (c.minor === 0) planAddAll(CONN_KEEP_ALIVE);

  if (switching) {
    // the head (with the persistence cookie, if any) and whatever frames came with it
    beginTunnel(c, u, planEmpty() ? buf : emit(buf, end, end, buf.length));
    return;
  }
  const bodyEnd = f.feed(buf, end, buf.length);
  if (bodyEnd === FRAMING_ERROR) return badGateway(c, u, "malformed chunked response body");
  u.resStarted = true;
  u.deadline = f.done ? 0 : clock.now + u.serverTimeout;
  // nothing to change (a persisted client, a plain backend): forward the bytes as they came
  const out = planEmpty() && bodyEnd === buf.length ? buf : emit(buf, end, end, bodyEnd);
  if (!c.send(out) && u.sock !== null) u.sock.pause();
  if (f.done) {
    if (bodyEnd < buf.length) u.reusable = false; // the server sent more than one answer
    u.resDone = true;
    if (c.reqBodyDone) finishExchange(c, u);
  }
}

function forwardResponseBody(c: ClientConn, u: UpstreamConn, chunk: Buffer, start: number): void {
  const f = u.resFraming;
  const end = f.feed(chunk, start, chunk.length);
  if (end === FRAMING_ERROR) {
    report("warn", `server ${u.server.id}: malformed chunked response body, closing client ${c.ip}`);
    c.abort();
    return;
  }
  u.deadline = f.done ? 0 : clock.now + u.serverTimeout;
  if (end > start) {
    const part = start === 0 && end === chunk.length ? chunk : chunk.subarray(start, end);
    if (!c.send(part) && u.sock !== null) u.sock.pause();
  }
  if (f.done) {
    if (end < chunk.length) u.reusable = false;
    u.resDone = true;
    if (c.reqBodyDone) finishExchange(c, u);
  }
}

/** Does this Set-Cookie value set cookie `name`? */
function setCookieNames(buf: Uint8Array, vs: number, ve: number, name: Uint8Array): boolean {
  const n = name.length;
  if (ve - vs <= n || buf[vs + n] !== 61) return false;
  for (let i = 0; i < n; i++) if (buf[vs + i] !== name[i]) return false;
  return true;
}

function indexWithin(buf: Buffer, needle: Uint8Array, s: number, e: number): number {
  const i = buf.indexOf(needle, s);
  return i >= 0 && i + needle.length <= e ? i : -1;
}

/**
 * ProxyPassReverse: a Location/Content-Location pointing at the server's own address
 * (`http://127.0.0.1:9001/x`) is rewritten to the address the client used (`http://host/x`).
 */
function rewriteLocation(c: ClientConn, s: CompiledServer, buf: Buffer, h: Head, k: number): void {
  const vs = h.vs[k], ve = h.ve[k];
  let i = vs;
  if (startsWith(buf, i, ve, "http://")) i += 7;
  else if (startsWith(buf, i, ve, "https://")) i += 8;
  else return;
  const auth = s.authority;
  if (!startsWith(buf, i, ve, auth)) return;
  const after = i + auth.length;
  if (after < ve && buf[after] !== 47 && buf[after] !== 63 && buf[after] !== 35) return; // a longer host name
  if (c.hostE <= c.hostS || c.reqBuf === null) return;
  const name = h.id[k] === H_LOCATION ? "Location" : "Content-Location";
  const line = Buffer.from(
    `${name}: ${c.lst.proto}://${c.reqBuf.latin1Slice(c.hostS, c.hostE)}${buf.latin1Slice(after, ve)}\r\n`,
    "latin1",
  );
  planCut(h.ns[k], h.le[k], line);
}

/** Request and response both complete: recycle the backend connection, go on with the client. */
function finishExchange(c: ClientConn, u: UpstreamConn): void {
  counters.responses++;
  if (c.rec !== null) logDone(c, c.rec);
  const b = c.route!.backend;
  const poolIdle = b.timeouts.poolIdle;
  c.up = null;
  c.busy = false;
  c.route = null;
  c.server = null;
  c.reqBuf = null;
  c.replay = null;
  c.retried = false;
  c.replayed = false;
  c.exclude = -1;
  c.resume(P_UPSTREAM);
  release(u.server, b);
  u.client = null; // counted above: destroy() must not count it again
  if (u.reusable && u.out === null && u.sock !== null && u.state === U_BUSY) {
    u.sock.resume();
    putIdle(u, poolIdle);
  } else u.destroy();
  // a graceful stop began after this response's head went out (kept alive then): close now
  if (!c.keepAlive || c.lst.draining || (c.clientEnded && c.in === null)) {
    c.closing = true;
    if (c.out === null) c.sock.end();
    return;
  }
  c.deadline = clock.now + c.lst.limits.clientIdle;
  if (c.in !== null) {
    c.resume(P_PIPELINE);
    if (c.out === null) {
      processInput(c);
      closeIfEnded(c);
    }
  }
}

/** A client that sent FIN and has no complete request left can send nothing more: close. */
function closeIfEnded(c: ClientConn): void {
  if (c.clientEnded && !c.busy && !c.closed) {
    c.closing = true;
    if (c.out === null) c.sock.end();
  }
}

function onUpEnd(sock: Socket<UpstreamConn>): void {
  onUpClose(sock);
}

function onUpClose(sock: Socket<UpstreamConn>): void {
  const u = sock.data;
  if (u.state === U_CLOSED) return;
  if (u.state === U_IDLE) {
    dropIdle(u);
    u.state = U_CLOSED;
    unwatch(u);
    return;
  }
  const c = u.client;
  u.sock = null;
  if (c === null || c.closed) {
    u.destroy();
    return;
  }
  if (u.tunnel) {
    // the backend closed (or died): the client gets FIN after what is already on its way
    u.destroy();
    c.up = null;
    c.closing = true;
    if (c.out === null) c.sock.end();
    return;
  }
  if (u.resStarted) {
    if (u.resFraming.kind === F_CLOSE && !u.resDone) {
      // close-delimited response: the close is its end
      u.resDone = true;
      u.reusable = false;
      if (c.reqBodyDone) finishExchange(c, u);
      else {
        u.destroy();
        c.up = null;
        c.closing = true;
        if (c.out === null) c.sock.end();
      }
      return;
    }
    if (u.resDone) return;
    // died mid-response: the client must not take a truncated message as complete
    counters.upstreamAborts++;
    report("warn", `server ${u.server.id} closed mid-response, closing client ${c.ip}`);
    u.destroy();
    c.up = null;
    c.abort();
    return;
  }
  const replay = c.replay;
  if (!u.gotBytes && u.reused && replay !== null && !c.replayed) {
    // a keep-alive connection the server closed just as we reused it: replay once on a fresh one
    // (if that one fails to connect, retryElsewhere may still move the request once)
    counters.retries++;
    c.replayed = true;
    u.destroy();
    c.up = null;
    const s = c.server!;
    const nu = new UpstreamConn(s);
    s.state.active++;
    nu.attach(c, 0);
    nu.deadline = clock.now + c.route!.backend.timeouts.connect;
    nu.out = replay;
    c.up = nu;
    counters.upstreamConnects++;
    connect(nu);
    return;
  }
  u.destroy();
  c.up = null;
  counters.upstreamAborts++;
  c.fail(502, `server ${u.server.id} (${u.server.authority}) closed the connection without a response`);
}

// ------------------------------------------------------------------------------------
// WebSocket tunnels

/** 0 when the upgrade may go ahead, else the status to answer. */
function checkUpgrade(c: ClientConn, route: CompiledRoute, buf: Buffer, h: Head): number {
  if (h.method !== M_GET || h.minor < 1) return 400;
  const key = findHeader(buf, h, N_SEC_WS_KEY);
  if (key < 0 || h.ve[key] === h.vs[key]) return 400;
  const ws = route.websocket;
  if (ws.origins !== null) {
    const k = findHeader(buf, h, N_ORIGIN);
    if (k < 0 || !ws.origins.includes(buf.latin1Slice(h.vs[k], h.ve[k]).toLowerCase())) return 403;
  }
  const max = c.lst.limits.maxTunnels;
  if (max > 0 && counters.tunnelsOpen >= max) return 503;
  if (ws.maxPerClient > 0 && (tunnelsPerIp.get(c.ip) ?? 0) >= ws.maxPerClient) return 503;
  return 0;
}

/** After the backend's 101: both sockets become a byte pipe. */
function beginTunnel(c: ClientConn, u: UpstreamConn, head: Buffer): void {
  c.tunnel = true;
  u.tunnel = true;
  u.resStarted = true;
  u.tunnelTimeout = c.route!.backend.timeouts.tunnel;
  u.deadline = clock.now + u.tunnelTimeout;
  c.deadline = 0;
  counters.tunnels++;
  counters.tunnelsOpen++;
  tunnelsPerIp.set(c.ip, (tunnelsPerIp.get(c.ip) ?? 0) + 1);
  c.resume(P_PIPELINE);
  if (!c.send(head) && u.sock !== null) u.sock.pause();
  // frames the client sent right after its upgrade request
  const early = c.in;
  if (early !== null) {
    c.in = null;
    u.send(early);
  }
  if (c.clientEnded) u.endWhenFlushed();
}

function endTunnel(c: ClientConn): void {
  c.tunnel = false;
  if (c.rec !== null) {
    c.rec.note = "tunnel";
    logDone(c, c.rec);
  }
  counters.tunnelsOpen--;
  const n = (tunnelsPerIp.get(c.ip) ?? 1) - 1;
  if (n <= 0) tunnelsPerIp.delete(c.ip);
  else tunnelsPerIp.set(c.ip, n);
}

export const upstreamHandlers: SocketHandler<UpstreamConn> = {
  open: onUpOpen,
  data: onUpData,
  drain: onUpDrain,
  end: onUpEnd,
  close: onUpClose,
  connectError: onUpConnectError,
  error(_sock, err) {
    report("warn", `server socket error: ${err?.message ?? err}`);
  },
};

