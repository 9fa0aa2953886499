// Request smuggling corpus (SPEC 7): malformed and smuggling-shaped requests sent through a
// real Latch (in-process) to a real recording backend. For every case Latch must answer the
// right status and close, and -- the point of the suite -- nothing smuggled may reach the
// backend as a request of its own: the backend's raw bytes are split again here with an
// independent strict reader and must hold exactly the legitimate request(s), with
// unambiguous framing, and never the smuggled marker.
//
// Every smuggled request in this file targets `/smuggled` (or carries `X-Smuggled`), so a
// marker search over everything the backend received catches a leak whatever its framing.
//
// Table-driven: one test() per case. Each case is a script of writes (strings) and expected
// response statuses (numbers), run in order on one client connection.

import { describe, expect, test } from "bun:test";
import { startLatch, simpleConfig } from "../../helpers/latch.ts";
import { RawClient, recordingBackend, type RawResponse } from "../../helpers/raw.ts";

// ---------------------------------------------------------------------------------------------
// An independent, strict splitter for what the backend received

interface Seen {
  line: string; // "METHOD target HTTP/1.x"
  head: string;
  headers: [string, string][];
  body: Buffer; // decoded
  raw: Buffer; // the request's bytes as received
}

/**
 * Splits a connection's bytes into requests. Strict: it throws on anything a compliant
 * server would refuse (so Latch must never forward such bytes). `rest` is an incomplete tail.
 */
function splitStrict(buf: Buffer): { reqs: Seen[]; rest: Buffer } {
  const reqs: Seen[] = [];
  let p = 0;
  for (;;) {
    if (p >= buf.length) return { reqs, rest: Buffer.alloc(0) };
    const he = buf.indexOf("\r\n\r\n", p);
    if (he < 0) return { reqs, rest: buf.subarray(p) };
    const head = buf.subarray(p, he).toString("latin1");
    const lines = head.split("\r\n");
    const line = lines[0]!;
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+ [\x21-\x7e\x80-\xff]+ HTTP\/1\.[01]$/.test(line)) {
      throw new Error(`backend got a malformed request line: ${JSON.stringify(line)}`);
    }
    const headers: [string, string][] = [];
    for (const l of lines.slice(1)) {
      const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*((?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)[ \t]*$/.exec(l);
      if (m === null) throw new Error(`backend got a malformed header line: ${JSON.stringify(l)}`);
      headers.push([m[1]!.toLowerCase(), m[2]!]);
    }
    const cls = headers.filter(([k]) => k === "content-length").map(([, v]) => v);
    const tes = headers.filter(([k]) => k === "transfer-encoding").map(([, v]) => v);
    if (cls.length > 1) throw new Error(`backend got ${cls.length} Content-Length headers`);
    if (cls.length > 0 && tes.length > 0) throw new Error("backend got both Content-Length and Transfer-Encoding");
    if (cls.length === 1 && !/^\d+$/.test(cls[0]!)) throw new Error(`backend got Content-Length ${JSON.stringify(cls[0])}`);
    if (headers.filter(([k]) => k === "host").length > 1) throw new Error("backend got two Host headers");
    let q = he + 4;
    let body: Buffer = Buffer.alloc(0);
    if (tes.length > 0) {
      const codings = tes.join(",").split(",").map((s) => s.trim().toLowerCase());
      if (codings[codings.length - 1] !== "chunked" || codings.filter((c) => c === "chunked").length !== 1) {
        throw new Error(`backend got Transfer-Encoding ${JSON.stringify(tes)}`);
      }
      const parts: Buffer[] = [];
      for (;;) {
        const le = buf.indexOf("\r\n", q);
        if (le < 0) return { reqs, rest: buf.subarray(p) };
        const sizeLine = buf.subarray(q, le).toString("latin1");
        const m = /^([0-9a-fA-F]+)(;[^\r\n]*)?$/.exec(sizeLine);
        if (m === null) throw new Error(`backend got chunk size line ${JSON.stringify(sizeLine)}`);
        const size = parseInt(m[1]!, 16);
        if (size === 0) {
          // trailers: field lines up to an empty line
          let t = le + 2;
          for (;;) {
            const tl = buf.indexOf("\r\n", t);
            if (tl < 0) return { reqs, rest: buf.subarray(p) };
            if (tl === t) {
              q = tl + 2;
              break;
            }
            const tline = buf.subarray(t, tl).toString("latin1");
            if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*$/.test(tline)) {
              throw new Error(`backend got trailer line ${JSON.stringify(tline)}`);
            }
            t = tl + 2;
          }
          break;
        }
        if (buf.length < le + 2 + size + 2) return { reqs, rest: buf.subarray(p) };
        parts.push(buf.subarray(le + 2, le + 2 + size));
        if (buf[le + 2 + size] !== 13 || buf[le + 3 + size] !== 10) throw new Error("backend got chunk data without CRLF");
        q = le + 2 + size + 2;
      }
      body = Buffer.concat(parts);
    } else if (cls.length === 1) {
      const n = Number(cls[0]);
      if (buf.length < q + n) return { reqs, rest: buf.subarray(p) };
      body = buf.subarray(q, q + n);
      q += n;
    }
    reqs.push({ line, head, headers, body: Buffer.from(body), raw: Buffer.from(buf.subarray(p, q)) });
    p = q;
  }
}

// ---------------------------------------------------------------------------------------------
// Cases

type Step = string | number; // a write, or the status of the next response

interface Case {
  name: string;
  script: Step[];
  /** "METHOD target" of each request the backend must receive, in order */
  forwarded: string[];
  /** decoded bodies of the forwarded requests, when they matter */
  bodies?: string[];
  /** the connection must end after the script (default: the last status is >= 400) */
  closes?: boolean;
  /** the backend may hold an incomplete request tail (a body cut short by a framing error) */
  partialTail?: boolean;
  /** the marker legitimately appears inside a forwarded body */
  markerInBody?: boolean;
  /** [global] lines for this case */
  global?: string;
  /** the backend answers as soon as it has a head, without reading the body */
  earlyAnswer?: string;
  /** extra assertions on what the backend got */
  check?: (seen: Seen[], raw: Buffer, responses: RawResponse[]) => void;
}

const LIMITS = `max_headers = 20\nmax_head_size = "4KB"\nmax_url_size = "1KB"`;
const SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
const H = "Host: a\r\n";
const bad = (name: string, raw: string, status = 400): Case => ({ name, script: [raw, status], forwarded: [] });
const hdrs = (n: number) => Array.from({ length: n }, (_, i) => `X-H${i}: v\r\n`).join("");

const cases: Case[] = [
  // --- Content-Length together with Transfer-Encoding
  bad("CL then TE: chunked", `POST / HTTP/1.1\r\n${H}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`),
  bad("TE: chunked then CL", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 44\r\n\r\n0\r\n\r\n${SMUGGLED}`),
  bad("CL + TE with tab OWS (TE:\\tchunked)", `POST / HTTP/1.1\r\n${H}Content-Length: 4\r\nTransfer-Encoding:\tchunked\r\n\r\n5c\r\n${SMUGGLED}`),
  bad("CL + TE: xchunked", `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${SMUGGLED}`),
  bad("CL + TE with space before the colon", `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`),
  bad("CL + TE hidden in an obs-fold continuation", `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nX-Foo: x\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`),
  bad("Expect: 100-continue with CL + TE", `POST / HTTP/1.1\r\n${H}Expect: 100-continue\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`),

  // --- Transfer-Encoding obfuscations (no Content-Length)
  bad("TE: xchunked", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${SMUGGLED}`),
  bad("TE: chunked, identity (chunked not last)", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${SMUGGLED}`),
  bad("TE: identity", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: identity\r\n\r\n${SMUGGLED}`),
  bad("TE: chunked;q=1 (parameters)", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n${SMUGGLED}`),
  bad("TE: gzip<tab>chunked (tab-separated, no comma)", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: gzip\tchunked\r\n\r\n0\r\n\r\n${SMUGGLED}`),
  bad("Transfer-Encoding : chunked (space before colon)", `POST / HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`),
  bad("duplicate TE headers: chunked first, then gzip", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n${SMUGGLED}`),
  bad("duplicate TE headers: chunked twice", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`),
  bad("TE: chunked on HTTP/1.0", `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`),

  // --- Content-Length values
  bad("duplicate differing Content-Length", `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!${SMUGGLED}`),
  bad("Content-Length: +5", `POST / HTTP/1.1\r\n${H}Content-Length: +5\r\n\r\nhello${SMUGGLED}`),
  bad("Content-Length: -1", `POST / HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\n${SMUGGLED}`),
  bad("Content-Length: 0x10", `POST / HTTP/1.1\r\n${H}Content-Length: 0x10\r\n\r\nhello world 1234${SMUGGLED}`),
  bad("Content-Length: 5, 5 (list)", `POST / HTTP/1.1\r\n${H}Content-Length: 5, 5\r\n\r\nhello${SMUGGLED}`),
  bad("Content-Length: 1 0 (inner space)", `POST / HTTP/1.1\r\n${H}Content-Length: 1 0\r\n\r\nhelloworld${SMUGGLED}`),
  bad("Content-Length: 20 digits", `POST / HTTP/1.1\r\n${H}Content-Length: 99999999999999999999\r\n\r\nhello${SMUGGLED}`),
  bad("Content-Length: empty", `POST / HTTP/1.1\r\n${H}Content-Length: \r\n\r\n${SMUGGLED}`),
  bad("Content-Length continued by obs-fold", `POST / HTTP/1.1\r\n${H}Content-Length: 5\r\n 0\r\n\r\nhello${SMUGGLED}`),

  // --- chunk sizes and chunk framing
  bad("chunk size -1", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n-1\r\n${SMUGGLED}`),
  bad("chunk size 0x5", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n${SMUGGLED}`),
  bad("chunk size '5 ' with trailing space", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n${SMUGGLED}`),
  bad("chunk size ffffffffffffffffff (overflow)", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n${SMUGGLED}`),
  bad("chunk size line ended by a bare LF", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n${SMUGGLED}`),
  bad("missing CRLF after chunk data", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello${SMUGGLED}0\r\n\r\n`),
  bad("chunk data longer than its size", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n${SMUGGLED}`),
  bad(
    "request smuggled as a 'trailer' after the last chunk",
    `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\nGET /smuggled HTTP/1.1\r\nX-Smuggled: 1\r\n\r\n`,
  ),
  bad("trailer line with obs-fold", `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: a\r\n X-Smuggled: 1\r\n\r\n`),
  {
    name: "bad chunk framing arriving after the head was forwarded: smuggled request never reaches the backend",
    script: [
      `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`,
      `3\r\nhello\r\n0\r\n\r\n${SMUGGLED}`,
      400,
    ],
    forwarded: [],
    partialTail: true,
  },

  // --- header syntax
  bad("obs-fold header continuation", `GET / HTTP/1.1\r\n${H}X-Long: a\r\n b\r\n\r\n`),
  bad("obs-fold with a tab", `GET / HTTP/1.1\r\n${H}X-Long: a\r\n\tb\r\n\r\n`),
  bad("leading whitespace before the first header", `GET / HTTP/1.1\r\n Host: a\r\n\r\n`),
  bad("bare CR in a header value", `GET / HTTP/1.1\r\n${H}X-A: a\rX-Smuggled: 1\r\n\r\n`),
  bad("bare LF line endings throughout", `GET / HTTP/1.1\nHost: a\n\n${SMUGGLED}`),
  bad("bare LF between two headers", `GET / HTTP/1.1\r\nHost: a\nX-Smuggled: 1\r\n\r\n`),
  bad("GET / HTTP/1.1 CRLF then a bare LF LF", `GET / HTTP/1.1\r\n\n\n`),
  bad("NUL in a header value", `GET / HTTP/1.1\r\n${H}X-A: a\x00b\r\n\r\n`),
  bad("control character 0x01 in a header value", `GET / HTTP/1.1\r\n${H}X-A: a\x01b\r\n\r\n`),
  bad("DEL in a header value", `GET / HTTP/1.1\r\n${H}X-A: a\x7fb\r\n\r\n`),
  bad("space inside a header name (Ho st)", `GET / HTTP/1.1\r\nHo st: a\r\n${H}\r\n`),
  bad("invalid token character in a header name (Host@)", `GET / HTTP/1.1\r\nHost@: a\r\n${H}\r\n`),
  bad("obs-text in a header name", `GET / HTTP/1.1\r\n${H}X-\xe9: a\r\n\r\n`),
  bad("empty header name", `GET / HTTP/1.1\r\n${H}: a\r\n\r\n`),
  bad("header line without a colon", `GET / HTTP/1.1\r\n${H}X-Smuggled\r\n\r\n`),
  bad("whitespace before the colon (Host : a)", `GET / HTTP/1.1\r\nHost : a\r\n\r\n`),
  bad("tab before the colon", `GET / HTTP/1.1\r\n${H}Content-Length\t: 0\r\n\r\n`),

  // --- request line
  bad("request line with two spaces", `GET  / HTTP/1.1\r\n${H}\r\n`),
  bad("request line with a trailing space", `GET / HTTP/1.1 \r\n${H}\r\n`),
  bad("lowercase http/1.1", `GET / http/1.1\r\n${H}\r\n`),
  bad("missing version", `GET /\r\n${H}\r\n`),
  bad("invalid character in the method", `G@T / HTTP/1.1\r\n${H}\r\n`),
  bad("control character in the target", `GET /a\x01b HTTP/1.1\r\n${H}\r\n`),
  bad("HTTP/2.0 version", `GET / HTTP/2.0\r\n${H}\r\n`, 505),
  bad("HTTP/2 connection preface", `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, 505),
  bad("HTTP/3.1 version", `GET / HTTP/3.1\r\n${H}\r\n`, 505),
  bad("CONNECT", `CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n`, 405),

  // --- Host
  bad("HTTP/1.1 without Host", `GET / HTTP/1.1\r\nX-A: a\r\n\r\n`),
  bad("two differing Host headers", `GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n`),
  bad("two identical Host headers", `GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n`),
  bad("Host with a path character", `GET / HTTP/1.1\r\nHost: a/smuggled\r\n\r\n`),

  // --- limits
  bad("header count over max_headers (21 > 20)", `GET / HTTP/1.1\r\n${H}${hdrs(20)}\r\n`, 431),
  {
    name: "header count over the parser's hard cap with a larger max_headers",
    script: [`GET / HTTP/1.1\r\n${H}${hdrs(300)}\r\n`, 431],
    forwarded: [],
    global: `max_headers = 1000\nmax_head_size = "16KB"`,
  },
  bad("complete head over max_head_size", `GET / HTTP/1.1\r\n${H}X-Big: ${"a".repeat(4200)}\r\n\r\n`, 431),
  bad("unterminated head over max_head_size", `GET / HTTP/1.1\r\n${H}X-Big: ${"a".repeat(4200)}`, 431),
  bad("target over max_url_size", `GET /${"a".repeat(1100)} HTTP/1.1\r\n${H}\r\n`, 414),

  // --- a valid request, then a smuggling-shaped one on the same connection
  {
    name: "pipelined: valid GET then CL + TE: the first is served, the second refused",
    script: [`GET /first HTTP/1.1\r\n${H}\r\nPOST / HTTP/1.1\r\n${H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED}`, 200, 400],
    forwarded: ["GET /first"],
  },
  {
    name: "Expect: 100-continue answered early with a final status: the body is never parsed as a request",
    script: [
      `POST /upload HTTP/1.1\r\n${H}Expect: 100-continue\r\nContent-Length: ${SMUGGLED.length}\r\n\r\n`,
      417,
      SMUGGLED,
    ],
    earlyAnswer: "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n",
    forwarded: ["POST /upload"],
    bodies: [SMUGGLED],
    markerInBody: true,
    closes: true,
  },

  // --- positive controls: legal shapes are accepted and forwarded exactly once
  {
    name: "control: valid chunked body with extensions and trailers",
    script: [`POST /c HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n6;x="q;d"\r\n world\r\n0;last\r\nX-Trailer: t\r\nX-Other: u v\r\n\r\n`, 200],
    forwarded: ["POST /c"],
    bodies: ["hello world"],
    check: (seen) => {
      expect(seen[0]!.raw.toString("latin1")).toEndWith(`\r\n\r\n5;name=value\r\nhello\r\n6;x="q;d"\r\n world\r\n0;last\r\nX-Trailer: t\r\nX-Other: u v\r\n\r\n`);
    },
  },
  {
    name: "control: pipelined valid requests (GET, CL body, chunked body) in one write",
    script: [
      `GET /1 HTTP/1.1\r\n${H}\r\nPOST /2 HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nhelloPOST /3 HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
      200,
      200,
      200,
    ],
    forwarded: ["GET /1", "POST /2", "POST /3"],
    bodies: ["", "hello", "abc"],
  },
  {
    name: "control: identical duplicate Content-Length is forwarded once",
    script: [`POST /d HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`, 200],
    forwarded: ["POST /d"],
    bodies: ["hello"],
    check: (seen) => expect(seen[0]!.headers.filter(([k]) => k === "content-length")).toEqual([["content-length", "5"]]),
  },
  {
    name: "control: Content-Length with OWS around the value ( 5 )",
    script: [`POST /o HTTP/1.1\r\n${H}Content-Length:  5 \r\n\r\nhello`, 200],
    forwarded: ["POST /o"],
    bodies: ["hello"],
  },
  {
    name: "control: Content-Length with leading zeros (05)",
    script: [`POST /z HTTP/1.1\r\n${H}Content-Length: 05\r\n\r\nhello`, 200],
    forwarded: ["POST /z"],
    bodies: ["hello"],
  },
  {
    name: "control: TE with a leading space ( chunked)",
    script: [`POST /t HTTP/1.1\r\n${H}Transfer-Encoding:  chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n`, 200],
    forwarded: ["POST /t"],
    bodies: ["ok"],
  },
  {
    name: "control: TE with a tab as OWS (\\tchunked)",
    script: [`POST /t HTTP/1.1\r\n${H}Transfer-Encoding:\tchunked\r\n\r\n2\r\nok\r\n0\r\n\r\n`, 200],
    forwarded: ["POST /t"],
    bodies: ["ok"],
  },
  {
    name: "control: TE gzip then TE chunked (chunked last) is accepted",
    script: [`POST /g HTTP/1.1\r\n${H}Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n`, 200],
    forwarded: ["POST /g"],
    bodies: ["ok"],
  },
  {
    name: "control: Connection naming Content-Length does not drop Content-Length",
    script: [`POST /k HTTP/1.1\r\n${H}Connection: Content-Length\r\nContent-Length: 5\r\n\r\nhello`, 200],
    forwarded: ["POST /k"],
    bodies: ["hello"],
    check: (seen) => expect(seen[0]!.headers).toContainEqual(["content-length", "5"]),
  },
  {
    name: "control: Connection naming Transfer-Encoding and Host drops neither",
    script: [`POST /k HTTP/1.1\r\n${H}Connection: Transfer-Encoding, Host\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n`, 200],
    forwarded: ["POST /k"],
    bodies: ["ok"],
    check: (seen) => {
      expect(seen[0]!.headers).toContainEqual(["transfer-encoding", "chunked"]);
      expect(seen[0]!.headers.some(([k]) => k === "host")).toBe(true);
    },
  },
  {
    name: "control: a request inside a Content-Length body stays body",
    script: [`POST /b HTTP/1.1\r\n${H}Content-Length: ${SMUGGLED.length}\r\n\r\n${SMUGGLED}`, 200],
    forwarded: ["POST /b"],
    bodies: [SMUGGLED],
    markerInBody: true,
  },
  {
    name: "control: Expect: 100-continue with its body is forwarded once",
    script: [`POST /e HTTP/1.1\r\n${H}Expect: 100-continue\r\nContent-Length: 5\r\n\r\n`, "hello", 200],
    forwarded: ["POST /e"],
    bodies: ["hello"],
  },
  {
    name: "control: HTTP/1.0 without Host is accepted",
    script: [`GET /old HTTP/1.0\r\n\r\n`, 200],
    forwarded: ["GET /old"],
    closes: true,
  },
  {
    name: "control: obs-text in a header value is forwarded byte for byte",
    script: [`GET /x HTTP/1.1\r\n${H}X-Name: caf\xe9 \xff\r\n\r\n`, 200],
    forwarded: ["GET /x"],
    check: (seen) => expect(seen[0]!.headers).toContainEqual(["x-name", "caf\xe9 \xff"]),
  },
  {
    name: "control: empty lines before the request line are skipped",
    script: [`\r\n\r\nGET /after-empty HTTP/1.1\r\n${H}\r\n`, 200],
    forwarded: ["GET /after-empty"],
  },
  {
    name: "control: header count exactly max_headers (20)",
    script: [`GET /many HTTP/1.1\r\n${H}${hdrs(19)}\r\n`, 200],
    forwarded: ["GET /many"],
  },
  {
    name: "control: Upgrade answered without 101: the next bytes are parsed as a request, not tunnelled",
    script: [
      `GET /ws HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
      200,
      `GET /next HTTP/1.1\r\n${H}\r\nPOST / HTTP/1.1\r\n${H}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab${SMUGGLED}`,
      200,
      400,
    ],
    forwarded: ["GET /ws", "GET /next"],
  },
  {
    name: "control: head split in the middle of CRLFCRLF",
    script: [`GET /split HTTP/1.1\r\n${H}\r`, `\n`, 200],
    forwarded: ["GET /split"],
  },
];

// ---------------------------------------------------------------------------------------------
// Runner

/** A backend that answers as soon as a head arrived (never reading the body), recording all bytes. */
function earlyBackend(answer: string) {
  const conns: Buffer[] = [];
  const server = Bun.listen<{ id: number; answered: boolean }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        s.data = { id: conns.length, answered: false };
        conns.push(Buffer.alloc(0));
      },
      data(s, d) {
        conns[s.data.id] = Buffer.concat([conns[s.data.id]!, d]);
        if (!s.data.answered && conns[s.data.id]!.includes("\r\n\r\n")) {
          s.data.answered = true;
          s.write(Buffer.from(answer, "latin1"));
        }
      },
    },
  });
  return { port: server.port, rec: { conns }, requests: null, stop: () => server.stop(true) };
}

async function run(k: Case): Promise<void> {
  const be = k.earlyAnswer !== undefined ? earlyBackend(k.earlyAnswer) : recordingBackend("b1");
  const latch = startLatch(simpleConfig({ servers: [{ id: "b1", port: be.port }], global: k.global ?? LIMITS }));
  const c = await RawClient.connect(latch.port);
  const responses: RawResponse[] = [];
  try {
    let lastWasWrite = false;
    for (const step of k.script) {
      if (typeof step === "string") {
        if (lastWasWrite) await Bun.sleep(30); // separate segments
        c.write(step);
        lastWasWrite = true;
      } else {
        const r = await c.response();
        responses.push(r);
        lastWasWrite = false;
      }
    }
    const statuses = k.script.filter((s): s is number => typeof s === "number");
    expect(responses.map((r) => r.status)).toEqual(statuses);

    const closes = k.closes ?? statuses[statuses.length - 1]! >= 400;
    if (closes) {
      expect(await c.waitClosed(3000)).toBe(true);
      if (statuses[statuses.length - 1]! >= 400) expect(responses[responses.length - 1]!.get("connection")).toBe("close");
      // nothing after the last response: no answer to a smuggled request
      expect(c.buf.length).toBe(0);
    } else {
      await Bun.sleep(30);
      expect(c.closed).toBe(false);
      expect(c.buf.length).toBe(0);
    }

    // let anything Latch might still (wrongly) forward arrive
    await Bun.sleep(40);
    const raw = Buffer.concat(be.rec.conns);
    if (!k.markerInBody) {
      expect(raw.toString("latin1").toLowerCase()).not.toContain("smuggled");
    }
    const seen: Seen[] = [];
    for (const conn of be.rec.conns) {
      const { reqs, rest } = splitStrict(conn);
      seen.push(...reqs);
      if (!k.partialTail) expect(rest.length).toBe(0);
    }
    if (k.forwarded.length === 0 && !k.partialTail) expect(raw.length).toBe(0);
    expect(seen.map((s) => s.line.replace(/ HTTP\/1\.[01]$/, ""))).toEqual(k.forwarded);
    if (be.requests !== null) {
      expect(be.requests.map((r) => r.head.split("\r\n")[0]!.replace(/ HTTP\/1\.[01]$/, ""))).toEqual(k.forwarded);
    }
    if (k.bodies) expect(seen.map((s) => s.body.toString("latin1"))).toEqual(k.bodies);
    k.check?.(seen, raw, responses);
  } finally {
    c.close();
    await latch.stop();
    be.stop();
  }
}

describe("HTTP/1.1 smuggling corpus", () => {
  test("the corpus has at least 40 cases, names are unique", () => {
    expect(cases.length).toBeGreaterThanOrEqual(40);
    expect(new Set(cases.map((k) => k.name)).size).toBe(cases.length);
  });
  for (const k of cases) {
    test(k.name, () => run(k));
  }
});
