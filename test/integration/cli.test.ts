// The command line as an operator uses it, in subprocesses: version, check (exit codes and
// file:line messages), run + SIGTERM, the demo, and the compiled single binary.

import { afterEach, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync, existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BUN, ROOT, freePort, simpleConfig } from "../helpers/latch.ts";
import { RawClient, recordingBackend, request } from "../helpers/raw.ts";
import { scriptedBackend, ok } from "../helpers/backends.ts";
import { CLI, latchCli, run, start, type Started } from "../helpers/proc.ts";
import pkg from "../../package.json" with { type: "json" };

const EXAMPLE = join(ROOT, "examples/latch.toml");

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

function tmpFile(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), "latch-cli-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

function backend(name = "b1") {
  const b = recordingBackend(name);
  cleanups.push(() => b.stop());
  return b;
}

async function startProc(cmd: string[]): Promise<Started> {
  const p = await start(cmd, "listening");
  cleanups.push(() => p.stop("SIGKILL"));
  return p;
}

describe("latch version / check", () => {
  test("version prints the package version and exits 0", async () => {
    const r = await latchCli("version");
    expect(r.code).toBe(0);
    expect(r.stdout).toStartWith(`latch ${pkg.version}`);
    expect(r.stdout).toMatch(/^latch \d+\.\d+\.\d+/);
  });

  test("check examples/latch.toml exits 0", async () => {
    const r = await latchCli("check", EXAMPLE);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("ok");
  });

  test("check of a config with an unknown key exits 1 with file:line and the key path", async () => {
    const f = tmpFile(
      "bad.toml",
      [
        "[[listen]]", //                       1
        'bind = "127.0.0.1:0"', //             2
        "", //                                 3
        "  [[listen.route]]", //               4
        '  backend = "app"', //                5
        "  preserv_host = true", //            6
        "", //                                 7
        "[backend.app]", //                    8
        "  [[backend.app.server]]", //         9
        '  id = "a"', //                       10
        '  address = "127.0.0.1:9001"', //     11
        "  wieght = 2", //                     12
        "",
      ].join("\n"),
    );
    const r = await latchCli("check", f);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(`${f}:6: listen[0].route[0].preserv_host: unknown key`);
    expect(r.stderr).toContain(`${f}:12: backend.app.server[0].wieght: unknown key`);
  });

  test("check of a missing file exits 1; no arguments prints the usage with exit 2", async () => {
    const r = await latchCli("check", "/nonexistent/latch.toml");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("/nonexistent/latch.toml");
    const u = await latchCli();
    expect(u.code).toBe(2);
    expect(u.stderr).toContain("usage");
  });
});

describe("latch run", () => {
  test("serves requests, and SIGTERM exits 0", async () => {
    const b = backend();
    const port = await freePort();
    const f = tmpFile("latch.toml", simpleConfig({ port, servers: [{ id: "s1", port: b.port }] }));
    const p = await startProc([BUN, CLI, "run", f]);
    expect(p.output()).toContain(`127.0.0.1:${port}`);
    const r = await request(port, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe("b1");
    expect(await p.stop("SIGTERM")).toBe(0);
  });

  test("SIGTERM lets a request in flight finish", async () => {
    const b = scriptedBackend(async () => {
      await Bun.sleep(400);
      return ok("late but whole");
    });
    cleanups.push(() => b.stop());
    const port = await freePort();
    const f = tmpFile("latch.toml", simpleConfig({ port, servers: [{ id: "s1", port: b.port }] }));
    const p = await startProc([BUN, CLI, "run", f]);
    const c = await RawClient.connect(port);
    cleanups.push(() => c.close());
    c.write("GET /slow HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    while (b.requests.length === 0) await Bun.sleep(10);
    const exit = p.stop("SIGTERM");
    const r = await c.response();
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe("late but whole");
    expect(await exit).toBe(0);
  });

  test("SIGTERM closes idle keep-alive clients at once and answers a keep-alive request in flight with Connection: close", async () => {
    const b = scriptedBackend(async () => {
      await Bun.sleep(300);
      return ok("in flight");
    });
    cleanups.push(() => b.stop());
    const port = await freePort();
    const f = tmpFile("latch.toml", simpleConfig({ port, servers: [{ id: "s1", port: b.port }] }));
    const p = await startProc([BUN, CLI, "run", f]);
    const idle = await RawClient.connect(port);
    const busy = await RawClient.connect(port);
    cleanups.push(() => idle.close(), () => busy.close());
    busy.write("GET /slow HTTP/1.1\r\nHost: h\r\n\r\n"); // keep-alive by default
    while (b.requests.length === 0) await Bun.sleep(10);
    const t0 = Date.now();
    const exit = p.stop("SIGTERM");
    expect(await idle.waitClosed(2000)).toBe(true);
    const r = await busy.response();
    expect(r.body.toString()).toBe("in flight");
    expect(r.get("connection")).toBe("close");
    expect(await busy.waitClosed(2000)).toBe(true);
    expect(await exit).toBe(0);
    expect(Date.now() - t0).toBeLessThan(4000); // not the 5 s grace period
  });

  test("a config that does not load: exit 1 with the reason", async () => {
    const f = tmpFile("latch.toml", "[[listen]]\nbind = 12\n");
    const r = await run([BUN, CLI, "run", f], { ms: 10_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${f}:2: listen[0].bind`);
  });

  test("run --demo <port> answers a curl-style request through the demo backends with a Set-Cookie", async () => {
    const port = await freePort();
    const p = await startProc([BUN, CLI, "run", "--demo", String(port)]);
    const curl = (extra = "") =>
      request(port, `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n${extra}\r\n`);
    const r = await curl();
    expect(r.status).toBe(200);
    const cookie = r.get("set-cookie");
    expect(cookie).toMatch(/^SRV=ap0[12]; /);
    const server = /^SRV=(ap0[12])/.exec(cookie!)![1];
    expect(r.body.toString()).toContain(`Hello from ${server}`);
    expect(r.get("x-served-by")).toBe(server);
    // a persisted client always reaches its server, which never sees the SRV cookie (indirect)
    for (let i = 0; i < 3; i++) {
      const again = await curl("Cookie: SRV=ap02\r\n");
      expect(again.body.toString()).toContain("Hello from ap02");
      expect(again.body.toString()).toContain("cookies seen by the backend: (none)");
      expect(again.get("set-cookie")).toBeUndefined();
    }
    expect(await p.stop("SIGTERM")).toBe(0);
  });
});

describe("compiled binary (npm run build)", () => {
  const BIN = join(ROOT, "dist/latch");

  beforeAll(async () => {
    const r = await run(["npm", "run", "build"], { ms: 120_000 });
    if (r.code !== 0) throw new Error(`npm run build failed:\n${r.stdout}\n${r.stderr}`);
  }, 120_000);

  test("dist/latch exists, prints its version and checks examples/latch.toml", async () => {
    expect(existsSync(BIN)).toBe(true);
    const v = await run([BIN, "version"]);
    expect(v.code).toBe(0);
    expect(v.stdout).toStartWith(`latch ${pkg.version}`);
    const c = await run([BIN, "check", EXAMPLE], { cwd: tmpdir() });
    expect(c.code).toBe(0);
    expect(c.stdout).toContain("ok");
  });

  test("dist/latch run serves a request and exits 0 on SIGTERM", async () => {
    const b = backend("from-binary");
    const port = await freePort();
    const f = tmpFile("latch.toml", simpleConfig({ port, servers: [{ id: "s1", port: b.port }] }));
    const p = await startProc([BIN, "run", f]);
    const r = await request(port, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe("from-binary");
    expect(b.requests[0].head).toContain("\r\nX-Forwarded-For: 127.0.0.1\r\n");
    expect(await p.stop("SIGTERM")).toBe(0);
  });
});
