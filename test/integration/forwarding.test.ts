// Forwarding core over real sockets: keep-alive on both sides, pipelining, 100-continue,
// bodiless responses, hop-by-hop headers, X-Forwarded-*, Host, Location rewriting,
// routing, HTTP/1.0, Connection: close, the https redirect listener and error statuses.
// Each test asserts what the backend received and what the client received, byte-exact
// where the bytes are the behaviour.

import { afterEach, describe, expect, test } from "bun:test";
import { freePort, reported, simpleConfig, startLatch, type Running } from "../helpers/latch.ts";
import { RawClient, recordingBackend, request, takeResponse } from "../helpers/raw.ts";
import { ok, scriptedBackend } from "../helpers/backends.ts";
import { sendThenHalfClose } from "../helpers/half-close.ts";

// everything a test starts, stopped after it
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function latch(toml: string): Running {
  const l = startLatch(toml);
  cleanups.push(() => l.stop());
  return l;
}

function rec(name: string, respond?: Parameters<typeof recordingBackend>[1]) {
  const b = recordingBackend(name, respond);
  cleanups.push(() => b.stop());
  return b;
}

function scripted(respond: Parameters<typeof scriptedBackend>[0]) {
  const b = scriptedBackend(respond);
  cleanups.push(() => b.stop());
  return b;
}

async function client(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  cleanups.push(() => c.close());
  return c;
}

/** the single-backend config most tests use */
function one(port: number, extra: Omit<Parameters<typeof simpleConfig>[0], "servers"> = {}): string {
  return simpleConfig({ servers: [{ id: "s1", port }], ...extra });
}

const GET = (path: string, host = "example.com", extra = "") => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;

describe("keep-alive", () => {
  test("several requests on one client connection reuse one backend connection", async () => {
    const b = rec("b1");
    const l = latch(one(b.port));
    const c = await client(l.port);
    for (let i = 0; i < 4; i++) {
      c.write(GET(`/r${i}`));
      const r = await c.response();
      expect(r.status).toBe(200);
      expect(r.body.toString()).toBe("b1");
      expect(r.get("connection")).toBeUndefined();
    }
    expect(c.closed).toBe(false);
    expect(b.requests.map((r) => r.head.split("\r\n")[0])).toEqual([0, 1, 2, 3].map((i) => `GET /r${i} HTTP/1.1`));
    expect(b.rec.conns.length).toBe(1);
  });

  test("separate client connections, one after another, share the pooled backend connection", async () => {
    const b = rec("b1");
    const l = latch(one(b.port));
    for (let i = 0; i < 3; i++) {
      const r = await request(l.port, GET(`/c${i}`));
      expect(r.status).toBe(200);
      expect(r.body.toString()).toBe("b1");
    }
    expect(b.requests.length).toBe(3);
    expect(b.rec.conns.length).toBe(1);
  });

  test("a pooled connection the backend closed while idle is replaced without an error", async () => {
    // the backend answers, then closes the connection shortly after (as a server idle timeout does)
    const b = scripted((req, sock) => {
      setTimeout(() => sock.end(), 30);
      return ok(`r${req.conn}`);
    });
    const l = latch(one(b.port));
    const c = await client(l.port);
    c.write(GET("/1"));
    expect((await c.response()).body.toString()).toBe("r0");
    await Bun.sleep(150); // the backend has closed the idle pooled connection by now
    c.write(GET("/2"));
    const r = await c.response();
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe("r1");
    expect(b.conns.length).toBe(2);
  });

  test("a reused connection that the backend closes on the next request is replayed once on a fresh one", async () => {
    // the race of a server closing its idle side just as the proxy reuses it: the second request
    // on a backend connection gets no answer, only a close
    const b = scripted((req, sock) => {
      if (req.n === 1) {
        sock.end();
        return null;
      }
      return ok(`conn${req.conn}`);
    });
    const l = latch(one(b.port));
    const c = await client(l.port);
    c.write(GET("/a"));
    expect((await c.response()).body.toString()).toBe("conn0");
    c.write(GET("/b"));
    const r = await c.response();
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe("conn1");
    expect(b.requests.map((r) => `${r.conn}:${r.target}`)).toEqual(["0:/a", "0:/b", "1:/b"]);
    expect(c.closed).toBe(false);
  });
  test("a POST is never replayed: the same race gives 502, and the backend saw the POST once", async () => {
    const b = scripted((req, sock) => {
      if (req.n === 1) {
        sock.end();
        return null;
      }
      return ok(`conn${req.conn}`);
    });
    const l = latch(one(b.port));
    const c = await client(l.port);
    c.write(GET("/a"));
    expect((await c.response()).body.toString()).toBe("conn0");
    c.write("POST /pay HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n100");
    const r = await c.response();
    expect(r.status).toBe(502);
    expect(b.requests.filter((q) => q.method === "POST").length).toBe(1);
  });
});

describe("pipelining", () => {
  test("5 requests in one write are answered in order with their own bodies", async () => {
    const b = rec("x", ({ head }) => {
      const path = head.split(" ")[1];
      return ok(`body of ${path}`);
    });
    const l = latch(one(b.port));
    const c = await client(l.port);
    c.write([1, 2, 3, 4, 5].map((i) => GET(`/p${i}`)).join(""));
    for (let i = 1; i <= 5; i++) {
      const r = await c.response();
      expect(r.status).toBe(200);
      expect(r.body.toString()).toBe(`body of /p${i}`);
    }
    expect(c.buf.length).toBe(0);
    expect(b.requests.map((r) => r.head.split(" ")[1])).toEqual(["/p1", "/p2", "/p3", "/p4", "/p5"]);
  });

  test("in order even when the backend answers with different delays (and with bodies)", async () => {
    const delays = [120, 0, 60, 5, 30];
    const b = scripted(async (req) => {
      const i = Number(req.target.slice(2));
      await Bun.sleep(delays[i]);
      return ok(`answer ${i} to ${req.body.toString()}`);
    });
    const l = latch(one(b.port));
    const c = await client(l.port);
    let all = "";
    for (let i = 0; i < 5; i++) {
      const body = `payload-${i}`.repeat(i + 1);
      all += i % 2 === 0
        ? `POST /p${i} HTTP/1.1\r\nHost: h\r\nContent-Length: ${body.length}\r\n\r\n${body}`
        : `POST /p${i} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`;
    }
    c.write(all);
    for (let i = 0; i < 5; i++) {
      const r = await c.response();
      expect(r.body.toString()).toBe(`answer ${i} to ${`payload-${i}`.repeat(i + 1)}`);
    }
    expect(b.requests.map((r) => r.target)).toEqual(["/p0", "/p1", "/p2", "/p3", "/p4"]);
  });
});

describe("Expect: 100-continue", () => {
  test("the interim 100 reaches the client, which then sends the body; the final answer follows", async () => {
    // one request at a time, each with an 11-byte body
    let received = Buffer.alloc(0);
    let all = "";
    let sawHeadAlone = false;
    const server = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        data(s, d) {
          received = Buffer.concat([received, d]);
          all += d.toString("latin1");
          const he = received.indexOf("\r\n\r\n");
          if (he < 0) return;
          if (received.length === he + 4 && /expect: 100-continue/i.test(received.toString())) {
            sawHeadAlone = true; // the head came without the body: ask for it
            s.write("HTTP/1.1 100 Continue\r\n\r\n");
            return;
          }
          if (received.length === he + 4 + 11) {
            s.write(ok(`got ${received.subarray(he + 4).toString()}`));
            received = Buffer.alloc(0);
          }
        },
      },
    });
    cleanups.push(() => server.stop(true));
    const l = latch(one(server.port));
    const c = await client(l.port);
    c.write("PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n");
    const interim = await c.response();
    expect(interim.status).toBe(100);
    expect(interim.head).toBe("HTTP/1.1 100 Continue");
    expect(sawHeadAlone).toBe(true);
    c.write("hello world");
    const r = await c.response();
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe("got hello world");
    expect(all).toContain("\r\nExpect: 100-continue\r\n");
    // the connection goes on
    c.write("PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello again");
    expect((await c.response()).body.toString()).toBe("got hello again");
  });

  test("a backend that sends 100 and the final response in one write: the client gets both, in order", async () => {
    const b = rec("b", ({ head }) =>
      /\r\nexpect: 100-continue/i.test(head)
        ? "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone"
        : ok("next"),
    );
    const l = latch(one(b.port));
    const c = await client(l.port);
    c.write("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc");
    const r1 = await c.response();
    expect(r1.status).toBe(100);
    const r2 = await c.response();
    expect(r2.status).toBe(201);
    expect(r2.body.toString()).toBe("done");
    expect(b.requests[0].body.toString()).toBe("abc");
    c.write(GET("/next"));
    const r3 = await c.response();
    expect(r3.status).toBe(200);
    expect(r3.body.toString()).toBe("next");
  });
});

describe("responses without a body", () => {
  test("HEAD: Content-Length passes, no body is waited for, the next request on the connection works", async () => {
    const b = rec("b", ({ head }) =>
      head.startsWith("HEAD") ? "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n" : ok("after head"),
    );
    const l = latch(one(b.port));
    const c = await client(l.port);
    c.write("HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n");
    const r = await c.response({ head: true });
    expect(r.status).toBe(200);
    expect(r.get("content-length")).toBe("1234");
    c.write(GET("/g"));
    const r2 = await c.response();
    expect(r2.body.toString()).toBe("after head");
    expect(b.rec.conns.length).toBe(1); // the backend connection was reused after the HEAD
  });

  test("204 and 304 (even with a Content-Length) carry no body and the connection goes on", async () => {
    const b = rec("b", ({ head }) => {
      const p = head.split(" ")[1];
      if (p === "/204") return "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n";
      if (p === "/304") return "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"e\"\r\n\r\n";
      return ok("plain");
    });
    const l = latch(one(b.port));
    const c = await client(l.port);
    c.write(GET("/204"));
    const r1 = await c.response();
    expect(r1.status).toBe(204);
    expect(r1.head).toBe("HTTP/1.1 204 No Content\r\nX-A: 1");
    c.write(GET("/304"));
    const r2 = await c.response();
    expect(r2.status).toBe(304);
    expect(r2.get("content-length")).toBe("10");
    c.write(GET("/x"));
    const r3 = await c.response();
    expect(r3.body.toString()).toBe("plain");
    expect(c.buf.length).toBe(0);
    expect(b.rec.conns.length).toBe(1);
  });
});

describe("headers", () => {
  test("hop-by-hop headers are removed from the request; X-Forwarded-* added; Host set to the server", async () => {
    const b = rec("b");
    const l = latch(one(b.port));
    const c = await client(l.port);
    c.write(
      "GET /hop?q=1 HTTP/1.1\r\n" +
        "Host: example.com:8080\r\n" +
        "Connection: keep-alive, X-Custom\r\n" +
        "Keep-Alive: timeout=5\r\n" +
        "Proxy-Connection: keep-alive\r\n" +
        "TE: trailers\r\n" +
        "Upgrade: foo/1\r\n" +
        "X-Custom: secret\r\n" +
        "X-Forwarded-For: 203.0.113.7\r\n" +
        "X-Forwarded-Proto: https\r\n" +
        "X-Forwarded-Host: evil.example\r\n" +
        "Accept: */*\r\n\r\n",
    );
    expect((await c.response()).status).toBe(200);
    expect(b.rec.conns[0].toString("latin1")).toBe(
      "GET /hop?q=1 HTTP/1.1\r\n" +
        `Host: 127.0.0.1:${b.port}\r\n` +
        "X-Forwarded-For: 203.0.113.7\r\n" +
        "Accept: */*\r\n" +
        "X-Forwarded-For: 127.0.0.1\r\n" +
        "X-Forwarded-Proto: http\r\n" +
        "X-Forwarded-Host: example.com:8080\r\n\r\n",
    );
  });

  test("hop-by-hop headers are removed from the response, other headers pass byte for byte", async () => {
    const b = rec("b", () =>
      "HTTP/1.1 200 OK\r\n" +
        "Connection: keep-alive, X-Resp\r\n" +
        "Keep-Alive: timeout=5, max=100\r\n" +
        "Proxy-Connection: keep-alive\r\n" +
        "TE: trailers\r\n" +
        "Upgrade: foo/1\r\n" +
        "X-Resp: hop\r\n" +
        "x-kept:   Mixed Case  value\r\n" +
        "Content-Length: 2\r\n\r\nok",
    );
    const l = latch(one(b.port));
    const c = await client(l.port);
    c.write(GET("/"));
    const r = await c.response();
    expect(r.head).toBe("HTTP/1.1 200 OK\r\nx-kept:   Mixed Case  value\r\nContent-Length: 2");
    expect(r.body.toString()).toBe("ok");
    expect(c.buf.length).toBe(0);
  });

  test("preserve_host = true keeps the client's Host", async () => {
    const b = rec("b");
    const l = latch(one(b.port, { routeExtra: "preserve_host = true" }));
    await request(l.port, GET("/", "www.example.com:81"));
    expect(b.requests[0].head).toContain("\r\nHost: www.example.com:81\r\n");
    expect(b.requests[0].head).not.toContain(`127.0.0.1:${b.port}`);
    expect(b.requests[0].head).toContain("\r\nX-Forwarded-Host: www.example.com:81");
  });

  test("forwarded_for = false adds no X-Forwarded-* and keeps what the client sent", async () => {
    const b = rec("b");
    const l = latch(one(b.port, { listenExtra: "forwarded_for = false" }));
    await request(l.port, GET("/", "h", "X-Forwarded-Proto: https\r\n"));
    expect(b.rec.conns[0].toString("latin1")).toBe(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${b.port}\r\nX-Forwarded-Proto: https\r\n\r\n`);
  });

  test("Location and Content-Location naming the backend are rewritten to the client's host; others untouched", async () => {
    let port = 0;
    const b = rec("b", ({ head }) => {
      const p = head.split(" ")[1];
      if (p === "/own")
        return `HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:${port}/x?y=1\r\nContent-Location: http://127.0.0.1:${port}/cl\r\nContent-Length: 0\r\n\r\n`;
      if (p === "/bare") return `HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:${port}\r\nContent-Length: 0\r\n\r\n`;
      if (p === "/other")
        return `HTTP/1.1 302 Found\r\nLocation: http://other.example/x\r\nContent-Location: /relative\r\nContent-Length: 0\r\n\r\n`;
      // same host, a longer port: another server
      return `HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:${port}0/x\r\nContent-Length: 0\r\n\r\n`;
    });
    port = b.port;
    const l = latch(one(b.port));
    const c = await client(l.port);
    c.write(GET("/own", "www.example.com:8443"));
    const r1 = await c.response();
    expect(r1.all("location")).toEqual(["http://www.example.com:8443/x?y=1"]);
    expect(r1.all("content-location")).toEqual(["http://www.example.com:8443/cl"]);
    c.write(GET("/bare", "a.example"));
    expect((await c.response()).get("location")).toBe("http://a.example");
    c.write(GET("/other"));
    const r3 = await c.response();
    expect(r3.get("location")).toBe("http://other.example/x");
    expect(r3.get("content-location")).toBe("/relative");
    c.write(GET("/longer"));
    expect((await c.response()).get("location")).toBe(`http://127.0.0.1:${port}0/x`);
  });
});

describe("routing", () => {
  // order (compile.ts): exact hosts, then wildcards, then any host; the longest path within each;
  // a host whose routes match no path falls through to the any-host routes
  test("by exact host, wildcard host and longest path prefix; 404 when nothing matches", async () => {
    const names = ["exact", "wild", "api", "apiv2", "static"] as const;
    const bs = Object.fromEntries(names.map((n) => [n, rec(n)])) as Record<(typeof names)[number], ReturnType<typeof rec>>;
    const backend = (n: string) => `[backend.${n}]\n[[backend.${n}.server]]\nid = "${n}1"\naddress = "127.0.0.1:${bs[n as keyof typeof bs].port}"\n`;
    const l = latch(`
[[listen]]
name = "web"
bind = "127.0.0.1:0"
  [[listen.route]]
  host = "example.com"
  backend = "exact"
  [[listen.route]]
  host = "*.example.com"
  backend = "wild"
  [[listen.route]]
  host = "*.example.com"
  path = "/static"
  backend = "static"
  [[listen.route]]
  host = "docs.test"
  path = "/guide"
  backend = "static"
  [[listen.route]]
  path = "/api"
  backend = "api"
  [[listen.route]]
  path = "/api/v2"
  backend = "apiv2"
${names.map(backend).join("\n")}
`);
    const to = async (host: string, path: string) => {
      const r = await request(l.port, GET(path, host));
      return r.status === 200 ? r.body.toString() : String(r.status);
    };
    expect(await to("example.com", "/")).toBe("exact");
    expect(await to("EXAMPLE.com:8080", "/page")).toBe("exact");
    expect(await to("www.example.com", "/")).toBe("wild");
    expect(await to("a.b.example.com", "/x")).toBe("wild");
    expect(await to("www.example.com", "/static/app.js")).toBe("static");
    expect(await to("example.com", "/static/app.js")).toBe("exact"); // the static route is for subdomains only
    expect(await to("other.org", "/api/users")).toBe("api");
    expect(await to("other.org", "/api/v2/users")).toBe("apiv2");
    expect(await to("www.example.com", "/api/v2/x")).toBe("wild"); // a host's own routes come first
    expect(await to("docs.test", "/guide/intro")).toBe("static");
    expect(await to("docs.test:8080", "/api/v2/x")).toBe("apiv2"); // no docs.test route matches: any-host routes
    expect(await to("docs.test", "/")).toBe("404");
    expect(await to("example.org", "/")).toBe("404");
    expect(await to("notexample.com", "/")).toBe("404");
    const r = await request(l.port, GET("/", "nowhere.test"));
    expect(r.status).toBe(404);
    expect(r.get("connection")).toBe("close");
    expect(r.body.length).toBeGreaterThan(0);
    expect(r.body.length).toBeLessThan(200);
  });
});

describe("connection management", () => {
  test("HTTP/1.0 client: the response ends the connection", async () => {
    const b = rec("b");
    const l = latch(one(b.port));
    const c = await client(l.port);
    c.write("GET /old HTTP/1.0\r\n\r\n");
    const r = await c.response();
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe("b");
    expect(r.get("connection")).toBeUndefined();
    expect(await c.waitClosed()).toBe(true);
    expect(b.requests[0].head.split("\r\n")[0]).toBe("GET /old HTTP/1.0");
  });

  test("HTTP/1.0 client with Connection: keep-alive keeps the connection", async () => {
    const b = rec("b");
    const l = latch(one(b.port));
    const c = await client(l.port);
    c.write("GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    const r = await c.response();
    expect(r.status).toBe(200);
    expect(r.get("connection")).toBe("keep-alive");
    c.write("GET /2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    const r2 = await c.response();
    expect(r2.body.toString()).toBe("b");
    expect(c.closed).toBe(false);
    // the backend never sees the client's Connection header
    expect(b.requests.every((q) => !/\r\nconnection:/i.test(q.head))).toBe(true);
  });

  test("client Connection: close gets Connection: close and the socket closes", async () => {
    const b = rec("b");
    const l = latch(one(b.port));
    const c = await client(l.port);
    c.write(GET("/", "h", "Connection: close\r\n"));
    const r = await c.response();
    expect(r.status).toBe(200);
    expect(r.get("connection")).toBe("close");
    expect(await c.waitClosed()).toBe(true);
    // the backend connection stays pooled: the client's close is not the backend's business
    expect(b.requests[0].head).not.toMatch(/\r\nconnection:/i);
  });

  test("a client that half-closes after its request gets the response, then the close", async () => {
    const b = rec("b");
    const l = latch(one(b.port));
    const { bytes, closed } = await sendThenHalfClose(l.port, GET("/fin"));
    expect(closed).toBe(true);
    expect(bytes.toString("latin1")).toBe("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Server: b\r\nConnection: close\r\n\r\nb");
  });

  test("pipelined requests followed by a half-close are all answered, in order, then the close", async () => {
    const b = rec("x", ({ head }) => ok(`body of ${head.split(" ")[1]}`));
    const l = latch(one(b.port));
    const { bytes, closed } = await sendThenHalfClose(l.port, GET("/1") + GET("/2") + GET("/3"));
    expect(closed).toBe(true);
    let rest = bytes;
    const got: string[] = [];
    for (let r = takeResponse(rest); r !== null; r = takeResponse(rest)) {
      got.push(`${r.res.body.toString()} ${r.res.get("connection") ?? "-"}`);
      rest = r.rest;
    }
    expect(got).toEqual(["body of /1 -", "body of /2 -", "body of /3 close"]);
    expect(rest.length).toBe(0);
    expect(b.requests.length).toBe(3);
  });

  test("a half-close after a partial pipelined head: complete requests answered, the rest dropped", async () => {
    const b = rec("b");
    const l = latch(one(b.port));
    const { bytes, closed } = await sendThenHalfClose(l.port, GET("/1") + "GET /2 HTTP/1.1\r\nHo");
    expect(closed).toBe(true);
    const r = takeResponse(bytes);
    expect(r).not.toBeNull();
    expect(r!.res.status).toBe(200);
    expect(r!.rest.length).toBe(0);
    expect(b.requests.length).toBe(1);
  });

  test("a backend answering Connection: close is not reused; the client connection goes on", async () => {
    const b = rec("b", () => "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nz");
    const l = latch(one(b.port));
    const c = await client(l.port);
    c.write(GET("/1"));
    const r = await c.response();
    expect(r.get("connection")).toBeUndefined();
    c.write(GET("/2"));
    expect((await c.response()).body.toString()).toBe("z");
    expect(b.rec.conns.length).toBe(2);
  });
});

describe("redirect listener", () => {
  test('redirect = "https" answers 301 to https://host/path', async () => {
    const l = latch(`
[[listen]]
name = "redir"
bind = "127.0.0.1:0"
redirect = "https"
`);
    const c = await client(l.port);
    c.write(GET("/some/path?q=1&r=2", "www.example.com:8080"));
    const r = await c.response();
    expect(r.status).toBe(301);
    expect(r.get("location")).toBe("https://www.example.com/some/path?q=1&r=2");
    expect(r.body.length).toBe(0);
    // keep-alive works on the redirect listener too
    c.write(GET("/", "example.com"));
    expect((await c.response()).get("location")).toBe("https://example.com/");
    c.write(GET("/bye", "example.com", "Connection: close\r\n"));
    const r3 = await c.response();
    expect(r3.get("connection")).toBe("close");
    expect(await c.waitClosed()).toBe(true);
  });
});

describe("error statuses", () => {
  test("a backend refusing connections: 502 with a short body and a log line that says why", async () => {
    const dead = await freePort();
    const l = latch(one(dead));
    const from = reported.length;
    const r = await request(l.port, GET("/"));
    expect(r.status).toBe(502);
    expect(r.get("connection")).toBe("close");
    expect(r.body.length).toBeGreaterThan(0);
    expect(r.body.length).toBeLessThan(200);
    const lines = reported.slice(from).filter((x) => x.includes("502"));
    expect(lines.length).toBe(1);
    expect(lines[0]).toContain(`127.0.0.1:${dead}`);
    expect(lines[0]).toMatch(/connect.*(ECONNREFUSED|refused)/i);
  });

  test("all servers disabled: 503", async () => {
    const b = rec("b");
    const l = latch(
      simpleConfig({ servers: [{ id: "s1", port: b.port, extra: "disabled = true" }, { id: "s2", port: b.port, extra: "disabled = true" }] }),
    );
    const from = reported.length;
    const r = await request(l.port, GET("/"));
    expect(r.status).toBe(503);
    expect(r.body.length).toBeGreaterThan(0);
    expect(r.body.length).toBeLessThan(200);
    expect(b.rec.conns.length).toBe(0);
    expect(reported.slice(from).some((x) => x.includes("503") && x.includes("no server available"))).toBe(true);
  });

  test("a backend that closes without answering: 502", async () => {
    const b = scripted((_req, sock) => {
      sock.end();
      return null;
    });
    const l = latch(one(b.port));
    const from = reported.length;
    const r = await request(l.port, GET("/"));
    expect(r.status).toBe(502);
    expect(reported.slice(from).some((x) => x.includes("502") && x.includes("without a response"))).toBe(true);
  });

  test("a backend that answers garbage: 502", async () => {
    const b = rec("b", () => "HELLO THERE\r\n\r\n");
    const l = latch(one(b.port));
    const r = await request(l.port, GET("/"));
    expect(r.status).toBe(502);
  });
});
