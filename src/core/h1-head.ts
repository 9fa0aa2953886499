// HTTP/1.1 head parser for requests and responses. Works on bytes in place: it records
// offsets of the request line and of every header line into one preallocated `Head`, and
// never builds strings of its own. Parsing returns a status code (0 = fine) instead of
// throwing, like HAProxy's h1.c: the caller answers 400/414/431/501/505 and closes.
//
// Strictness (SPEC 7): bare CR or LF, obs-fold, control characters, invalid token
// characters, whitespace before the colon, Content-Length with Transfer-Encoding, differing
// or malformed Content-Length, Transfer-Encoding not ending in a single `chunked`, TE on
// HTTP/1.0, missing or repeated Host on HTTP/1.1: all are refused.

export const H_OTHER = 0;
export const H_HOST = 1;
export const H_CONTENT_LENGTH = 2;
export const H_TRANSFER_ENCODING = 3;
export const H_CONNECTION = 4;
export const H_KEEP_ALIVE = 5;
export const H_PROXY_CONNECTION = 6;
export const H_TE = 7;
export const H_TRAILER = 8;
export const H_UPGRADE = 9;
export const H_COOKIE = 10;
export const H_SET_COOKIE = 11;
export const H_EXPECT = 12;
export const H_LOCATION = 13;
export const H_CONTENT_LOCATION = 14;
export const H_CACHE_CONTROL = 15;
export const H_X_FORWARDED_FOR = 16;
export const H_X_FORWARDED_PROTO = 17;
export const H_X_FORWARDED_HOST = 18;
export const H_PROXY_AUTHORIZATION = 19;
/** a header the parser decided to drop: a repeated identical Content-Length, or one named in Connection */
export const H_DROP = 20;

/** Hard cap of header lines a Head can hold; the configured limit is at most this. */
export const MAX_HEADERS = 256;

export const M_OTHER = 0;
export const M_GET = 1;
export const M_HEAD = 2;
export const M_POST = 3;
export const M_PUT = 4;
export const M_DELETE = 5;
export const M_OPTIONS = 6;
export const M_CONNECT = 7;

export class Head {
  /** index just after the final CRLFCRLF */
  end = 0;
  /** start of the first header line (just after the start line's CRLF) */
  headersStart = 0;
  // request line
  method = M_OTHER;
  methodEnd = 0;
  targetStart = 0;
  targetEnd = 0;
  /** HTTP/1.<minor> */
  minor = 1;
  // status line
  status = 0;
  // header lines: name [ns, ne), value [vs, ve) trimmed, line end le (after CRLF)
  count = 0;
  readonly ns = new Int32Array(MAX_HEADERS);
  readonly ne = new Int32Array(MAX_HEADERS);
  readonly vs = new Int32Array(MAX_HEADERS);
  readonly ve = new Int32Array(MAX_HEADERS);
  readonly le = new Int32Array(MAX_HEADERS);
  readonly id = new Uint8Array(MAX_HEADERS);
  // summary
  contentLength = -1;
  chunked = false;
  hasTE = false;
  connClose = false;
  connKeepAlive = false;
  connUpgrade = false;
  host = -1; // header index of Host
  upgrade = -1; // header index of Upgrade
  expect100 = false;
}

// ---- character classes -------------------------------------------------------------
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 65; c <= 90; c++) TCHAR[c] = TCHAR[c + 32] = 1;
/** bytes allowed in a header value: HTAB, SP..~, obs-text */
const VCHAR = new Uint8Array(256);
VCHAR[9] = 1;
for (let c = 32; c < 256; c++) if (c !== 127) VCHAR[c] = 1;
/** bytes allowed in a request target: visible ASCII and obs-text, no SP, no controls */
const UCHAR = new Uint8Array(256);
for (let c = 33; c < 256; c++) if (c !== 127) UCHAR[c] = 1;
/** bytes allowed in a Host value (reg-name, IP literal, port) */
const HOSTCHAR = new Uint8Array(256);
for (let c = 0; c < 256; c++) HOSTCHAR[c] = TCHAR[c];
for (const c of ":[]") HOSTCHAR[c.charCodeAt(0)] = 1;
for (const c of "|`^#") HOSTCHAR[c.charCodeAt(0)] = 0;

const CR = 13, LF = 10, SP = 32, HT = 9, COLON = 58, COMMA = 44;

const CRLFCRLF = Buffer.from("\r\n\r\n");

/**
 * Where does the head end? `from` is how many bytes were already searched (resume there,
 * minus 3 for a terminator split across chunks). Returns the index after CRLFCRLF, or -1.
 */
export function findHeadEnd(buf: Buffer, from: number): number {
  const i = buf.indexOf(CRLFCRLF, from > 3 ? from - 3 : 0);
  return i < 0 ? -1 : i + 4;
}

/**
 * An incomplete head that already shows a bare LF or bare CR can never become valid:
 * refuse it now instead of waiting for the head timeout. Scans only [from, len).
 */
export function hasBareLineBreak(buf: Uint8Array, from: number, len: number): boolean {
  for (let i = from > 0 ? from : 0; i < len; i++) {
    const c = buf[i];
    if (c === LF) {
      if (i === 0 || buf[i - 1] !== CR) return true;
    } else if (c === CR) {
      if (i + 1 < len && buf[i + 1] !== LF) return true;
    }
  }
  return false;
}

/** case-insensitive compare of buf[s, s+needle.length) with a lowercase needle */
export function eqLower(buf: Uint8Array, s: number, e: number, needle: Uint8Array): boolean {
  const n = needle.length;
  if (e - s !== n) return false;
  for (let i = 0; i < n; i++) if ((buf[s + i] | 0x20) !== needle[i]) return false;
  return true;
}

const b = (s: string) => Buffer.from(s, "latin1");
const N_HOST = b("host"), N_TE = b("te"), N_COOKIE = b("cookie"), N_EXPECT = b("expect");
const N_UPGRADE = b("upgrade"), N_TRAILER = b("trailer"), N_CONNECTION = b("connection");
const N_KEEP_ALIVE = b("keep-alive"), N_SET_COOKIE = b("set-cookie"), N_LOCATION = b("location");
const N_CONTENT_LENGTH = b("content-length"), N_TRANSFER_ENCODING = b("transfer-encoding");
const N_X_FORWARDED_PROTO = b("x-forwarded-proto"), N_PROXY_CONNECTION = b("proxy-connection");
const N_CONTENT_LOCATION = b("content-location"), N_X_FORWARDED_HOST = b("x-forwarded-host");
const N_X_FORWARDED_FOR = b("x-forwarded-for"), N_CACHE_CONTROL = b("cache-control");
const N_PROXY_AUTHORIZATION = b("proxy-authorization");
const T_CLOSE = b("close"), T_KEEP_ALIVE = N_KEEP_ALIVE, T_UPGRADE = N_UPGRADE, T_CHUNKED = b("chunked");
const T_100_CONTINUE = b("100-continue");

function headerId(buf: Uint8Array, s: number, e: number): number {
  switch (e - s) {
    case 2:
      return eqLower(buf, s, e, N_TE) ? H_TE : H_OTHER;
    case 4:
      return eqLower(buf, s, e, N_HOST) ? H_HOST : H_OTHER;
    case 6:
      if (eqLower(buf, s, e, N_COOKIE)) return H_COOKIE;
      return eqLower(buf, s, e, N_EXPECT) ? H_EXPECT : H_OTHER;
    case 7:
      if (eqLower(buf, s, e, N_UPGRADE)) return H_UPGRADE;
      return eqLower(buf, s, e, N_TRAILER) ? H_TRAILER : H_OTHER;
    case 8:
      return eqLower(buf, s, e, N_LOCATION) ? H_LOCATION : H_OTHER;
    case 10:
      if (eqLower(buf, s, e, N_CONNECTION)) return H_CONNECTION;
      if (eqLower(buf, s, e, N_SET_COOKIE)) return H_SET_COOKIE;
      return eqLower(buf, s, e, N_KEEP_ALIVE) ? H_KEEP_ALIVE : H_OTHER;
    case 13:
      return eqLower(buf, s, e, N_CACHE_CONTROL) ? H_CACHE_CONTROL : H_OTHER;
    case 14:
      return eqLower(buf, s, e, N_CONTENT_LENGTH) ? H_CONTENT_LENGTH : H_OTHER;
    case 15:
      return eqLower(buf, s, e, N_X_FORWARDED_FOR) ? H_X_FORWARDED_FOR : H_OTHER;
    case 16:
      if (eqLower(buf, s, e, N_PROXY_CONNECTION)) return H_PROXY_CONNECTION;
      if (eqLower(buf, s, e, N_CONTENT_LOCATION)) return H_CONTENT_LOCATION;
      return eqLower(buf, s, e, N_X_FORWARDED_HOST) ? H_X_FORWARDED_HOST : H_OTHER;
    case 17:
      if (eqLower(buf, s, e, N_TRANSFER_ENCODING)) return H_TRANSFER_ENCODING;
      return eqLower(buf, s, e, N_X_FORWARDED_PROTO) ? H_X_FORWARDED_PROTO : H_OTHER;
    case 19:
      return eqLower(buf, s, e, N_PROXY_AUTHORIZATION) ? H_PROXY_AUTHORIZATION : H_OTHER;
  }
  return H_OTHER;
}

function methodId(buf: Uint8Array, e: number): number {
  const c = buf[0];
  switch (e) {
    case 3:
      if (c === 71 && buf[1] === 69 && buf[2] === 84) return M_GET; // GET
      if (c === 80 && buf[1] === 85 && buf[2] === 84) return M_PUT; // PUT
      return M_OTHER;
    case 4:
      if (c === 72 && buf[1] === 69 && buf[2] === 65 && buf[3] === 68) return M_HEAD;
      if (c === 80 && buf[1] === 79 && buf[2] === 83 && buf[3] === 84) return M_POST;
      return M_OTHER;
    case 6:
      return c === 68 && buf[1] === 69 && buf[5] === 69 ? M_DELETE : M_OTHER; // DELETE
    case 7:
      if (c === 79 && buf[1] === 80 && buf[6] === 83) return M_OPTIONS;
      if (c === 67 && buf[1] === 79 && buf[6] === 84) return M_CONNECT;
      return M_OTHER;
  }
  return M_OTHER;
}

// Connection tokens other than close/keep-alive/upgrade name headers to drop (hop-by-hop).
const connOtherS = new Int32Array(16);
const connOtherE = new Int32Array(16);
let connOtherN = 0;

/**
 * Parses the header block [pos, h.end - 2) into h. Returns 0, or an HTTP status to answer.
 * Shared by requests and responses; `isRequest` adds the request-only rules.
 */
function parseHeaders(buf: Uint8Array, pos: number, h: Head, maxHeaders: number, isRequest: boolean): number {
  const stop = h.end - 2; // the final CRLF
  let n = 0;
  connOtherN = 0;
  let sawCL = false;
  while (pos < stop) {
    if (n >= maxHeaders || n >= MAX_HEADERS) return 431; // the configured limit, never past the Head's arrays
    // name
    const ns = pos;
    let c = buf[pos];
    if (c === SP || c === HT) return 400; // obs-fold or leading whitespace
    while (TCHAR[c] === 1) c = buf[++pos];
    if (c !== COLON || pos === ns) return 400; // no colon, empty name, whitespace before colon, bad char
    const ne = pos;
    pos++;
    // OWS
    c = buf[pos];
    while (c === SP || c === HT) c = buf[++pos];
    const vs = pos;
    let ve = pos;
    while (c !== CR) {
      if (VCHAR[c] !== 1) return 400; // LF alone, NUL, control characters
      pos++;
      if (c !== SP && c !== HT) ve = pos;
      c = buf[pos];
    }
    if (buf[pos + 1] !== LF) return 400; // bare CR
    pos += 2;
    const id = headerId(buf, ns, ne);
    h.ns[n] = ns;
    h.ne[n] = ne;
    h.vs[n] = vs;
    h.ve[n] = ve;
    h.le[n] = pos;
    h.id[n] = id;
    switch (id) {
      case H_HOST:
        if (h.host >= 0) return 400; // repeated Host
        h.host = n;
        if (isRequest) for (let i = vs; i < ve; i++) if (HOSTCHAR[buf[i]] !== 1) return 400;
        break;
      case H_CONTENT_LENGTH: {
        if (ve === vs || ve - vs > 15) return 400;
        let v = 0;
        for (let i = vs; i < ve; i++) {
          const d = buf[i] - 48;
          if (d < 0 || d > 9) return 400; // signs, commas, spaces, hex: all refused
          v = v * 10 + d;
        }
        if (sawCL) {
          if (v !== h.contentLength) return 400; // differing duplicate
          h.id[n] = H_DROP; // identical duplicate: forward one
        }
        sawCL = true;
        h.contentLength = v;
        break;
      }
      case H_TRANSFER_ENCODING: {
        // a comma list of codings; the last of all TE lines must be chunked, and only once
        if (h.chunked) return 400; // anything after chunked (or chunked twice)
        h.hasTE = true;
        let i = vs;
        while (i < ve) {
          while (i < ve && (buf[i] === SP || buf[i] === HT || buf[i] === COMMA)) i++;
          const ts = i;
          while (i < ve && TCHAR[buf[i]] === 1) i++;
          if (i === ts) {
            if (i < ve) return 400;
            break;
          }
          let te = i;
          while (i < ve && (buf[i] === SP || buf[i] === HT)) i++;
          if (i < ve && buf[i] !== COMMA) return 400; // parameters or junk: refused
          if (h.chunked) return 400; // a coding after chunked
          if (eqLower(buf, ts, te, T_CHUNKED)) h.chunked = true;
        }
        break;
      }
      case H_CONNECTION: {
        let i = vs;
        while (i < ve) {
          while (i < ve && (buf[i] === SP || buf[i] === HT || buf[i] === COMMA)) i++;
          const ts = i;
          while (i < ve && buf[i] !== COMMA && buf[i] !== SP && buf[i] !== HT) i++;
          if (i === ts) break;
          if (eqLower(buf, ts, i, T_CLOSE)) h.connClose = true;
          else if (eqLower(buf, ts, i, T_KEEP_ALIVE)) h.connKeepAlive = true;
          else if (eqLower(buf, ts, i, T_UPGRADE)) h.connUpgrade = true;
          else if (connOtherN < 16) {
            connOtherS[connOtherN] = ts;
            connOtherE[connOtherN++] = i;
          }
        }
        break;
      }
      case H_UPGRADE:
        h.upgrade = n;
        break;
      case H_EXPECT:
        if (eqLower(buf, vs, ve, T_100_CONTINUE)) h.expect100 = true;
        break;
    }
    n++;
  }
  h.count = n;
  if (connOtherN > 0) dropConnectionNamed(buf, h);
  if (h.hasTE) {
    if (!h.chunked) return isRequest ? 400 : 0; // response: close-delimited (RFC 9112 6.3)
    if (sawCL) return 400; // CL + TE: smuggling shape
    if (h.minor === 0) return 400; // TE on HTTP/1.0
  }
  return 0;
}

/** Headers listed in Connection are hop-by-hop: mark them dropped. */
function dropConnectionNamed(buf: Uint8Array, h: Head): void {
  for (let k = 0; k < h.count; k++) {
    const ns = h.ns[k], ne = h.ne[k];
    for (let j = 0; j < connOtherN; j++) {
      const ts = connOtherS[j], te = connOtherE[j];
      if (te - ts !== ne - ns) continue;
      let same = true;
      for (let i = 0; i < te - ts; i++) {
        if ((buf[ns + i] | 0x20) !== (buf[ts + i] | 0x20)) {
          same = false;
          break;
        }
      }
      // never let Connection remove the framing headers or Host
      const id = h.id[k];
      if (same && id !== H_CONTENT_LENGTH && id !== H_TRANSFER_ENCODING && id !== H_HOST) h.id[k] = H_DROP;
    }
  }
}

function reset(h: Head, end: number): void {
  h.end = end;
  h.count = 0;
  h.contentLength = -1;
  h.chunked = false;
  h.hasTE = false;
  h.connClose = false;
  h.connKeepAlive = false;
  h.connUpgrade = false;
  h.host = -1;
  h.upgrade = -1;
  h.expect100 = false;
  h.status = 0;
  h.method = M_OTHER;
}

/**
 * Parses a request head occupying buf[0, end). Returns 0, or the status to answer
 * (400, 414, 431, 505). Limits: maxUrl bytes of target, maxHeaders header lines.
 */
export function parseRequestHead(buf: Uint8Array, end: number, h: Head, maxUrl: number, maxHeaders: number): number {
  reset(h, end);
  // method
  let pos = 0;
  let c = buf[0];
  while (TCHAR[c] === 1) c = buf[++pos];
  if (c !== SP || pos === 0) return 400;
  h.methodEnd = pos;
  h.method = methodId(buf, pos);
  // target
  const ts = ++pos;
  c = buf[pos];
  while (UCHAR[c] === 1) c = buf[++pos];
  if (c !== SP || pos === ts) return 400;
  if (pos - ts > maxUrl) return 414;
  h.targetStart = ts;
  h.targetEnd = pos;
  // version: exactly "HTTP/1.x" then CRLF
  pos++;
  if (
    buf[pos] !== 72 || buf[pos + 1] !== 84 || buf[pos + 2] !== 84 || buf[pos + 3] !== 80 ||
    buf[pos + 4] !== 47 || buf[pos + 6] !== 46 || buf[pos + 8] !== CR || buf[pos + 9] !== LF
  ) return 400;
  const major = buf[pos + 5] - 48, minor = buf[pos + 7] - 48;
  if (major < 0 || major > 9 || minor < 0 || minor > 9) return 400;
  if (major !== 1) return 505;
  h.minor = minor;
  h.headersStart = pos + 10;
  if (h.method === M_CONNECT) return 405; // not a forward proxy
  const r = parseHeaders(buf, pos + 10, h, maxHeaders, true);
  if (r !== 0) return r;
  if (minor >= 1 && h.host < 0) return 400;
  return 0;
}

/** Parses a response head in buf[0, end). Returns 0, or 502 when the backend spoke nonsense. */
export function parseResponseHead(buf: Uint8Array, end: number, h: Head): number {
  reset(h, end);
  // "HTTP/1.x SP 3DIGIT SP reason CRLF" (the reason may be empty, the SP before it is required by RFC but often missing)
  if (buf[0] !== 72 || buf[1] !== 84 || buf[2] !== 84 || buf[3] !== 80 || buf[4] !== 47 || buf[5] !== 49 || buf[6] !== 46) return 502;
  const minor = buf[7] - 48;
  if (minor < 0 || minor > 9 || buf[8] !== SP) return 502;
  const d0 = buf[9] - 48, d1 = buf[10] - 48, d2 = buf[11] - 48;
  if (d0 < 1 || d0 > 5 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) return 502;
  h.minor = minor;
  h.status = d0 * 100 + d1 * 10 + d2;
  let pos = 12;
  let c = buf[pos];
  if (c === SP) {
    c = buf[++pos];
    while (c !== CR) {
      if (VCHAR[c] !== 1) return 502;
      c = buf[++pos];
    }
  }
  if (c !== CR || buf[pos + 1] !== LF) return 502;
  h.headersStart = pos + 2;
  const r = parseHeaders(buf, pos + 2, h, MAX_HEADERS, false);
  return r === 0 ? 0 : 502;
}
