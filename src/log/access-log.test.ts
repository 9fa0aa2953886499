// The access log: byte-exact line formats, JSON validity, batching, the drop bound against a
// stalled sink, failed writes, and the file sink (append, rotation, a full disk).

import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AccessRecord } from "../core/access.ts";
import { loadConfigText } from "../config/index.ts";
import {
  AccessLog,
  clfTime,
  fileSink,
  formatCombined,
  formatJson,
  isoTime,
  logField,
  reconfigureAccessLog,
  type LogSink,
} from "./access-log.ts";

// 2026-11-21T06:40:13.123Z
const T = Date.UTC(2026, 10, 21, 6, 40, 13, 123);

function rec(over: Partial<AccessRecord> = {}): AccessRecord {
  return {
    time: T,
    client: "192.0.2.7",
    clientPort: 51234,
    listener: "web",
    method: "GET",
    target: "/cart?id=7",
    version: "HTTP/1.1",
    status: 200,
    bytesOut: 1234,
    referer: "https://shop.example/",
    userAgent: "curl/8.5.0",
    backend: "app",
    server: "ap01",
    persist: "VN",
    sessionId: "ap01",
    tq: 0,
    tw: 0,
    tc: 1,
    tr: 3,
    tt: 4,
    note: "",
    ...over,
  };
}

/** A sink that records each chunk; `gate` makes every write wait until released. */
function stubSink(opts: { stall?: boolean; fail?: () => Error | null; throwSync?: boolean } = {}) {
  const chunks: string[] = [];
  let release: (() => void)[] = [];
  const sink: LogSink & { chunks: string[]; releaseAll(): void } = {
    name: "stub",
    chunks,
    write(chunk) {
      if (opts.throwSync) throw new Error("sync boom");
      if (chunk.length > 0) chunks.push(chunk);
      const err = opts.fail?.() ?? null;
      if (err !== null) return Promise.reject(err);
      if (opts.stall) return new Promise<void>((r) => release.push(r));
      return Promise.resolve();
    },
    reopen() {},
    close: async () => {},
    releaseAll() {
      const r = release;
      release = [];
      r.forEach((f) => f());
    },
  };
  return sink;
}

const lines = (chunks: string[]) => chunks.join("").split("\n").filter(Boolean);
const enospc = () => Object.assign(new Error("no space left on device, write"), { code: "ENOSPC" });

describe("combined format", () => {
  test("a full line: combined fields, then listener backend/server persist sid timings note", () => {
    expect(formatCombined(rec())).toBe(
      `192.0.2.7 - - [21/Nov/2026:06:40:13 +0000] "GET /cart?id=7 HTTP/1.1" 200 1234 "https://shop.example/" "curl/8.5.0" ` +
        `web app/ap01 persist=VN sid=ap01 Tq/Tw/Tc/Tr/Tt=0/0/1/3/4 "-"\n`,
    );
  });

  test("empty fields are -, a request that never parsed is \"-\", timings not reached are -1", () => {
    const line = formatCombined(
      rec({ method: "", target: "", version: "", status: 400, bytesOut: 98, referer: "", userAgent: "", backend: "", server: "", persist: "--", sessionId: "", tw: -1, tc: -1, tr: -1, tt: 2, note: "bad request head" }),
    );
    expect(line).toBe(`192.0.2.7 - - [21/Nov/2026:06:40:13 +0000] "-" 400 98 "-" "-" web -/- persist=-- sid=- Tq/Tw/Tc/Tr/Tt=0/-1/-1/-1/2 "bad request head"\n`);
  });

  test("a 502 with a note and a status 0 (nothing sent)", () => {
    expect(formatCombined(rec({ status: 502, note: "server ap01: connection refused" }))).toEndWith(` "server ap01: connection refused"\n`);
    expect(formatCombined(rec({ status: 0, bytesOut: 0, note: "client aborted" }))).toContain(`"GET /cart?id=7 HTTP/1.1" 0 0 `);
  });

  test('" \\ and control bytes are escaped as nginx does (\\xHH); bytes from 0x7F up too', () => {
    expect(logField(`say "hi"`, true)).toBe(`say \\x22hi\\x22`);
    expect(logField(`a\\b`, true)).toBe(`a\\x5Cb`);
    expect(logField("a\r\nb\tc\x00\x1f\x7f", true)).toBe("a\\x0D\\x0Ab\\x09c\\x00\\x1F\\x7F");
    expect(logField("caf\u00e9", true)).toBe("caf\\xE9"); // a latin1 byte as received
    expect(logField("\u20ac \u{1F600}", true)).toBe("\\xE2\\x82\\xAC \\xF0\\x9F\\x98\\x80"); // UTF-8 bytes
    expect(logField("plain text, nothing to do", true)).toBe("plain text, nothing to do");
    expect(logField("", true)).toBe("-");
  });

  test("in an unquoted field a space is escaped too, so that the line still splits on spaces", () => {
    expect(logField("a b", false)).toBe("a\\x20b");
    expect(logField("a b", true)).toBe("a b");
    const line = formatCombined(rec({ sessionId: 'x y"z', persist: "I-" }));
    expect(line).toContain(" persist=I- sid=x\\x20y\\x22z ");
  });

  test("a hostile request line, referer, user agent and note cannot break out of their quotes", () => {
    const line = formatCombined(rec({ target: '/"x" 200 1 "-', referer: 'r"\n', userAgent: 'Mozilla "5"', note: 'a"b' }));
    expect(line).toContain(`"GET /\\x22x\\x22 200 1 \\x22- HTTP/1.1" 200 1234 "r\\x22\\x0A" "Mozilla \\x225\\x22" `);
    expect(line).toEndWith(`"a\\x22b"\n`);
    expect(line.indexOf("\n")).toBe(line.length - 1);
    // outside the escapes every field sits where a combined parser expects it
    const m = /^(\S+) - - \[([^\]]+)\] "([^"]*)" (\d+) (\d+) "([^"]*)" "([^"]*)" (\S+) (\S+)\/(\S+) persist=(\S+) sid=(\S+) Tq\/Tw\/Tc\/Tr\/Tt=(\S+) "([^"]*)"$/.exec(line.slice(0, -1));
    expect(m).not.toBeNull();
    expect(m!.slice(8, 11)).toEqual(["web", "app", "ap01"]);
  });

  test("fractional timings keep 0.1 ms; IPv6 clients as they are", () => {
    expect(formatCombined(rec({ tq: 0.04, tw: 0, tc: 0.26, tr: 1.234, tt: 1.55, client: "::1" }))).toMatch(/^::1 - - .* Tq\/Tw\/Tc\/Tr\/Tt=0\/0\/0\.3\/1\.2\/1\.6 "-"\n$/);
  });

  test("time stamps: combined [dd/Mon/yyyy:HH:MM:SS +0000] and ISO, cached per second but exact", () => {
    expect(clfTime(T)).toBe("21/Nov/2026:06:40:13 +0000");
    expect(clfTime(T + 1000)).toBe("21/Nov/2026:06:40:14 +0000");
    expect(clfTime(Date.UTC(2027, 0, 2, 3, 4, 5))).toBe("02/Jan/2027:03:04:05 +0000");
    expect(isoTime(T)).toBe("2026-11-21T06:40:13.123Z");
    expect(isoTime(T + 877)).toBe("2026-11-21T06:40:14.000Z");
    expect(isoTime(T - 120)).toBe("2026-11-21T06:40:13.003Z");
    for (const t of [0, 1, 999, 1000, T, T + 5, 1.5e12 + 42]) expect(isoTime(t)).toBe(new Date(t).toISOString());
  });
});

describe("json format", () => {
  test("one object per line with every record field, time as ISO and ts in ms", () => {
    const r = rec({ note: "server timeout" });
    const line = formatJson(r);
    expect(line.endsWith("\n")).toBe(true);
    expect(line.indexOf("\n")).toBe(line.length - 1);
    const o = JSON.parse(line);
    expect(o).toEqual({ ...r, time: "2026-11-21T06:40:13.123Z", ts: T });
    expect(Object.keys(o).slice(0, 3)).toEqual(["time", "ts", "client"]);
  });

  test("quotes, backslashes, control bytes, latin1 and astral characters stay valid JSON on one line", () => {
    const nasty = 'a"b\\c\r\n\t\x00\x1f\x7f\u00e9\u20ac\u{1F600}\u2028';
    const r = rec({ target: nasty, referer: nasty, userAgent: nasty, sessionId: nasty, note: nasty, tq: 0.25, tt: -1 });
    const line = formatJson(r);
    expect(line.slice(0, -1)).not.toContain("\n");
    const o = JSON.parse(line);
    for (const k of ["target", "referer", "userAgent", "sessionId", "note"]) expect(o[k]).toBe(nasty);
    expect(o.tq).toBe(0.25);
    expect(o.tt).toBe(-1);
  });
});

describe("batching", () => {
  test("push writes nothing by itself; one write per flush interval carries the batch", async () => {
    const sink = stubSink();
    const log = new AccessLog({ format: "combined", sink, flushMs: 30 });
    for (let i = 0; i < 5; i++) log.push(rec({ target: `/${i}` }));
    expect(sink.chunks.length).toBe(0);
    await Bun.sleep(80);
    expect(sink.chunks.length).toBe(1);
    expect(lines(sink.chunks).map((l) => l.split(" ")[6])).toEqual(["/0", "/1", "/2", "/3", "/4"]);
    expect(log.stats()).toMatchObject({ lines: 5, written: 5, writes: 1, dropped: 0, errors: 0, pendingLines: 0 });
    await log.close();
  });

  test("many pushes make few writes: a full batch is written at once, in order, nothing lost", async () => {
    const sink = stubSink();
    const log = new AccessLog({ format: "combined", sink, flushMs: 1000, batchLines: 1000 });
    const N = 20_000;
    for (let i = 0; i < N; i++) log.push(rec({ target: `/${i}` }));
    await log.flush();
    const got = lines(sink.chunks);
    expect(got.length).toBe(N);
    expect(got.every((l, i) => l.split(" ")[6] === `/${i}`)).toBe(true);
    // all pushed in one tick: the first full batch went out, the rest waited for it as one
    expect(sink.chunks.length).toBeLessThanOrEqual(3);
    expect(log.stats()).toMatchObject({ lines: N, written: N, dropped: 0 });
    await log.close();
  });

  test("lines pushed while a write is in flight go into the next write", async () => {
    const sink = stubSink({ stall: true });
    const log = new AccessLog({ format: "json", sink, flushMs: 10 });
    log.push(rec());
    await Bun.sleep(30);
    expect(sink.chunks.length).toBe(1); // in flight, never completes until released
    for (let i = 0; i < 100; i++) log.push(rec());
    await Bun.sleep(30);
    expect(sink.chunks.length).toBe(1);
    sink.releaseAll();
    await Bun.sleep(30);
    expect(sink.chunks.length).toBe(2);
    expect(lines([sink.chunks[1]!]).length).toBe(100);
    sink.releaseAll();
    await log.close();
  });
});

describe("a slow or stalled sink never blocks and never grows memory without bound", () => {
  test("beyond the bound new lines are dropped and counted; push stays O(1) and never throws", async () => {
    const sink = stubSink({ stall: true });
    const warnings: string[] = [];
    const log = new AccessLog({ format: "combined", sink, flushMs: 5, maxPendingLines: 5000, quietMs: 50, reportMs: 10_000, warn: (m) => warnings.push(m) });
    log.push(rec());
    await Bun.sleep(20); // the first write is now in flight, forever
    const N = 200_000;
    const t0 = performance.now();
    for (let i = 0; i < N; i++) log.push(rec());
    const perPush = ((performance.now() - t0) * 1000) / N;
    const s = log.stats();
    expect(s.pendingLines).toBe(5000);
    expect(s.dropped).toBe(N - 5000);
    expect(s.lines).toBe(5001);
    expect(perPush).toBeLessThan(20); // µs; about 1 in practice
    // the burst is over once nothing was dropped for quietMs: one line with the count
    await Bun.sleep(1200);
    expect(warnings).toEqual([`access log: dropped ${N - 5000} lines: sink too slow / disk full (stub)`]);
    // the sink comes back: what was kept is written, new lines are taken again
    sink.releaseAll();
    await Bun.sleep(20);
    sink.releaseAll();
    log.push(rec());
    await Bun.sleep(20);
    sink.releaseAll();
    await Bun.sleep(20);
    expect(log.stats().written).toBe(5002);
    await log.close(100);
  });

  test("the byte bound holds too", () => {
    const sink = stubSink({ stall: true });
    const log = new AccessLog({ format: "combined", sink, maxPendingBytes: 64 * 1024, warn: () => {} });
    for (let i = 0; i < 10_000; i++) log.push(rec());
    const s = log.stats();
    expect(s.pendingBytes).toBeLessThanOrEqual(64 * 1024);
    expect(s.pendingBytes).toBeGreaterThan(60 * 1024);
    expect(s.dropped + s.lines).toBe(10_000);
    void log.close(10);
  });

  test("a drop burst that lasts is reported every reportMs, not once per line", async () => {
    const sink = stubSink({ stall: true });
    const warnings: string[] = [];
    const log = new AccessLog({ format: "combined", sink, maxPendingLines: 10, quietMs: 1000, reportMs: 40, warn: (m) => warnings.push(m) });
    for (let i = 0; i < 20; i++) log.push(rec());
    await Bun.sleep(60);
    for (let i = 0; i < 20; i++) log.push(rec());
    await Bun.sleep(1100);
    expect(warnings.length).toBeGreaterThanOrEqual(1);
    expect(warnings.length).toBeLessThanOrEqual(3);
    expect(warnings.join("\n")).toContain("dropped 10 lines");
    void log.close(10);
  });

  test("a record that cannot be formatted is skipped, not thrown into the forwarding path", () => {
    const log = new AccessLog({ format: "combined", sink: stubSink(), warn: () => {} });
    expect(() => log.push({} as AccessRecord)).not.toThrow();
    expect(() => log.push(null as unknown as AccessRecord)).not.toThrow();
    void log.close(10);
  });
});

describe("failed writes", () => {
  test("are counted, reported once per burst, retried later, and never throw", async () => {
    let failing = true;
    const sink = stubSink({ fail: () => (failing ? enospc() : null) });
    const warnings: string[] = [];
    const log = new AccessLog({ format: "combined", sink, flushMs: 5, retryMs: 20, warn: (m) => warnings.push(m) });
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 3; i++) expect(() => log.push(rec())).not.toThrow();
      await Bun.sleep(30);
    }
    const s = log.stats();
    expect(s.errors).toBeGreaterThanOrEqual(3);
    expect(s.lost).toBe(15 - s.pendingLines);
    expect(s.written).toBe(0);
    expect(warnings).toEqual([expect.stringContaining("access log: cannot write stub: ENOSPC")]);
    failing = false;
    log.push(rec());
    await Bun.sleep(60);
    expect(log.stats().written).toBeGreaterThanOrEqual(1);
    expect(warnings.length).toBe(2);
    expect(warnings[1]).toMatch(/^access log: writing stub again after \d+ failed writes \(\d+ lines lost\)$/);
    await log.close();
  });

  test("a sink that throws synchronously is a failed write too", async () => {
    const warnings: string[] = [];
    const log = new AccessLog({ format: "combined", sink: stubSink({ throwSync: true }), flushMs: 5, warn: (m) => warnings.push(m) });
    expect(() => log.push(rec())).not.toThrow();
    await Bun.sleep(30);
    expect(log.stats()).toMatchObject({ errors: 1, lost: 1 });
    expect(warnings[0]).toContain("sync boom");
    await log.close(50);
  });
});

describe("file sink", () => {
  const dir = mkdtempSync(join(tmpdir(), "latch-accesslog-"));

  test("appends to an existing file; reopen after mv writes to a new file (rotation)", async () => {
    const path = join(dir, "access.log");
    writeFileSync(path, "earlier\n");
    const log = new AccessLog({ format: "combined", sink: fileSink(path), flushMs: 5 });
    log.open();
    log.push(rec({ target: "/before" }));
    await log.flush();
    renameSync(path, path + ".1");
    log.push(rec({ target: "/still-old" })); // written before the HUP: still to the open file
    await log.flush();
    log.push(rec({ target: "/batched" })); // batched before the HUP: to the old file too
    log.reopen();
    log.push(rec({ target: "/after" }));
    await log.close();
    const old = readFileSync(path + ".1", "utf8").split("\n").filter(Boolean);
    expect(old[0]).toBe("earlier");
    expect(old.slice(1).map((l) => l.split(" ")[6])).toEqual(["/before", "/still-old", "/batched"]);
    expect(readFileSync(path, "utf8").split("\n").filter(Boolean).map((l) => l.split(" ")[6])).toEqual(["/after"]);
  });

  test("a reopen while a write is in flight: what was batched before it still goes to the old file", async () => {
    let file = 0;
    const written: [number, string][] = [];
    let release: () => void = () => {};
    const sink: LogSink = {
      name: "gen",
      write(chunk) {
        if (chunk.length > 0) written.push([file, chunk]);
        return new Promise<void>((r) => (release = r));
      },
      reopen: () => void file++,
      close: async () => {},
    };
    const log = new AccessLog({ format: "combined", sink, flushMs: 5 });
    log.push(rec({ target: "/a" }));
    await Bun.sleep(20); // "/a" in flight
    log.push(rec({ target: "/b" }));
    log.reopen();
    log.push(rec({ target: "/c" }));
    release();
    await Bun.sleep(5);
    release();
    await Bun.sleep(20);
    release();
    await log.close(100);
    expect(written.map(([f, c]) => [f, lines([c]).map((l) => l.split(" ")[6])])).toEqual([
      [0, ["/a"]],
      [0, ["/b"]],
      [1, ["/c"]],
    ]);
  });

  test("a full disk (/dev/full: ENOSPC) is reported and counted, pushes go on", async () => {
    const warnings: string[] = [];
    const log = new AccessLog({ format: "json", sink: fileSink("/dev/full"), flushMs: 5, retryMs: 10, warn: (m) => warnings.push(m) });
    log.open();
    for (let i = 0; i < 50; i++) {
      log.push(rec());
      if (i % 10 === 0) await Bun.sleep(15);
    }
    await log.flush();
    const s = log.stats();
    expect(s.errors).toBeGreaterThanOrEqual(2);
    expect(s.lost).toBe(50);
    expect(s.written).toBe(0);
    expect(warnings).toEqual([expect.stringContaining("access log: cannot write /dev/full: ENOSPC")]);
    await log.close();
  });

  test("a file that cannot be opened is reported at open, not at the first request", async () => {
    const warnings: string[] = [];
    const blocker = join(dir, "not-a-dir");
    writeFileSync(blocker, "");
    const log = new AccessLog({ format: "combined", sink: fileSink(join(blocker, "access.log")), warn: (m) => warnings.push(m) });
    log.open();
    await log.flush();
    expect(warnings).toEqual([expect.stringMatching(/cannot write .*not-a-dir\/access\.log: ENOTDIR/)]);
    await log.close();
  });
});

describe("stdout sink", () => {
  test("shared by processes (workers) on one pipe: every line arrives whole", async () => {
    const dir = mkdtempSync(join(tmpdir(), "latch-accesslog-"));
    const script = join(dir, "writer.ts");
    writeFileSync(
      script,
      `import { AccessLog, stdoutSink } from ${JSON.stringify(join(import.meta.dir, "access-log.ts"))};
const id = process.argv[2];
const log = new AccessLog({ format: "combined", sink: stdoutSink(true), flushMs: 1 });
const r = ${JSON.stringify(rec())};
for (let b = 0; b < 20; b++) {
  for (let i = 0; i < 500; i++) log.push({ ...r, sessionId: id + "-" + b + "-" + i, target: "/" + id.repeat(50 + (i % 200)) });
  await Bun.sleep(1);
}
await log.close(10_000);
`,
    );
    const bun = process.execPath;
    const proc = Bun.spawn(["sh", "-c", `"${bun}" "${script}" A & "${bun}" "${script}" B & "${bun}" "${script}" C & wait`], { stdout: "pipe", stderr: "inherit" });
    const out = await new Response(proc.stdout as ReadableStream).text();
    expect(await proc.exited).toBe(0);
    const got = out.split("\n").filter(Boolean);
    expect(got.length).toBe(3 * 20 * 500);
    const whole = /^192\.0\.2\.7 - - \[[^\]]+\] "GET \/(A+|B+|C+) HTTP\/1\.1" 200 1234 .* sid=([ABC])-\d+-\d+ Tq\/Tw\/Tc\/Tr\/Tt=0\/0\/1\/3\/4 "-"$/;
    const broken = got.filter((l) => {
      const m = whole.exec(l);
      return m === null || m[1]![0] !== m[2];
    });
    expect(broken.slice(0, 3)).toEqual([]);
  }, 30_000);
});

describe("[log] settings", () => {
  const toml = (log: string) => `[log]\n${log}\n[[listen]]\nbind = "127.0.0.1:0"\n[[listen.route]]\nbackend = "app"\n[backend.app]\n[[backend.app.server]]\nid = "a"\naddress = "127.0.0.1:9"\n`;

  test("file is resolved against the config file's directory; absent = stdout (null)", () => {
    expect(loadConfigText(toml(`access = true\nfile = "logs/access.log"`), "/etc/latch/latch.toml").log).toEqual({ access: true, format: "combined", file: "/etc/latch/logs/access.log" });
    expect(loadConfigText(toml(`file = "/var/log/latch.log"\nformat = "json"`), "/etc/latch/latch.toml").log).toEqual({ access: false, format: "json", file: "/var/log/latch.log" });
    expect(loadConfigText(toml(`access = true`), "/etc/latch/latch.toml").log.file).toBeNull();
    expect(() => loadConfigText(toml(`file = ""`), "/etc/latch/latch.toml")).toThrow(/log\.file.*must not be empty/);
  });

  test("reconfigure: off -> null; same destination kept (format applied, reopened); a new one replaces it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "latch-accesslog-"));
    const a = join(dir, "a.log");
    const b = join(dir, "b.log");
    expect(reconfigureAccessLog(null, { access: false, format: "combined", file: a })).toBeNull();
    const first = reconfigureAccessLog(null, { access: true, format: "combined", file: a })!;
    expect(first.destination).toBe(a);
    const same = reconfigureAccessLog(first, { access: true, format: "json", file: a })!;
    expect(same).toBe(first);
    same.push(rec());
    await same.flush();
    expect(JSON.parse(readFileSync(a, "utf8")).server).toBe("ap01");
    const other = reconfigureAccessLog(same, { access: true, format: "combined", file: b })!;
    expect(other).not.toBe(same);
    expect(other.destination).toBe(b);
    expect(reconfigureAccessLog(other, { access: false, format: "combined", file: b })).toBeNull();
    same.push(rec()); // a closed log takes nothing
    expect(same.stats().pendingLines).toBe(0);
  });
});
