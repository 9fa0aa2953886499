// Unit tests of the HTTP/1.1 head parser and body framing (src/core/h1-head.ts,
// src/core/h1-body.ts), and split-buffer tests over real sockets (ws's split-buffer style):
// every valid request is written to a real Latch in two parts cut at EVERY byte offset, and
// the backend must receive exactly the bytes it receives when the request arrives whole.

import { describe, expect, test } from "bun:test";
import {
  Head, findHeadEnd, hasBareLineBreak, parseRequestHead, parseResponseHead, MAX_HEADERS,
  H_HOST, H_CONTENT_LENGTH, H_TRANSFER_ENCODING, H_CONNECTION, H_COOKIE, H_DROP, H_OTHER, H_TE, H_UPGRADE,
  M_GET, M_POST, M_HEAD, M_OTHER, M_OPTIONS, M_DELETE, M_PUT,
} from "../../../src/core/h1-head.ts";
import { Framing, FRAMING_ERROR, F_CHUNKED, F_LENGTH, F_NONE } from "../../../src/core/h1-body.ts";
import { startLatch, simpleConfig } from "../../helpers/latch.ts";
import { RawClient, recordingBackend } from "../../helpers/raw.ts";

const B = (s: string) => Buffer.from(s, "latin1");
const str = (buf: Buffer, s: number, e: number) => buf.latin1Slice(s, e);

function req(text: string, maxUrl = 8192, maxHeaders = 100): { st: number; h: Head; buf: Buffer } {
  const buf = B(text);
  const end = findHeadEnd(buf, 0);
  if (end < 0) throw new Error("test head has no end");
  const h = new Head();
  const st = parseRequestHead(buf, end, h, maxUrl, maxHeaders);
  return { st, h, buf };
}

function res(text: string): { st: number; h: Head; buf: Buffer } {
  const buf = B(text);
  const end = findHeadEnd(buf, 0);
  if (end < 0) throw new Error("test head has no end");
  const h = new Head();
  return { st: parseResponseHead(buf, end, h), h, buf };
}

// ---------------------------------------------------------------------------------------------
describe("findHeadEnd", () => {
  const heads = [
    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.1\r\n\r\n",
    "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
  ];

  test("finds the index just after the first CRLFCRLF", () => {
    for (const t of heads) expect(findHeadEnd(B(t), 0)).toBe(t.indexOf("\r\n\r\n") + 4);
    expect(findHeadEnd(B("GET / HTTP/1.1\r\nHost: a\r\n"), 0)).toBe(-1);
    expect(findHeadEnd(B(""), 0)).toBe(-1);
    expect(findHeadEnd(B("\r\n\r"), 0)).toBe(-1);
  });

  test("resuming from the previous length finds the same end at every split offset", () => {
    for (const t of heads) {
      const whole = B(t);
      const want = findHeadEnd(whole, 0);
      for (let i = 0; i <= whole.length; i++) {
        const first = whole.subarray(0, i);
        const r1 = findHeadEnd(first, 0);
        if (i >= want) {
          expect(r1).toBe(want);
          continue;
        }
        expect(r1).toBe(-1);
        // the caller resumes at the previous length (the function backs up 3 bytes itself)
        expect(findHeadEnd(whole, i)).toBe(want);
      }
    }
  });

  test("byte-at-a-time resume", () => {
    for (const t of heads) {
      const whole = B(t);
      const want = findHeadEnd(whole, 0);
      let searched = 0;
      let got = -1;
      for (let n = 1; n <= whole.length && got < 0; n++) {
        got = findHeadEnd(whole.subarray(0, n), searched);
        searched = n;
      }
      expect(got).toBe(want);
    }
  });
});

describe("hasBareLineBreak", () => {
  test("detects bare LF and bare CR, not CRLF", () => {
    expect(hasBareLineBreak(B("GET / HTTP/1.1\r\nHost: a\r\n"), 0, 25)).toBe(false);
    expect(hasBareLineBreak(B("GET / HTTP/1.1\nHost"), 0, 19)).toBe(true);
    expect(hasBareLineBreak(B("GET / HTTP/1.1\rHost"), 0, 19)).toBe(true);
    expect(hasBareLineBreak(B("\nGET"), 0, 4)).toBe(true);
    // a CR at the very end may still be followed by LF
    expect(hasBareLineBreak(B("GET / HTTP/1.1\r"), 0, 15)).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
describe("parseRequestHead: valid heads", () => {
  test("request line and headers, offsets point into the buffer", () => {
    const { st, h, buf } = req("GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent:  x y \r\nAccept:*/*\r\n\r\n");
    expect(st).toBe(0);
    expect(h.method).toBe(M_GET);
    expect(str(buf, 0, h.methodEnd)).toBe("GET");
    expect(str(buf, h.targetStart, h.targetEnd)).toBe("/a/b?c=d");
    expect(h.minor).toBe(1);
    expect(h.count).toBe(3);
    expect(h.headersStart).toBe("GET /a/b?c=d HTTP/1.1\r\n".length);
    expect(h.end).toBe(buf.length);
    const names = Array.from({ length: h.count }, (_, k) => str(buf, h.ns[k]!, h.ne[k]!));
    const values = Array.from({ length: h.count }, (_, k) => str(buf, h.vs[k]!, h.ve[k]!));
    expect(names).toEqual(["Host", "User-Agent", "Accept"]);
    expect(values).toEqual(["example.com", "x y", "*/*"]); // OWS trimmed both sides, inner kept
    expect(h.id[0]).toBe(H_HOST);
    expect(h.host).toBe(0);
    // le is the index after each line's CRLF
    expect(str(buf, h.ns[1]!, h.le[1]!)).toBe("User-Agent:  x y \r\n");
    expect(h.contentLength).toBe(-1);
    expect(h.chunked).toBe(false);
  });

  test("methods", () => {
    const m = (name: string) => req(`${name} / HTTP/1.1\r\nHost: a\r\n\r\n`).h.method;
    expect(m("GET")).toBe(M_GET);
    expect(m("HEAD")).toBe(M_HEAD);
    expect(m("POST")).toBe(M_POST);
    expect(m("PUT")).toBe(M_PUT);
    expect(m("DELETE")).toBe(M_DELETE);
    expect(m("OPTIONS")).toBe(M_OPTIONS);
    expect(m("PATCH")).toBe(M_OTHER);
    expect(m("get")).toBe(M_OTHER); // methods are case-sensitive
    expect(req("PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n").st).toBe(0);
  });

  test("header names are case-insensitive for classification", () => {
    const { st, h } = req("POST / HTTP/1.1\r\nhOsT: a\r\ncontent-LENGTH: 3\r\nCOOKIE: a=b\r\nte: trailers\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    expect(st).toBe(0);
    expect(Array.from(h.id.subarray(0, h.count))).toEqual([H_HOST, H_CONTENT_LENGTH, H_COOKIE, H_TE, H_UPGRADE, H_CONNECTION]);
    expect(h.contentLength).toBe(3);
    expect(h.upgrade).toBe(4);
    expect(h.connUpgrade).toBe(true);
  });

  test("Content-Length forms", () => {
    expect(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").h.contentLength).toBe(0);
    expect(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\t42\t\r\n\r\n").h.contentLength).toBe(42);
    expect(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n").h.contentLength).toBe(7);
    expect(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999999\r\n\r\n").h.contentLength).toBe(999999999999999);
    const d = req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
    expect(d.st).toBe(0);
    expect(d.h.id[1]).toBe(H_CONTENT_LENGTH);
    expect(d.h.id[2]).toBe(H_DROP); // the repeat is dropped, one is forwarded
  });

  test("Transfer-Encoding forms", () => {
    const ok = (te: string) => {
      const r = req(`POST / HTTP/1.1\r\nHost: a\r\n${te}\r\n\r\n`);
      expect(r.st).toBe(0);
      expect(r.h.chunked).toBe(true);
      expect(r.h.hasTE).toBe(true);
    };
    ok("Transfer-Encoding: chunked");
    ok("Transfer-Encoding: CHUNKED");
    ok("Transfer-Encoding: gzip, chunked");
    ok("Transfer-Encoding: gzip,chunked");
    ok("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked");
    ok("Transfer-Encoding:\tchunked ");
  });

  test("Connection tokens and the headers they name", () => {
    const { st, h, buf } = req(
      "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop, Content-Length, Host\r\nX-Hop: 1\r\nContent-Length: 0\r\nX-Keep: 2\r\n\r\n",
    );
    expect(st).toBe(0);
    expect(h.connKeepAlive).toBe(true);
    expect(h.connClose).toBe(false);
    const byName = (n: string) => {
      for (let k = 0; k < h.count; k++) if (str(buf, h.ns[k]!, h.ne[k]!) === n) return h.id[k];
      return -1;
    };
    expect(byName("X-Hop")).toBe(H_DROP);
    expect(byName("Content-Length")).toBe(H_CONTENT_LENGTH); // never dropped by Connection
    expect(byName("Host")).toBe(H_HOST);
    expect(byName("X-Keep")).toBe(H_OTHER);
    expect(req("GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n").h.connClose).toBe(true);
  });

  test("Expect: 100-continue", () => {
    expect(req("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n").h.expect100).toBe(true);
    expect(req("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue-x\r\nContent-Length: 1\r\n\r\n").h.expect100).toBe(false);
  });

  test("HTTP/1.0 needs no Host; absolute-form and asterisk targets", () => {
    expect(req("GET / HTTP/1.0\r\n\r\n").st).toBe(0);
    expect(req("GET / HTTP/1.0\r\n\r\n").h.minor).toBe(0);
    const a = req("GET http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n");
    expect(a.st).toBe(0);
    expect(str(a.buf, a.h.targetStart, a.h.targetEnd)).toBe("http://example.com/x");
    expect(req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").st).toBe(0);
  });

  test("Host forms: name, port, IPv6 literal, empty", () => {
    for (const host of ["example.com", "example.com:8080", "[::1]:8080", "127.0.0.1", ""]) {
      expect(req(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`).st).toBe(0);
    }
  });

  test("obs-text in values is accepted", () => {
    const { st, h, buf } = req("GET / HTTP/1.1\r\nHost: a\r\nX-N: caf\xe9\r\n\r\n");
    expect(st).toBe(0);
    expect(buf[h.ve[1]! - 1]).toBe(0xe9);
  });

  test("bytes after the head (pipelined) do not change the result", () => {
    const head = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";
    const alone = req(head);
    const more = req(head + "abcGET / HTTP/1.1\r\n\r\n");
    expect(more.st).toBe(0);
    expect(more.h.count).toBe(alone.h.count);
    expect(more.h.end).toBe(alone.h.end);
  });

  test("a Head is reusable: state of a previous parse does not leak", () => {
    const h = new Head();
    const a = B("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nExpect: 100-continue\r\n\r\n");
    expect(parseRequestHead(a, a.length, h, 8192, 100)).toBe(0);
    expect(h.chunked && h.connClose && h.expect100).toBe(true);
    const b = B("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    expect(parseRequestHead(b, b.length, h, 8192, 100)).toBe(0);
    expect(h.chunked || h.connClose || h.expect100 || h.hasTE).toBe(false);
    expect(h.contentLength).toBe(-1);
    expect(h.count).toBe(1);
  });
});

describe("parseRequestHead: refusals and limits", () => {
  const cases: [string, string, number][] = [
    ["CL + TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400],
    ["TE + CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n", 400],
    ["differing CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400],
    ["CL +1", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", 400],
    ["CL 16 digits", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000000000\r\n\r\n", 400],
    ["CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\n", 400],
    ["TE not chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400],
    ["TE chunked then gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400],
    ["TE chunked then gzip (two lines)", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 400],
    ["TE chunked twice in one line", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400],
    ["TE with parameter", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;a=b\r\n\r\n", 400],
    ["TE on 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400],
    ["obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400],
    ["bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400],
    ["bare LF in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\nb\r\n\r\n", 400],
    ["NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400],
    ["DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: \x7f\r\n\r\n", 400],
    ["space in name", "GET / HTTP/1.1\r\nHo st: a\r\n\r\n", 400],
    ["@ in name", "GET / HTTP/1.1\r\nHost@: a\r\n\r\n", 400],
    ["empty name", "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", 400],
    ["space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400],
    ["no colon", "GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", 400],
    ["two spaces in request line", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["lowercase version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400],
    ["version HTTP/1.10", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400],
    ["version HTTP/1", "GET / HTTP/1\r\nHost: a\r\n\r\n", 400],
    ["no target", "GET HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["empty method", " / HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["tab separator in request line", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400],
    ["missing Host", "GET / HTTP/1.1\r\n\r\n", 400],
    ["two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400],
    ["Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400],
    ["Host with @", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400],
    ["HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505],
    ["HTTP/0.9-style version", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505],
    ["HTTP/3.1", "GET / HTTP/3.1\r\nHost: a\r\n\r\n", 505],
    ["CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405],
  ];
  for (const [name, text, want] of cases) {
    test(`${name} -> ${want}`, () => expect(req(text).st).toBe(want));
  }

  test("target length: exactly maxUrl is fine, one more is 414", () => {
    const t = "/" + "a".repeat(99);
    expect(req(`GET ${t} HTTP/1.1\r\nHost: a\r\n\r\n`, 100).st).toBe(0);
    expect(req(`GET ${t}b HTTP/1.1\r\nHost: a\r\n\r\n`, 100).st).toBe(414);
  });

  test("header count: exactly maxHeaders is fine, one more is 431", () => {
    const lines = (n: number) => "Host: a\r\n" + Array.from({ length: n - 1 }, (_, i) => `X-${i}: v\r\n`).join("");
    expect(req(`GET / HTTP/1.1\r\n${lines(10)}\r\n`, 8192, 10).st).toBe(0);
    expect(req(`GET / HTTP/1.1\r\n${lines(11)}\r\n`, 8192, 10).st).toBe(431);
  });

  test("header count never exceeds the Head's capacity whatever the configured limit", () => {
    const lines = (n: number) => "Host: a\r\n" + Array.from({ length: n - 1 }, (_, i) => `X-${i}: v\r\n`).join("");
    const full = req(`GET / HTTP/1.1\r\n${lines(MAX_HEADERS)}\r\n`, 8192, 10_000);
    expect(full.st).toBe(0);
    expect(full.h.count).toBe(MAX_HEADERS);
    expect(req(`GET / HTTP/1.1\r\n${lines(MAX_HEADERS + 1)}\r\n`, 8192, 10_000).st).toBe(431);
  });

  test("never throws; returns a status for arbitrary bytes that end in CRLFCRLF", () => {
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) & 0xff;
    const alphabet = B("GET POST / HTTP/1.1\r\n:;, \tHost: a Content-Length: 5 Transfer-Encoding chunked\x00\x7f\xe9");
    const h = new Head();
    for (let n = 0; n < 2000; n++) {
      const len = 1 + (rnd() % 80);
      const body = Buffer.alloc(len + 4);
      for (let i = 0; i < len; i++) body[i] = rnd() < 200 ? alphabet[rnd() % alphabet.length]! : rnd();
      body.write("\r\n\r\n", len, "latin1");
      const end = findHeadEnd(body, 0);
      const st = parseRequestHead(body, end, h, 8192, 100);
      expect([0, 400, 405, 414, 431, 505]).toContain(st);
      const rs = parseResponseHead(body, end, h);
      expect([0, 502]).toContain(rs);
    }
  });
});

// ---------------------------------------------------------------------------------------------
describe("parseResponseHead", () => {
  test("status line forms", () => {
    expect(res("HTTP/1.1 200 OK\r\n\r\n").h.status).toBe(200);
    expect(res("HTTP/1.1 204 No Content\r\n\r\n").h.status).toBe(204);
    expect(res("HTTP/1.1 200 \r\n\r\n").st).toBe(0); // empty reason
    expect(res("HTTP/1.1 200\r\n\r\n").st).toBe(0); // missing SP before an empty reason
    expect(res("HTTP/1.0 404 Not Found\r\n\r\n").h.minor).toBe(0);
    expect(res("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").h.status).toBe(101);
    expect(res("HTTP/1.1 599 Whatever\r\n\r\n").h.status).toBe(599);
    expect(res("HTTP/1.1 200 caf\xe9\r\n\r\n").st).toBe(0);
  });

  test("framing summary", () => {
    const cl = res("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n");
    expect(cl.st).toBe(0);
    expect(cl.h.contentLength).toBe(12);
    const ch = res("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    expect(ch.h.chunked).toBe(true);
    // a response whose TE does not end in chunked is delimited by close (RFC 9112 6.3)
    const gz = res("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
    expect(gz.st).toBe(0);
    expect(gz.h.chunked).toBe(false);
    expect(gz.h.hasTE).toBe(true);
    const sc = res("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nConnection: close\r\n\r\n");
    expect(sc.h.count).toBe(3);
    expect(sc.h.connClose).toBe(true);
  });

  test("refusals are 502", () => {
    for (const t of [
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
      "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
      "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
      "HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
      "HTTP/1.1 600 Nope\r\n\r\n",
      "HTTP/1.1 099 Nope\r\n\r\n",
      "HTTP/1.1 20 OK\r\n\r\n",
      "HTTP/1.1 2000 OK\r\n\r\n",
      "HTTP/2.0 200 OK\r\n\r\n",
      "http/1.1 200 OK\r\n\r\n",
      "HTTP/1.1  200 OK\r\n\r\n",
      "HTTP/1.1 200 O\x00K\r\n\r\n",
      "ICY 200 OK\r\n\r\n",
    ]) {
      expect([t, res(t).st]).toEqual([t, 502]);
    }
  });
});

// ---------------------------------------------------------------------------------------------
describe("Framing", () => {
  const chunkedBodies = [
    "0\r\n\r\n",
    "5\r\nhello\r\n0\r\n\r\n",
    "5;ext=1\r\nhello\r\n6;a;b=\"c\"\r\n world\r\n0\r\n\r\n",
    "A\r\n0123456789\r\na\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nY:\r\n\r\n",
    "000005\r\nhello\r\n00\r\n\r\n",
    `${(300).toString(16)}\r\n${"x".repeat(300)}\r\n1\r\n\r\r\n0\r\n\r\n`, // data may contain CR/LF bytes
  ];

  const whole = (body: Buffer, extra = 0) => {
    const f = new Framing();
    f.startChunked();
    const r = f.feed(body, 0, body.length);
    return { r, done: f.done, extra };
  };

  test("whole bodies end where the encoding ends, also with pipelined bytes after", () => {
    for (const t of chunkedBodies) {
      const b = B(t);
      expect(whole(b).r).toBe(b.length);
      expect(whole(b).done).toBe(true);
      const withMore = B(t + "GET / HTTP/1.1\r\n\r\n");
      expect(whole(withMore).r).toBe(b.length);
    }
  });

  test("split at every offset gives the same end index", () => {
    for (const t of chunkedBodies) {
      const b = B(t + "NEXT");
      const want = t.length;
      for (let i = 0; i <= b.length; i++) {
        const f = new Framing();
        f.startChunked();
        let r = f.feed(b, 0, i);
        if (f.done) {
          expect(r).toBe(want);
          continue;
        }
        expect(r).toBe(i);
        r = f.feed(b, i, b.length);
        expect([t, i, r, f.done] as unknown[]).toEqual([t, i, want, true]);
      }
    }
  });

  test("split at every pair of offsets (three parts), and byte by byte", () => {
    for (const t of chunkedBodies.slice(0, 5)) {
      const b = B(t);
      for (let i = 0; i <= b.length; i++) {
        for (let j = i; j <= b.length; j++) {
          const f = new Framing();
          f.startChunked();
          let r = f.feed(b, 0, i);
          if (!f.done) r = f.feed(b, i, j);
          if (!f.done) r = f.feed(b, j, b.length);
          expect(r).toBe(b.length);
          expect(f.done).toBe(true);
        }
      }
      const f = new Framing();
      f.startChunked();
      let r = -2;
      for (let i = 0; i < b.length && !f.done; i++) r = f.feed(b, i, i + 1);
      expect(r).toBe(b.length);
    }
  });

  test("each feed on a separate buffer (as socket chunks arrive)", () => {
    const t = B(chunkedBodies[3]!);
    for (let i = 1; i < t.length; i++) {
      const f = new Framing();
      f.startChunked();
      const a = Buffer.from(t.subarray(0, i));
      const b = Buffer.from(t.subarray(i));
      expect(f.feed(a, 0, a.length)).toBe(a.length);
      expect(f.feed(b, 0, b.length)).toBe(b.length);
      expect(f.done).toBe(true);
    }
  });

  const broken = [
    "-1\r\n",
    "0x5\r\nhello\r\n0\r\n\r\n",
    "5 \r\nhello\r\n0\r\n\r\n",
    " 5\r\nhello\r\n0\r\n\r\n",
    "ffffffffffffffffff\r\n",
    "5\nhello\r\n0\r\n\r\n",
    "5\r\nhelloX\r\n0\r\n\r\n",
    "5\r\nhello\n0\r\n\r\n",
    "3\r\nhello\r\n0\r\n\r\n",
    "\r\n",
    "g\r\n",
    "5;a\x00\r\nhello\r\n0\r\n\r\n",
    "0\r\nGET / HTTP/1.1\r\n\r\n",
    "0\r\nX: a\r\n folded\r\n\r\n",
    "0\r\nX : a\r\n\r\n",
    "0\r\n: a\r\n\r\n",
    "0\r\nX: a\x00\r\n\r\n",
    "0\r\nX: a\nY: b\r\n\r\n",
    "0\r\n\rX",
  ];

  test("broken chunked encodings are FRAMING_ERROR whole and at every split offset", () => {
    for (const t of broken) {
      const b = B(t);
      const f0 = new Framing();
      f0.startChunked();
      expect([t, f0.feed(b, 0, b.length)]).toEqual([t, FRAMING_ERROR]);
      for (let i = 0; i < b.length; i++) {
        const f = new Framing();
        f.startChunked();
        let r = f.feed(b, 0, i);
        if (r !== FRAMING_ERROR) {
          expect(f.done).toBe(false);
          r = f.feed(b, i, b.length);
        }
        expect([t, i, r]).toEqual([t, i, FRAMING_ERROR]);
      }
    }
  });

  test("Content-Length framing at every split offset", () => {
    const b = B("helloworldNEXT");
    for (let i = 0; i <= b.length; i++) {
      const f = new Framing();
      f.startLength(10);
      expect(f.kind).toBe(F_LENGTH);
      let r = f.feed(b, 0, i);
      if (!f.done) {
        expect(r).toBe(i);
        r = f.feed(b, i, b.length);
      }
      expect(r).toBe(10);
      expect(f.done).toBe(true);
    }
    const z = new Framing();
    z.startLength(0);
    expect(z.kind).toBe(F_NONE);
    expect(z.done).toBe(true);
    expect(z.feed(b, 3, b.length)).toBe(3);
  });

  test("a Framing is reusable across messages", () => {
    const f = new Framing();
    const b = B("5\r\nhel");
    f.startChunked();
    f.feed(b, 0, b.length); // left mid-chunk
    f.startChunked();
    expect(f.kind).toBe(F_CHUNKED);
    const c = B("2\r\nok\r\n0\r\n\r\n");
    expect(f.feed(c, 0, c.length)).toBe(c.length);
    f.startLength(3);
    expect(f.feed(c, 0, c.length)).toBe(3);
  });
});

// ---------------------------------------------------------------------------------------------
// Split-buffer over real sockets

const splitRequests: [string, string][] = [
  [
    "browser GET with cookies",
    "GET /app/page?id=42&x=%20y HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n" +
      "Accept: text/html,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nCookie: a=1; SRV=zz; b=2\r\nConnection: keep-alive\r\n\r\n",
  ],
  ["POST with Content-Length", "POST /submit HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world"],
  [
    "POST chunked with extension and trailer",
    "POST /up HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n",
  ],
  ["HTTP/1.0 keep-alive", "GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"],
];

async function exchange(port: number, parts: string[]): Promise<number> {
  const c = await RawClient.connect(port);
  for (let i = 0; i < parts.length; i++) {
    if (i > 0) await Bun.sleep(2);
    if (parts[i]!.length > 0) c.write(parts[i]!);
  }
  const r = await c.response();
  c.close();
  return r.status;
}

describe("split at every byte offset over a real Latch socket", () => {
  for (const [name, raw] of splitRequests) {
    test(name, async () => {
      const be = recordingBackend("b1");
      const latch = startLatch(simpleConfig({ servers: [{ id: "b1", port: be.port }] }));
      try {
        const total = () => be.rec.conns.reduce((n, b) => n + b.length, 0);
        const newBytes = (before: number[]) =>
          Buffer.concat(be.rec.conns.map((b, i) => b.subarray(before[i] ?? 0)));
        // reference: the request in one write
        let before = be.rec.conns.map((b) => b.length);
        expect(await exchange(latch.port, [raw])).toBe(200);
        const ref = newBytes(before);
        expect(ref.length).toBeGreaterThan(0);
        // the body goes through untouched; the head keeps every original header line but hop-by-hop ones
        const bodyStart = raw.indexOf("\r\n\r\n") + 4;
        expect(ref.subarray(ref.indexOf("\r\n\r\n") + 4).toString("latin1")).toBe(raw.slice(bodyStart));
        expect(ref.toString("latin1").split("\r\n")[0]).toBe(raw.split("\r\n")[0]);
        const reqsBefore = be.requests.length;
        for (let i = 1; i < raw.length; i++) {
          before = be.rec.conns.map((b) => b.length);
          const t0 = total();
          const st = await exchange(latch.port, [raw.slice(0, i), raw.slice(i)]);
          const got = newBytes(before);
          if (st !== 200 || !got.equals(ref)) {
            throw new Error(`split at ${i}: status ${st}, backend got ${JSON.stringify(got.toString("latin1"))} (${total() - t0} bytes)`);
          }
        }
        expect(be.requests.length - reqsBefore).toBe(raw.length - 1);
      } finally {
        await latch.stop();
        be.stop();
      }
    });
  }
});
