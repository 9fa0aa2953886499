// global.workers > 1 (src/supervisor.ts): a supervisor process and N workers sharing the
// listeners with reusePort, over real sockets and real processes. Which worker answered a
// connection is read from the kernel, not from the proxy: the accepted socket's inode in
// /proc/net/tcp, found among each worker's /proc/<pid>/fd links.

import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Socket } from "bun";
import { BUN, ROOT, freePort, simpleConfig } from "../helpers/latch.ts";
import { CLI, run, start, type Started } from "../helpers/proc.ts";
import { takeResponse, type RawResponse } from "../helpers/raw.ts";
import { ok, scriptedBackend, until, type ScriptedBackend } from "../helpers/backends.ts";
import { RestartBudget, isCompiled, workerCommand } from "../../src/supervisor.ts";

// ---------------------------------------------------------------------------------------------
// helpers

/** A client connection that knows its own port (to find which process accepted it). */
class Conn {
  buf: Buffer<ArrayBufferLike> = Buffer.alloc(0);
  closed = false;
  private constructor(private sock: Socket<undefined>) {}

  static async open(port: number): Promise<Conn> {
    let c!: Conn;
    const sock = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        data(_s, d) {
          c.buf = Buffer.concat([c.buf, d]);
        },
        close() {
          c.closed = true;
        },
        end() {
          c.closed = true;
        },
        error() {
          c.closed = true;
        },
      },
    });
    c = new Conn(sock);
    return c;
  }

  get localPort(): number {
    return this.sock.localPort;
  }

  send(raw: string): void {
    this.sock.write(raw);
  }

  async response(ms = 3000): Promise<RawResponse> {
    const end = Date.now() + ms;
    for (;;) {
      const got = takeResponse(this.buf, false, this.closed);
      if (got !== null) {
        this.buf = got.rest;
        return got.res;
      }
      if (this.closed) throw new Error(`closed without a response: ${JSON.stringify(this.buf.toString("latin1"))}`);
      if (Date.now() > end) throw new Error("no response in time");
      await Bun.sleep(5);
    }
  }

  close(): void {
    this.sock.end();
  }
}

const GET = "GET / HTTP/1.1\r\nHost: w\r\n\r\n";

/** TCP sockets from /proc/net/tcp: local and remote port, state (0A listen, 01 established), inode. */
function tcpSockets(): { lport: number; rport: number; st: string; inode: string }[] {
  const out: { lport: number; rport: number; st: string; inode: string }[] = [];
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(f, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const p = line.trim().split(/\s+/);
      if (p.length < 10) continue;
      out.push({ lport: parseInt(p[1]!.split(":")[1]!, 16), rport: parseInt(p[2]!.split(":")[1]!, 16), st: p[3]!, inode: p[9]! });
    }
  }
  return out;
}

/** The socket inodes a process holds open. */
function socketInodes(pid: number): Set<string> {
  const out = new Set<string>();
  let fds: string[] = [];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) out.add(m[1]!);
    } catch {}
  }
  return out;
}

/**
 * Which of `pids` holds the proxy side of each connection from the given client ports to
 * `port` (null: none of them). /proc/net/tcp is read once: on a busy machine it is large.
 */
function ownersOf(port: number, clientPorts: number[], pids: number[]): (number | null)[] {
  const inodeOf = new Map<number, string>();
  for (const t of tcpSockets()) if (t.lport === port && t.st === "01") inodeOf.set(t.rport, t.inode);
  const held = pids.map((pid) => ({ pid, inodes: socketInodes(pid) }));
  return clientPorts.map((cp) => {
    const inode = inodeOf.get(cp);
    return inode === undefined ? null : (held.find((h) => h.inodes.has(inode))?.pid ?? null);
  });
}

/** Processes holding a listening socket on `port`. */
function listenersOf(port: number, pids: number[]): number[] {
  const inodes = tcpSockets().filter((t) => t.lport === port && t.st === "0A").map((t) => t.inode);
  return pids.filter((pid) => inodes.some((i) => socketInodes(pid).has(i)));
}

/** Gone: no such process, or a zombie nobody reaped yet. */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return true;
  }
}

/** Latest pid of each worker slot, from the supervisor's "worker N started (pid P)" lines. */
function workerPids(out: string): Map<number, number> {
  const m = new Map<number, number>();
  for (const x of out.matchAll(/supervisor: worker (\d+) started \(pid (\d+)\)/g)) m.set(Number(x[1]), Number(x[2]));
  return m;
}

function count(out: string, needle: string | RegExp): number {
  return typeof needle === "string" ? out.split(needle).length - 1 : [...out.matchAll(new RegExp(needle, "g"))].length;
}

/** `n` connections open at once, one request each: who answered, and the bodies. */
async function spread(port: number, pids: number[], n = 24): Promise<{ owners: (number | null)[]; bodies: string[] }> {
  const conns = await Promise.all(Array.from({ length: n }, () => Conn.open(port)));
  for (const c of conns) c.send(GET);
  const res = await Promise.all(conns.map((c) => c.response()));
  const owners = ownersOf(port, conns.map((c) => c.localPort), pids);
  conns.forEach((c) => c.close());
  for (const r of res) expect(r.status).toBe(200);
  return { owners, bodies: res.map((r) => r.body.toString()) };
}

const cleanup: (() => void | Promise<unknown>)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function backend(name: string): ScriptedBackend {
  const b = scriptedBackend(() => ok(name));
  cleanup.push(() => b.stop());
  return b;
}

function configFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), "latch-workers-"));
  const file = join(dir, "latch.toml");
  writeFileSync(file, text);
  return file;
}

/** Starts `cmd ... run file` and waits for "N workers ready". */
async function supervisor(file: string, cmd: string[] = [BUN, CLI]): Promise<Started & { pids(): Map<number, number> }> {
  const p = await start([...cmd, "run", file], "workers ready", { ms: 20_000 });
  cleanup.push(async () => {
    if (p.proc.exitCode === null) await p.stop("SIGKILL", 2000);
    for (const pid of workerPids(p.output()).values()) if (!gone(pid)) process.kill(pid, "SIGKILL");
  });
  return Object.assign(p, { pids: () => workerPids(p.output()) });
}

// ---------------------------------------------------------------------------------------------

describe("restart budget and re-exec command (unit)", () => {
  test("backoff doubles; the 6th crash within 10 s gives up; the window slides", () => {
    const b = new RestartBudget();
    expect([0, 1, 2, 3, 4].map((i) => b.next(1000 + i))).toEqual([100, 200, 400, 800, 1600]);
    expect(b.next(1010)).toBe(-1);
    // 10 s after the first crash it has left the window: one restart allowed again
    expect(b.next(11_000)).toBe(1600);
    expect(b.next(11_000)).toBe(-1);
    b.reset();
    expect(b.next(11_001)).toBe(100);
  });

  test("checkout: bun <flags> <script> run <abs config>; compiled: <binary> run <abs config>", () => {
    expect(isCompiled("/work/main/src/cli.ts")).toBe(false);
    expect(isCompiled("/$bunfs/root/latch")).toBe(true);
    expect(isCompiled("B:\\~BUN\\root\\latch.exe")).toBe(true);
    expect(workerCommand("x.toml", "/repo/src/cli.ts")).toEqual([process.execPath, ...process.execArgv, "/repo/src/cli.ts", "run", join(process.cwd(), "x.toml")]);
    expect(workerCommand("/etc/latch.toml", "/$bunfs/root/latch")).toEqual([process.execPath, "run", "/etc/latch.toml"]);
  });
});

describe("workers = 2", () => {
  test("two worker processes share the port (reusePort) and both serve; the supervisor does not listen", async () => {
    const b = backend("A");
    const port = await freePort();
    const sup = await supervisor(configFile(simpleConfig({ port, global: "workers = 2", servers: [{ id: "a", port: b.port }] })));
    const pids = [...sup.pids().values()];
    expect(pids).toHaveLength(2);
    expect(new Set(pids).size).toBe(2);
    expect(pids).not.toContain(sup.pid);
    for (const pid of pids) expect(gone(pid)).toBe(false);
    expect(sup.output()).toContain("worker 1: listening web on http://127.0.0.1:");
    expect(sup.output()).toContain("worker 2: listening web on http://127.0.0.1:");

    expect(listenersOf(port, [sup.pid, ...pids]).sort()).toEqual([...pids].sort());

    // 24 connections at once: the kernel hashes each to one worker; all 24 on one would be 2^-23
    const { owners, bodies } = await spread(port, pids);
    expect(bodies.every((x) => x === "A")).toBe(true);
    expect(owners.every((o) => o !== null)).toBe(true);
    expect(new Set(owners)).toEqual(new Set(pids));

    expect(await sup.stop("SIGTERM")).toBe(0);
  }, 30_000);

  test("a worker killed with SIGKILL is restarted; new connections keep succeeding", async () => {
    const b = backend("A");
    const port = await freePort();
    const sup = await supervisor(configFile(simpleConfig({ port, global: "workers = 2", servers: [{ id: "a", port: b.port }] })));
    const before = sup.pids();
    const victim = before.get(1)!;

    // one request after another, each on a new connection, during the crash and the restart
    const results: { ok: boolean; at: number }[] = [];
    let running = true;
    const loop = (async () => {
      while (running) {
        let good = false;
        try {
          const c = await Conn.open(port);
          c.send(GET);
          const r = await c.response(2000);
          c.close();
          good = r.status === 200 && r.body.toString() === "A";
        } catch {}
        results.push({ ok: good, at: Date.now() });
      }
    })();

    await Bun.sleep(200);
    const killedAt = Date.now();
    process.kill(victim, "SIGKILL");
    await until(() => sup.output().includes("supervisor: worker 1 ready (pid"), 10_000, "worker 1 restarted");
    const readyAt = Date.now();
    await Bun.sleep(300);
    running = false;
    await loop;

    expect(sup.output()).toMatch(new RegExp(`worker 1 \\(pid ${victim}\\) exited unexpectedly \\(signal SIGKILL\\): restarting in 100 ms`));
    const fresh = sup.pids().get(1)!;
    expect(fresh).not.toBe(victim);
    expect(sup.pids().get(2)).toBe(before.get(2));
    expect(gone(victim)).toBe(true);

    const failed = results.filter((r) => !r.ok);
    // only a connection the dying worker had accepted (or had in its queue) may fail
    expect(failed.length).toBeLessThanOrEqual(2);
    expect(results.filter((r) => r.at > readyAt).every((r) => r.ok)).toBe(true);
    expect(results.filter((r) => r.at > killedAt).length).toBeGreaterThan(10);

    // the restarted worker takes connections again
    const { owners } = await spread(port, [fresh, before.get(2)!]);
    expect(new Set(owners)).toEqual(new Set([fresh, before.get(2)!]));
    expect(await sup.stop("SIGTERM")).toBe(0);
  }, 30_000);

  test("crash loop: 6 crashes of a slot in 10 s give it up, SIGHUP retries it; no worker left -> exit 1", async () => {
    const b = backend("A");
    const port = await freePort();
    const sup = await supervisor(configFile(simpleConfig({ port, global: "workers = 2", servers: [{ id: "a", port: b.port }] })));
    const ready = (n: number): number => count(sup.output(), `supervisor: worker ${n} ready (pid`);

    const crash = async (slots: number[], times: number): Promise<void> => {
      for (let i = 0; i < times; i++) {
        const seen = slots.map(ready);
        for (const n of slots) process.kill(sup.pids().get(n)!, "SIGKILL");
        if (i < times - 1) await until(() => slots.every((n, k) => ready(n) > seen[k]!), 10_000, `restart ${i + 1}`);
      }
    };

    await crash([2], 6);
    await until(() => sup.output().includes("worker 2 ("), 5000);
    await until(() => sup.output().includes("giving up on it (1 of 2 workers left; SIGHUP retries it)"), 5000, "give up");
    // worker 1 carries on alone
    const { owners } = await spread(port, [sup.pids().get(1)!], 8);
    expect(owners.every((o) => o === sup.pids().get(1))).toBe(true);

    sup.proc.kill("SIGHUP");
    await until(() => sup.output().includes("worker 2: trying again after the reload"), 5000);
    await until(() => ready(2) === 6, 5000, "worker 2 back");

    await crash([1, 2], 6);
    expect(await sup.proc.exited).toBe(1);
    expect(sup.output()).toContain("no worker left: exiting");
  }, 40_000);

  test("SIGHUP: the supervisor checks the file, every worker reloads; a broken file reaches no worker", async () => {
    const a = backend("A");
    const b = backend("B");
    const port = await freePort();
    const file = configFile(simpleConfig({ port, global: "workers = 2", servers: [{ id: "a", port: a.port }] }));
    const sup = await supervisor(file);
    const pids = [...sup.pids().values()];
    expect((await spread(port, pids, 8)).bodies).toEqual(Array(8).fill("A"));

    writeFileSync(file, simpleConfig({ port, global: "workers = 2", servers: [{ id: "b", port: b.port }] }));
    sup.proc.kill("SIGHUP");
    await until(() => count(sup.output(), ": reloaded ") === 2, 5000, "both workers reloaded");
    expect(sup.output()).toContain("supervisor: reload: ");
    expect(sup.output()).toContain("is valid; SIGHUP to 2 workers");
    const after = await spread(port, pids);
    expect(after.bodies).toEqual(Array(24).fill("B"));
    expect(new Set(after.owners)).toEqual(new Set(pids)); // both workers answer B

    writeFileSync(file, "[[listen]]\nbind = 'nowhere'\n");
    sup.proc.kill("SIGHUP");
    await until(() => sup.output().includes("supervisor: reload failed, keeping the running configuration (workers not signalled)"), 5000);
    await Bun.sleep(200);
    expect(count(sup.output(), ": reloaded ")).toBe(2);
    expect(count(sup.output(), "reload failed")).toBe(1); // said once, by the supervisor
    expect((await spread(port, pids, 8)).bodies).toEqual(Array(8).fill("B"));
    expect(sup.pids()).toEqual(new Map([[1, pids[0]!], [2, pids[1]!]]));
    expect(await sup.stop("SIGTERM")).toBe(0);
  }, 30_000);

  test("a reload that changes workers starts or stops workers (2 -> 3 -> 1)", async () => {
    const a = backend("A");
    const port = await freePort();
    const file = configFile(simpleConfig({ port, global: "workers = 2", servers: [{ id: "a", port: a.port }] }));
    const sup = await supervisor(file);
    const two = sup.pids();

    writeFileSync(file, simpleConfig({ port, global: "workers = 3", servers: [{ id: "a", port: a.port }] }));
    sup.proc.kill("SIGHUP");
    await until(() => sup.output().includes("supervisor: worker 3 ready (pid"), 10_000, "worker 3");
    expect(sup.output()).toContain("supervisor: workers: 2 -> 3");
    const three = [...sup.pids().values()];
    expect(three.slice(0, 2)).toEqual([two.get(1)!, two.get(2)!]);
    expect(new Set((await spread(port, three, 40)).owners)).toEqual(new Set(three));

    writeFileSync(file, simpleConfig({ port, global: "workers = 1", servers: [{ id: "a", port: a.port }] }));
    sup.proc.kill("SIGHUP");
    await until(() => count(sup.output(), "stopped (code 0): no longer configured") === 2, 10_000, "workers 2 and 3 stopped");
    await until(() => gone(three[1]!) && gone(three[2]!), 5000, "gone");
    expect(new Set((await spread(port, three, 8)).owners)).toEqual(new Set([two.get(1)!]));
    expect(await sup.stop("SIGTERM")).toBe(0);
  }, 30_000);

  test("a worker restarted after a crash runs the config the supervisor accepted, not a broken file", async () => {
    const a = backend("A");
    const port = await freePort();
    const file = configFile(simpleConfig({ port, global: "workers = 2", servers: [{ id: "a", port: a.port }] }));
    const sup = await supervisor(file);
    writeFileSync(file, "this is not TOML = = =\n");
    process.kill(sup.pids().get(2)!, "SIGKILL");
    await until(() => sup.output().includes("supervisor: worker 2 ready (pid"), 10_000, "worker 2 back");
    const pids = [...sup.pids().values()];
    const { owners, bodies } = await spread(port, pids);
    expect(bodies).toEqual(Array(24).fill("A"));
    expect(new Set(owners)).toEqual(new Set(pids));
    expect(await sup.stop("SIGTERM")).toBe(0);
  }, 30_000);

  test("SIGTERM: a request in flight completes, every worker exits, the supervisor exits 0", async () => {
    let release: () => void = () => {};
    const held = new Promise<void>((r) => (release = r));
    const slow = scriptedBackend(async () => {
      await held;
      return ok("late but complete");
    });
    cleanup.push(() => slow.stop());
    const port = await freePort();
    const sup = await supervisor(configFile(simpleConfig({ port, global: "workers = 2", servers: [{ id: "s", port: slow.port }] })));
    const pids = [...sup.pids().values()];

    const c = await Conn.open(port);
    c.send(GET);
    await until(() => slow.requests.length === 1, 5000, "request at the backend");
    const exited = sup.proc.exited;
    sup.proc.kill("SIGTERM");
    await until(() => count(sup.output(), "stopping: no new connections") === 2, 5000, "workers stopping");
    // stopped accepting: a new connection is refused (nobody listens any more)
    await expect(Conn.open(port).then((x) => (x.send(GET), x.response(1000)))).rejects.toThrow();
    setTimeout(release, 300);
    const r = await c.response(5000);
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe("late but complete");
    expect(await exited).toBe(0);
    expect(sup.output()).toContain("supervisor: all workers exited");
    await until(() => pids.every(gone), 3000, "workers gone");
  }, 30_000);

  test("a worker that does not stop within the grace period plus margin is killed; exit 0", async () => {
    const b = backend("A");
    const port = await freePort();
    const sup = await supervisor(configFile(simpleConfig({ port, global: "workers = 2", servers: [{ id: "a", port: b.port }] })));
    const stuck = sup.pids().get(2)!;
    process.kill(stuck, "SIGSTOP"); // cannot run its SIGTERM handler
    const t0 = Date.now();
    sup.proc.kill("SIGTERM");
    expect(await sup.proc.exited).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(9_500);
    expect(sup.output()).toContain(`worker 2 (pid ${stuck}) still running after 10 s: killing it`);
    expect(sup.output()).toContain(`worker 2 (pid ${stuck}) exited (signal SIGKILL)`);
  }, 30_000);

  test("the supervisor killed with SIGKILL: its workers stop by themselves, the port is free", async () => {
    const b = backend("A");
    const port = await freePort();
    const sup = await supervisor(configFile(simpleConfig({ port, global: "workers = 2", servers: [{ id: "a", port: b.port }] })));
    const pids = [...sup.pids().values()];
    sup.proc.kill("SIGKILL");
    await until(() => pids.every(gone), 8000, "workers gone");
    expect(sup.output()).toContain("worker 1: supervisor gone: stopping");
    expect(sup.output()).toContain("worker 2: supervisor gone: stopping");
    const s = Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } });
    s.stop(true);
  }, 30_000);

  test("a worker that cannot listen on the first start stops everything with exit 1", async () => {
    const b = backend("A");
    const port = await freePort();
    const squatter = Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } }); // no reusePort
    cleanup.push(() => squatter.stop(true));
    const file = configFile(simpleConfig({ port, global: "workers = 2", servers: [{ id: "a", port: b.port }] }));
    const r = await run([BUN, CLI, "run", file], { ms: 15_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot bind 127.0.0.1:${port}`);
    expect(r.stdout + r.stderr).toMatch(/supervisor: worker \d \(pid \d+\) failed to start \(code 1\): stopping/);
  }, 30_000);

  test("learn mode: bindings learned by one worker reach the other (replication through the supervisor)", async () => {
    // each backend issues its own PHPSESSID values to clients that have none
    const issuer = (name: string): ScriptedBackend => {
      let n = 0;
      const b = scriptedBackend((req) => (/PHPSESSID=/i.test(req.head) ? ok(name) : ok(name, `Set-Cookie: PHPSESSID=${name}-${++n}-${Math.random().toString(36).slice(2)}; Path=/\r\n`)));
      cleanup.push(() => b.stop());
      return b;
    };
    const a = issuer("A");
    const b = issuer("B");
    const port = await freePort();
    const persist = 'mode = "learn"\ncookie = "PHPSESSID"\nrequest_learn = false';
    const sup = await supervisor(configFile(simpleConfig({ port, global: "workers = 2", persist, servers: [{ id: "a", port: a.port }, { id: "b", port: b.port }] })));
    const pids = [...sup.pids().values()];

    // learn: 12 sessions, each on a fresh connection (so learned by either worker)
    const sessions: { cookie: string; server: string; learner: number | null }[] = [];
    for (let i = 0; i < 12; i++) {
      const c = await Conn.open(port);
      c.send(GET);
      const r = await c.response();
      const [learner] = ownersOf(port, [c.localPort], pids);
      c.close();
      const value = /^PHPSESSID=([^;]+)/.exec(r.get("set-cookie") ?? "")?.[1];
      expect(value).toBeDefined();
      sessions.push({ cookie: value!, server: r.body.toString(), learner: learner ?? null });
    }
    expect(new Set(sessions.map((x) => x.server))).toEqual(new Set(["A", "B"]));
    await Bun.sleep(100); // batches leave after at most 10 ms

    // 48 new connections at once, each with an old cookie: whichever worker takes it, the
    // server that issued the cookie answers
    const conns = await Promise.all(Array.from({ length: 48 }, () => Conn.open(port)));
    conns.forEach((c, i) => c.send(`GET / HTTP/1.1\r\nHost: w\r\nCookie: PHPSESSID=${sessions[i % 12]!.cookie}\r\n\r\n`));
    const res = await Promise.all(conns.map((c) => c.response()));
    const owners = ownersOf(port, conns.map((c) => c.localPort), pids);
    conns.forEach((c) => c.close());
    expect(new Set(owners)).toEqual(new Set(pids)); // both workers took some
    // some connections went to the worker that did not learn their session
    expect(owners.filter((o, i) => o !== sessions[i % 12]!.learner).length).toBeGreaterThan(0);
    expect(res.map((r) => r.body.toString())).toEqual(conns.map((_, i) => sessions[i % 12]!.server));
    expect(await sup.stop("SIGTERM")).toBe(0);
  }, 30_000);

  test("a worker restarted after a crash gets the learned bindings from its sibling (dump)", async () => {
    const issuer = (name: string): ScriptedBackend => {
      let n = 0;
      const b = scriptedBackend((req) => (/PHPSESSID=/i.test(req.head) ? ok(name) : ok(name, `Set-Cookie: PHPSESSID=${name}-${++n}-${Math.random().toString(36).slice(2)}\r\n`)));
      cleanup.push(() => b.stop());
      return b;
    };
    const a = issuer("A");
    const b = issuer("B");
    const port = await freePort();
    const persist = 'mode = "learn"\ncookie = "PHPSESSID"\nrequest_learn = false';
    const sup = await supervisor(configFile(simpleConfig({ port, global: "workers = 2", persist, servers: [{ id: "a", port: a.port }, { id: "b", port: b.port }] })));
    const sessions: { cookie: string; server: string }[] = [];
    for (let i = 0; i < 8; i++) {
      const c = await Conn.open(port);
      c.send(GET);
      const r = await c.response();
      c.close();
      const value = /^PHPSESSID=([^;]+)/.exec(r.get("set-cookie") ?? "")?.[1];
      expect(value).toBeDefined();
      sessions.push({ cookie: value!, server: r.body.toString() });
    }
    await Bun.sleep(100);
    process.kill(sup.pids().get(1)!, "SIGKILL");
    await until(() => sup.output().includes("supervisor: worker 1 ready (pid"), 10_000, "worker 1 restarted");
    await Bun.sleep(200);
    const pids = [...sup.pids().values()];
    const conns = await Promise.all(Array.from({ length: 32 }, () => Conn.open(port)));
    conns.forEach((c, i) => c.send(`GET / HTTP/1.1\r\nHost: w\r\nCookie: PHPSESSID=${sessions[i % 8]!.cookie}\r\n\r\n`));
    const res = await Promise.all(conns.map((c) => c.response()));
    const owners = ownersOf(port, conns.map((c) => c.localPort), pids);
    conns.forEach((c) => c.close());
    expect(new Set(owners)).toEqual(new Set(pids));
    expect(res.map((r) => r.body.toString())).toEqual(conns.map((_, i) => sessions[i % 8]!.server));
    expect(sup.output()).toMatch(/worker 2: state: sent 8 learned entries to worker 1/);
    expect(await sup.stop("SIGTERM")).toBe(0);
  }, 30_000);
});

describe('workers = "auto"', () => {
  test("starts one worker per core (navigator.hardwareConcurrency)", async () => {
    const b = backend("A");
    const port = await freePort();
    const sup = await supervisor(configFile(simpleConfig({ port, global: 'workers = "auto"', servers: [{ id: "a", port: b.port }] })));
    const cores = navigator.hardwareConcurrency;
    expect(sup.output()).toContain(`supervisor: ${cores} workers ready`);
    expect(sup.pids().size).toBe(cores);
    expect(cores).toBe(2); // these machines; the line above is the real check
    const pids = [...sup.pids().values()];
    expect(new Set((await spread(port, pids)).owners)).toEqual(new Set(pids));
    expect(await sup.stop("SIGTERM")).toBe(0);
  }, 30_000);
});

describe("compiled binary: dist/latch run with workers = 2", () => {
  const BIN = join(ROOT, "dist/latch");

  /** newest modification time under src/ (and package.json): the binary must be newer */
  function newestSource(dir = join(ROOT, "src")): number {
    let t = statSync(join(ROOT, "package.json")).mtimeMs;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      t = Math.max(t, e.isDirectory() ? newestSource(p) : statSync(p).mtimeMs);
    }
    return t;
  }

  beforeAll(async () => {
    if (existsSync(BIN) && statSync(BIN).mtimeMs > newestSource()) return;
    const r = await run(["npm", "run", "build"], { ms: 120_000 });
    if (r.code !== 0) throw new Error(`npm run build failed:\n${r.stdout}\n${r.stderr}`);
  }, 120_000);

  test("the binary re-executes itself (no script argument) as 2 workers that both serve", async () => {
    const b = backend("from-binary");
    const port = await freePort();
    const sup = await supervisor(configFile(simpleConfig({ port, global: "workers = 2", servers: [{ id: "a", port: b.port }] })), [BIN]);
    const pids = [...sup.pids().values()];
    expect(pids).toHaveLength(2);
    for (const pid of pids) {
      const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
      expect(argv[0]).toBe(BIN);
      expect(argv.slice(1, 2)).toEqual(["run"]);
    }
    const { owners, bodies } = await spread(port, pids);
    expect(bodies.every((x) => x === "from-binary")).toBe(true);
    expect(new Set(owners)).toEqual(new Set(pids));
    expect(await sup.stop("SIGTERM")).toBe(0);
  }, 30_000);
});

afterAll(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});
