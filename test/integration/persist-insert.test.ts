// Persistence mode `insert` (HAProxy `cookie NAME insert` and its options), over real
// sockets: a real Latch in front of recording backends, byte-level assertions on what the
// client and the backend each see.

import { afterEach, describe, expect, test } from "bun:test";
import { startLatch, simpleConfig, type Running } from "../helpers/latch.ts";
import { recordingBackend, request } from "../helpers/raw.ts";
import { createHmac } from "node:crypto";

type Backend = ReturnType<typeof recordingBackend>;
let running: Running | null = null;
let backends: Backend[] = [];

afterEach(async () => {
  await running?.stop();
  running = null;
  backends.forEach((b) => b.stop());
  backends = [];
});

function setup(persist: string, opts: { backendExtra?: string; serverExtra?: string[]; respond?: Parameters<typeof recordingBackend>[1] } = {}) {
  backends = ["ap01", "ap02"].map((n) => recordingBackend(n, opts.respond));
  running = startLatch(
    simpleConfig({
      servers: backends.map((b, i) => ({ id: i === 0 ? "ap01" : "ap02", port: b.port, extra: opts.serverExtra?.[i] })),
      persist,
      backendExtra: opts.backendExtra,
    }),
  );
  return running.port;
}

const get = (port: number, cookie?: string, extra = "") =>
  request(port, `GET /page HTTP/1.1\r\nHost: shop.example\r\n${cookie !== undefined ? `Cookie: ${cookie}\r\n` : ""}${extra}\r\n`);

const BASIC = `mode = "insert"\ncookie = "SRV"\nindirect = true\nnocache = true`;

describe("insert: the cookie binds a client to its server", () => {
  test("a new client gets Set-Cookie with the server id; the cookie routes later requests there", async () => {
    const port = setup(BASIC);
    const first = await get(port);
    const server = first.get("x-server")!;
    expect(first.all("set-cookie")).toEqual([`SRV=${server}; Path=/`]);
    for (let i = 0; i < 6; i++) {
      const r = await get(port, `SRV=${server}`);
      expect(r.get("x-server")).toBe(server);
      expect(r.get("set-cookie")).toBeUndefined(); // valid cookie: nothing to insert
    }
    // without the cookie, roundrobin alternates
    const other = await get(port);
    expect(other.get("x-server")).not.toBe(server);
  });

  test("indirect strips SRV from the request and keeps the other cookies well-formed", async () => {
    const port = setup(BASIC);
    const cases: [string, string | null][] = [
      ["SRV=ap02", null],
      ["a=1; SRV=ap02; b=2", "a=1; b=2"],
      ["SRV=ap02; a=1", "a=1"],
      ["a=1; SRV=ap02", "a=1"],
      ["a=1;SRV=ap02;b=2", "a=1;b=2"],
    ];
    for (const [sent, seen] of cases) {
      const r = await get(port, sent);
      expect(r.get("x-server")).toBe("ap02");
      const head = backends[1].requests.at(-1)!.head;
      const cookieLines = head.split("\r\n").filter((l) => /^cookie:/i.test(l));
      expect(cookieLines).toEqual(seen === null ? [] : [`Cookie: ${seen}`]);
    }
  });

  test("without indirect the backend sees the persistence cookie", async () => {
    const port = setup(`mode = "insert"\ncookie = "SRV"`);
    await get(port, "a=1; SRV=ap01");
    expect(backends[0].requests.at(-1)!.head).toContain("Cookie: a=1; SRV=ap01\r\n");
  });

  test("the cookie wins over the algorithm, and a second Cookie header line is searched too", async () => {
    const port = setup(BASIC);
    for (let i = 0; i < 4; i++) {
      const r = await request(port, `GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: SRV=ap01\r\n\r\n`);
      expect(r.get("x-server")).toBe("ap01");
    }
  });
});

describe("insert options", () => {
  test("nocache adds Cache-Control: private only to responses carrying the inserted cookie", async () => {
    const port = setup(BASIC);
    const fresh = await get(port);
    expect(fresh.get("cache-control")).toBe("private");
    const persisted = await get(port, `SRV=${fresh.get("x-server")}`);
    expect(persisted.get("cache-control")).toBeUndefined();
  });

  test("nocache leaves a response already marked no-store alone", async () => {
    const port = setup(BASIC, {
      respond: () => "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 2\r\n\r\nok",
    });
    const r = await get(port);
    expect(r.all("cache-control")).toEqual(["no-store"]);
    expect(r.get("set-cookie")).toStartWith("SRV=");
  });

  test("postonly inserts only on responses to POST", async () => {
    const port = setup(`${BASIC}\npostonly = true`);
    expect((await get(port)).get("set-cookie")).toBeUndefined();
    const post = await request(port, "POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\na=b");
    expect(post.get("set-cookie")).toMatch(/^SRV=ap0[12]; Path=\/$/);
  });

  test("without preserve the backend's own SRV cookie is replaced by Latch's", async () => {
    const port = setup(BASIC, {
      respond: () => "HTTP/1.1 200 OK\r\nSet-Cookie: SRV=mine\r\nSet-Cookie: other=1\r\nContent-Length: 2\r\n\r\nok",
    });
    const r = await get(port);
    expect(r.all("set-cookie").sort()).toEqual(["SRV=ap01; Path=/", "other=1"].sort());
  });

  test("preserve leaves the backend's SRV cookie (e.g. a logout deleting it) and inserts nothing", async () => {
    const port = setup(`${BASIC}\npreserve = true`, {
      respond: () => "HTTP/1.1 200 OK\r\nSet-Cookie: SRV=; Max-Age=0\r\nContent-Length: 2\r\n\r\nok",
    });
    const r = await get(port);
    expect(r.all("set-cookie")).toEqual(["SRV=; Max-Age=0"]);
  });

  test("cookie attributes: path, domain, httponly, secure, samesite", async () => {
    const port = setup(`mode = "insert"\ncookie = "SRV"\npath = "/shop"\ndomain = "example.com"\nhttponly = true\nsecure = true\nsamesite = "Strict"`);
    const r = await get(port);
    expect(r.get("set-cookie")).toBe("SRV=ap01; Path=/shop; Domain=example.com; HttpOnly; Secure; SameSite=Strict");
  });

  test('samesite = "None" forces Secure', async () => {
    const port = setup(`mode = "insert"\ncookie = "SRV"\nsamesite = "None"`);
    const r = await get(port);
    expect(r.get("set-cookie")).toBe("SRV=ap01; Path=/; Secure; SameSite=None");
  });

  test("a server `cookie` value replaces the id in the cookie", async () => {
    const port = setup(BASIC, { serverExtra: ['cookie = "s1"', 'cookie = "s2"'] });
    const r = await get(port);
    expect(r.get("set-cookie")).toBe("SRV=s1; Path=/");
    expect((await get(port, "SRV=s2")).get("x-server")).toBe("ap02");
    expect((await get(port, "SRV=ap02")).get("set-cookie")).toMatch(/^SRV=s[12];/); // the id is not a valid value
  });
});

describe("maxidle / maxlife", () => {
  const now = () => Math.floor(Date.now() / 1000);
  const b36 = (n: number) => n.toString(36);
  const DATED = `${BASIC}\nmaxidle = "30m"\nmaxlife = "8h"`;

  test("the value carries last-seen and first-seen dates", async () => {
    const port = setup(DATED);
    const r = await get(port);
    const m = /^SRV=(ap0[12])\|([0-9a-z]+)\|([0-9a-z]+); Path=\/$/.exec(r.get("set-cookie")!);
    expect(m).not.toBeNull();
    expect(Math.abs(parseInt(m![2], 36) - now())).toBeLessThan(5);
    expect(m![3]).toBe(m![2]);
  });

  test("a fresh dated cookie routes and is not re-issued", async () => {
    const port = setup(DATED);
    const r = await get(port, `SRV=ap02|${b36(now())}|${b36(now() - 60)}`);
    expect(r.get("x-server")).toBe("ap02");
    expect(r.get("set-cookie")).toBeUndefined();
  });

  test("past maxidle the cookie is absent: balanced and replaced", async () => {
    const port = setup(DATED);
    const old = now() - 31 * 60;
    // roundrobin starts at ap01, so a respected cookie for ap02 would show as ap02
    const r = await get(port, `SRV=ap02|${b36(old)}|${b36(old)}`);
    expect(r.get("x-server")).toBe("ap01");
    expect(r.get("set-cookie")).toMatch(/^SRV=ap01\|/);
  });

  test("past maxlife the cookie is absent even if recently seen", async () => {
    const port = setup(DATED);
    const r = await get(port, `SRV=ap02|${b36(now())}|${b36(now() - 9 * 3600)}`);
    expect(r.get("x-server")).toBe("ap01");
  });

  test("dates more than a day in the future are ignored", async () => {
    const port = setup(DATED);
    const future = now() + 2 * 86400;
    const r = await get(port, `SRV=ap02|${b36(future)}|${b36(future)}`);
    expect(r.get("x-server")).toBe("ap01");
    expect(r.get("set-cookie")).toMatch(/^SRV=ap01\|/);
  });

  test("a cookie half way to maxidle gets its last-seen date renewed, first-seen kept", async () => {
    const port = setup(DATED);
    const last = now() - 15 * 60, first = now() - 3600;
    const r = await get(port, `SRV=ap02|${b36(last)}|${b36(first)}`);
    expect(r.get("x-server")).toBe("ap02");
    const m = /^SRV=ap02\|([0-9a-z]+)\|([0-9a-z]+);/.exec(r.get("set-cookie")!);
    expect(Math.abs(parseInt(m![1], 36) - now())).toBeLessThan(5);
    expect(parseInt(m![2], 36)).toBe(first);
  });

  test("garbage dates are absent, not an error", async () => {
    const port = setup(DATED);
    for (const v of ["ap02|zz!|1", "ap02||", "ap02|-5|-5", "ap02|1"]) {
      const r = await get(port, `SRV=${v}`);
      expect(r.status).toBe(200);
      expect(r.get("set-cookie")).toMatch(/^SRV=ap0[12]\|/);
    }
  });
});

describe("dynamic_key", () => {
  const key = "a secret that is long enough";
  const value = (id: string) => createHmac("sha256", key).update(id).digest("base64url").slice(0, 16);

  test("the cookie is a keyed hash: no server name leaks, and it routes", async () => {
    const port = setup(`${BASIC}\ndynamic_key = "${key}"`);
    const r = await get(port);
    const v = /^SRV=([^;]+);/.exec(r.get("set-cookie")!)![1];
    expect(v).not.toContain("ap0");
    expect(v).toBe(value(r.get("x-server")!));
    expect((await get(port, `SRV=${value("ap02")}`)).get("x-server")).toBe("ap02");
  });

  test("a forged or plain-id value is treated as absent", async () => {
    const port = setup(`${BASIC}\ndynamic_key = "${key}"`);
    for (const forged of ["ap02", "AAAAAAAAAAAAAAAA", value("ap02").slice(0, 15) + "x"]) {
      const r = await get(port, `SRV=${forged}`);
      expect(r.status).toBe(200);
      expect(r.get("set-cookie")).toMatch(/^SRV=/); // re-issued
    }
  });
});

describe("failover", () => {
  test("redispatch: a cookie for a down server goes elsewhere and is rewritten", async () => {
    const port = setup(BASIC);
    running!.proxy.config.backends.get("app")!.servers[1].state.up = false;
    const r = await get(port, "SRV=ap02");
    expect(r.get("x-server")).toBe("ap01");
    expect(r.get("set-cookie")).toBe("SRV=ap01; Path=/");
  });

  test("redispatch: a cookie naming an unknown server is absent", async () => {
    const port = setup(BASIC);
    const r = await get(port, "SRV=nosuch");
    expect(r.status).toBe(200);
    expect(r.get("set-cookie")).toMatch(/^SRV=ap0[12]/);
  });

  test("strict (nofailover): a cookie for a down server gets 503, no Set-Cookie", async () => {
    const port = setup(BASIC, { backendExtra: 'failover = "strict"' });
    running!.proxy.config.backends.get("app")!.servers[1].state.up = false;
    const r = await get(port, "SRV=ap02");
    expect(r.status).toBe(503);
    expect(r.get("set-cookie")).toBeUndefined();
    expect(backends[1].requests.length + backends[0].requests.length).toBe(0);
    // a new client is still served
    expect((await get(port)).status).toBe(200);
  });

  test("strict: a cookie naming an unknown server gets 503", async () => {
    const port = setup(BASIC, { backendExtra: 'failover = "strict"' });
    expect((await get(port, "SRV=nosuch")).status).toBe(503);
  });

  test("all servers down: 503 and no Set-Cookie", async () => {
    const port = setup(BASIC);
    for (const s of running!.proxy.config.backends.get("app")!.servers) s.state.up = false;
    const r = await get(port);
    expect(r.status).toBe(503);
    expect(r.get("set-cookie")).toBeUndefined();
  });

  test("a draining server keeps its persisted clients and takes no new ones", async () => {
    const port = setup(BASIC, { serverExtra: ["", "drain = true"] });
    for (let i = 0; i < 4; i++) expect((await get(port)).get("x-server")).toBe("ap01");
    expect((await get(port, "SRV=ap02")).get("x-server")).toBe("ap02");
  });
});

describe("ignore_persist / force_persist", () => {
  const IGNORE = `\n[[backend.app.ignore_persist]]\nheader = "User-Agent"\ncontains = "ApacheBench"\n`;

  test("an ignored request neither uses nor creates persistence", async () => {
    const port = setup(BASIC + IGNORE);
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const r = await get(port, "SRV=ap02", "User-Agent: ApacheBench/2.3\r\n");
      seen.add(r.get("x-server")!);
      expect(r.get("set-cookie")).toBeUndefined();
    }
    expect(seen.size).toBe(2); // balanced, not pinned to ap02
    // other clients still persist
    expect((await get(port, "SRV=ap02", "User-Agent: Mozilla/5.0\r\n")).get("x-server")).toBe("ap02");
  });

  test("ignore_persist by path prefix and by source CIDR", async () => {
    const port = setup(`${BASIC}\n[[backend.app.ignore_persist]]\npath = "/health"\n[[backend.app.ignore_persist]]\nsrc = "10.0.0.0/8"\n`);
    const r = await request(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    expect(r.get("set-cookie")).toBeUndefined();
    // 127.0.0.1 is not in 10/8: normal persistence applies
    expect((await get(port)).get("set-cookie")).toMatch(/^SRV=/);
  });

  test("force_persist sends a persisted client to its server even when it is disabled", async () => {
    const port = setup(`${BASIC}\n[[backend.app.force_persist]]\nsrc = "127.0.0.0/8"\n`, { serverExtra: ["", "disabled = true"] });
    expect((await get(port, "SRV=ap02")).get("x-server")).toBe("ap02");
    expect((await get(port)).get("x-server")).toBe("ap01"); // no new clients for a disabled server
  });
});
