// HTTP/1.1 parsing and head rewriting on the hot path: ns per operation.
//   node_modules/.bin/bun bench/h1/parser.bench.ts
// Each small task runs INNER calls so the per-call figure is well above timer resolution.
// The budget (BUN-NOTES.md): about 1.5 us of JS per request beyond passthrough.

import { Bench } from "tinybench";
import { Head, findHeadEnd, parseRequestHead, parseResponseHead } from "../../src/core/h1-head.ts";
import { Framing, FRAMING_ERROR } from "../../src/core/h1-body.ts";
import { planReset, planCut, planAdd, planAddAll, emit, CRLF } from "../../src/core/splice.ts";
import { findCookie, found, cookieCut, cut } from "../../src/core/persist-insert.ts";

const INNER = 1000;
const B = (s: string) => Buffer.from(s, "latin1");

// A realistic browser navigation: 10 headers, ~500 bytes.
const BROWSER = B(
  "GET /shop/cart/items?page=2&sort=price HTTP/1.1\r\n" +
    "Host: shop.example.com\r\n" +
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
    "Accept-Language: en-US,en;q=0.5\r\n" +
    "Accept-Encoding: gzip, deflate, br, zstd\r\n" +
    "Referer: https://shop.example.com/shop/cart\r\n" +
    "Cookie: _ga=GA1.2.1234567890.1700000000; SRV=ap02; theme=dark\r\n" +
    "Connection: keep-alive\r\n" +
    "Upgrade-Insecure-Requests: 1\r\n" +
    "Sec-Fetch-Mode: navigate\r\n" +
    "\r\n",
);
// What wrk sends: 3 headers.
const WRK = B("GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: keep-alive\r\nUser-Agent: wrk\r\n\r\n");
const RESPONSE = B(
  "HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nServer: nginx\r\nContent-Type: text/html; charset=utf-8\r\n" +
    "Content-Length: 1234\r\nCache-Control: no-cache\r\nConnection: keep-alive\r\nVary: Accept-Encoding\r\n\r\n",
);

// 64 KiB of data as 16 chunks of 4 KiB, with an extension on the first and a trailer.
function chunked64k(): Buffer {
  const parts: string[] = [];
  const data = "x".repeat(4096);
  for (let i = 0; i < 16; i++) parts.push(`${i === 0 ? "1000;ext=1" : "1000"}\r\n${data}\r\n`);
  parts.push("0\r\nX-Checksum: 42\r\n\r\n");
  return B(parts.join(""));
}
const BODY = chunked64k();

const head = new Head();
const rhead = new Head();
const COOKIE_NAME = B("SRV");
const FWD = B("X-Forwarded-For: 203.0.113.77\r\nX-Forwarded-Proto: http\r\n");
const SET_COOKIE = B("Set-Cookie: SRV=ap02; path=/; HttpOnly; SameSite=Lax\r\n");
const CC_PRIVATE = B("Cache-Control: private\r\n");
const XFH = B("X-Forwarded-Host: ");
const CL = B("Content-Length: 1234\r\n");
const respWithBody = Buffer.concat([RESPONSE, B("b".repeat(1234))]);
const browserEnd = findHeadEnd(BROWSER, 0);
const respEnd = findHeadEnd(RESPONSE, 0);

// sanity: everything parses, the splice does what it should
{
  if (parseRequestHead(BROWSER, browserEnd, head, 8192, 100) !== 0) throw new Error("browser head");
  if (parseRequestHead(WRK, WRK.length, head, 8192, 100) !== 0) throw new Error("wrk head");
  if (parseResponseHead(RESPONSE, respEnd, rhead) !== 0) throw new Error("response head");
  const f = new Framing();
  f.startChunked();
  if (f.feed(BODY, 0, BODY.length) !== BODY.length) throw new Error("chunked body");
}

function requestSplice(): Buffer {
  // request side of cookie insert (indirect): drop our cookie, add X-Forwarded-*
  parseRequestHead(BROWSER, browserEnd, head, 8192, 100);
  planReset();
  if (findCookie(BROWSER, head, COOKIE_NAME)) {
    cookieCut(BROWSER, head);
    planCut(cut.s, cut.e, null);
  }
  planAddAll(FWD);
  planAddAll(XFH);
  planAdd(BROWSER, head.vs[head.host]!, head.ve[head.host]!);
  planAddAll(CRLF);
  return emit(BROWSER, browserEnd, browserEnd, BROWSER.length);
}
{
  const out = requestSplice().toString("latin1");
  if (!out.includes("Cookie: _ga=GA1.2.1234567890.1700000000; theme=dark\r\n") || out.includes("SRV=")) {
    throw new Error(`request splice: ${out}`);
  }
}

function responseSplice(): Buffer {
  // response side of cookie insert: drop Connection, add Set-Cookie and Cache-Control, body in the same buffer
  parseResponseHead(respWithBody, respEnd, rhead);
  planReset();
  for (let k = 0; k < rhead.count; k++) if (rhead.id[k] === 4 /* H_CONNECTION */) planCut(rhead.ns[k]!, rhead.le[k]!, null);
  planAddAll(SET_COOKIE);
  planAddAll(CC_PRIVATE);
  return emit(respWithBody, respEnd, respEnd, respWithBody.length);
}
if (!responseSplice().toString("latin1").includes("Set-Cookie: SRV=ap02")) throw new Error("response splice");

let sink = 0;
const bench = new Bench({ time: 500, warmup: true, warmupTime: 200 });

bench.add(`parseRequestHead, browser (${BROWSER.length} B, 10 headers)`, () => {
  for (let i = 0; i < INNER; i++) sink += parseRequestHead(BROWSER, browserEnd, head, 8192, 100) + head.count;
});
bench.add(`parseRequestHead, wrk (${WRK.length} B, 3 headers)`, () => {
  for (let i = 0; i < INNER; i++) sink += parseRequestHead(WRK, WRK.length, head, 8192, 100) + head.count;
});
bench.add(`findHeadEnd, browser head (${BROWSER.length} B)`, () => {
  for (let i = 0; i < INNER; i++) sink += findHeadEnd(BROWSER, 0);
});
bench.add("findHeadEnd, resumed near the end", () => {
  for (let i = 0; i < INNER; i++) sink += findHeadEnd(BROWSER, BROWSER.length - 20);
});
bench.add(`parseResponseHead (${RESPONSE.length} B, 7 headers)`, () => {
  for (let i = 0; i < INNER; i++) sink += parseResponseHead(RESPONSE, respEnd, rhead) + rhead.count;
});
bench.add("findCookie + cookieCut (browser head, parsed)", () => {
  parseRequestHead(BROWSER, browserEnd, head, 8192, 100);
  for (let i = 0; i < INNER; i++) {
    if (findCookie(BROWSER, head, COOKIE_NAME)) cookieCut(BROWSER, head);
    sink += cut.e + found.valS;
  }
});
bench.add("request splice: parse + cut cookie + add XFF/XFH + emit", () => {
  for (let i = 0; i < INNER; i++) sink += requestSplice().length;
});
bench.add("response splice: parse + cut Connection + add Set-Cookie + emit (1234 B body)", () => {
  for (let i = 0; i < INNER; i++) sink += responseSplice().length;
});
bench.add("Framing: 64 KiB chunked (16 x 4 KiB), one feed", () => {
  const f = new Framing();
  for (let i = 0; i < 100; i++) {
    f.startChunked();
    sink += f.feed(BODY, 0, BODY.length);
  }
});
bench.add("Framing: 64 KiB chunked, fed in 1500 B segments", () => {
  const f = new Framing();
  for (let i = 0; i < 100; i++) {
    f.startChunked();
    for (let s = 0; s < BODY.length; s += 1500) {
      const r = f.feed(BODY, s, Math.min(BODY.length, s + 1500));
      if (r === FRAMING_ERROR) throw new Error("framing");
      sink += r;
    }
  }
});
bench.add("Framing: Content-Length 64 KiB, one feed", () => {
  const f = new Framing();
  for (let i = 0; i < INNER; i++) {
    f.startLength(65536);
    sink += f.feed(BODY, 0, BODY.length);
  }
});

await bench.run();

const PER: Record<string, number> = {
  "Framing: 64 KiB chunked (16 x 4 KiB), one feed": 100,
  "Framing: 64 KiB chunked, fed in 1500 B segments": 100,
};
const rows = bench.tasks.map((t) => {
  const r = t.result as { latency?: { mean: number; p99?: number } } | undefined;
  const n = PER[t.name] ?? INNER;
  const mean = r?.latency?.mean ?? NaN;
  const p99 = r?.latency?.p99 ?? NaN;
  return { task: t.name, "ns/op": Number(((mean * 1e6) / n).toFixed(1)), "p99 ns/op": Number(((p99 * 1e6) / n).toFixed(1)) };
});
console.table(rows);
if (sink === 0.5) console.log(sink); // keep the results alive
