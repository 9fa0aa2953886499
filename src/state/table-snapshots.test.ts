// table-snapshots: the state files of learned tables, with a fake clock (nowSec is a parameter).

import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Packr } from "msgpackr";
import { loadConfigText } from "../config/index.ts";
import type { CompiledConfig, TablePersist } from "../core/types.ts";
import {
  carryTables,
  decodeSnapshot,
  encodeSnapshot,
  loadTables,
  RejectedSnapshot,
  saveTables,
  saveTablesAsync,
  snapshotPath,
  startPeriodicSaves,
  STATE_KIND,
} from "./table-snapshots.ts";

const T0 = 1_750_000_000;

function config(stateDir: string, opts: { servers?: string[]; persist?: string; name?: string; global?: string } = {}): CompiledConfig {
  const name = opts.name ?? "app";
  const persist = opts.persist ?? 'mode = "learn"\ncookie = "PHPSESSID"\ntimeout = "30m"';
  const servers = (opts.servers ?? ["ap01", "ap02"])
    .map((id, i) => `[[backend.${name}.server]]\nid = "${id}"\naddress = "127.0.0.1:${9001 + i}"\n`)
    .join("\n");
  return loadConfigText(
    `[global]
state_dir = ${JSON.stringify(stateDir)}
${opts.global ?? ""}

[[listen]]
bind = "127.0.0.1:0"
  [[listen.route]]
  path = "/"
  backend = "${name}"

[backend.${name}]
[backend.${name}.persist]
${persist}
${persist.includes('"insert"') ? "" : "capacity = 1000"}

${servers}
`,
    "t.toml",
  );
}

const tableOf = (cfg: CompiledConfig, name = "app") => (cfg.backends.get(name)!.persist as TablePersist).table;
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), "latch-state-"));
  dirs.push(d);
  return d;
};
function logger() {
  const lines: string[] = [];
  return { lines, log: (level: string, msg: string) => void lines.push(`${level} ${msg}`) };
}

describe("save and load", () => {
  test("round trip through <state_dir>/<backend>.table.msgpack, file mode 0600, no temp file left", () => {
    const dir = tmp();
    const a = config(dir);
    tableOf(a).storeString("sess-1", 0, T0);
    tableOf(a).storeString("sess-2", 1, T0);
    const { lines, log } = logger();
    expect(saveTables(a, log, T0 + 5)).toBe(1);
    expect(lines).toEqual([]);
    const file = snapshotPath(dir, "app");
    expect(file).toBe(join(dir, "app.table.msgpack"));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir)).toEqual(["app.table.msgpack"]);

    const b = config(dir);
    loadTables(b, log, T0 + 10);
    expect(tableOf(b).lookupString("sess-1", T0 + 10)).toBe(0);
    expect(tableOf(b).lookupString("sess-2", T0 + 10)).toBe(1);
    expect(lines).toEqual([`info state: backend app: loaded 2 sessions from ${file}, dropped 0 expired or unknown`]);
  });

  test("the file is the documented wrapper around the table's own snapshot", () => {
    const dir = tmp();
    const a = config(dir, { persist: 'mode = "header"\nheader = "X-Session-ID"\nlen = 16' });
    tableOf(a).storeString("k", 1, T0);
    const doc = new Packr({ useRecords: false }).unpack(encodeSnapshot(a.backends.get("app")!, T0));
    expect(doc).toMatchObject({ kind: STATE_KIND, v: 1, backend: "app", mode: "header", len: 16, servers: ["ap01", "ap02"], savedAt: T0 });
    expect(doc.table).toBeInstanceOf(Uint8Array);
  });

  test("entries idle past the timeout are dropped on load (fake clock)", () => {
    const dir = tmp();
    const persist = 'mode = "learn"\ncookie = "PHPSESSID"\ntimeout = "2s"';
    const a = config(dir, { persist });
    tableOf(a).storeString("old", 0, T0);
    tableOf(a).storeString("new", 1, T0 + 1);
    saveTables(a, () => {}, T0 + 1);
    const b = config(dir, { persist });
    const { lines, log } = logger();
    loadTables(b, log, T0 + 3); // "old" idle 3 s (> 2): gone; "new" idle 2 s: kept (never early)
    expect(tableOf(b).lookupString("old", T0 + 3)).toBe(-1);
    expect(tableOf(b).lookupString("new", T0 + 3)).toBe(1);
    expect(lines[0]).toContain("loaded 1 sessions");
    expect(lines[0]).toContain("dropped 1");
  });

  test("server indexes are remapped by id; entries of removed servers are dropped", () => {
    const dir = tmp();
    const a = config(dir, { servers: ["ap01", "ap02", "ap03"] });
    tableOf(a).storeString("on-1", 0, T0);
    tableOf(a).storeString("on-2", 1, T0);
    tableOf(a).storeString("on-3", 2, T0);
    saveTables(a, () => {}, T0);
    const b = config(dir, { servers: ["ap03", "ap04", "ap01"] }); // ap02 removed, order changed
    const { lines, log } = logger();
    loadTables(b, log, T0 + 1);
    expect(tableOf(b).lookupString("on-1", T0 + 1)).toBe(2); // ap01 is now index 2
    expect(tableOf(b).lookupString("on-3", T0 + 1)).toBe(0); // ap03 is now index 0
    expect(tableOf(b).lookupString("on-2", T0 + 1)).toBe(-1);
    expect(lines).toEqual([
      `info state: backend app: loaded 2 sessions from ${snapshotPath(dir, "app")}, dropped 1 expired or unknown (servers no longer configured: ap02)`,
    ]);
  });

  test("a missing file is a first start: silent, empty table", () => {
    const { lines, log } = logger();
    const b = config(tmp());
    loadTables(b, log, T0);
    expect(lines).toEqual([]);
    expect(tableOf(b).stats.size).toBe(0);
  });

  test("an empty table with no earlier file writes nothing and creates no directory", () => {
    const dir = join(tmp(), "state");
    expect(saveTables(config(dir), () => {}, T0)).toBe(0);
    expect(existsSync(dir)).toBe(false);
  });

  test("an emptied table overwrites its earlier file", () => {
    const dir = tmp();
    const a = config(dir);
    tableOf(a).storeString("x", 0, T0);
    saveTables(a, () => {}, T0);
    tableOf(a).deleteString("x");
    expect(saveTables(a, () => {}, T0)).toBe(1);
    const b = config(dir);
    loadTables(b, () => {}, T0);
    expect(tableOf(b).stats.size).toBe(0);
  });

  test("state_dir is created when missing", () => {
    const dir = join(tmp(), "a", "b");
    const a = config(dir);
    tableOf(a).storeString("x", 1, T0);
    expect(saveTables(a, () => {}, T0)).toBe(1);
    expect(existsSync(join(dir, "app.table.msgpack"))).toBe(true);
  });

  test("a state_dir that cannot be written is logged, never thrown", async () => {
    const file = join(tmp(), "not-a-dir");
    writeFileSync(file, "x");
    const a = config(join(file, "state"));
    tableOf(a).storeString("x", 1, T0);
    const { lines, log } = logger();
    expect(saveTables(a, log, T0)).toBe(0);
    expect(await saveTablesAsync(a, log, T0)).toBe(0);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toStartWith("error state: cannot save backend app to ");
    expect(lines[1]).toStartWith(`error state: cannot create ${join(file, "state")}`);
    loadTables(a, log, T0); // and reading from it is no problem either
  });

  test("saveTablesAsync writes the same file", async () => {
    const dir = tmp();
    const a = config(dir);
    tableOf(a).storeString("x", 1, T0);
    expect(await saveTablesAsync(a, () => {}, T0)).toBe(1);
    expect(readdirSync(dir)).toEqual(["app.table.msgpack"]);
    const b = config(dir);
    loadTables(b, () => {}, T0);
    expect(tableOf(b).lookupString("x", T0)).toBe(1);
  });

  test("temp files of a dead process are removed on load; a live one's are left", () => {
    const dir = tmp();
    const dead = join(dir, "app.table.msgpack.tmp-999999999-0");
    const live = join(dir, `app.table.msgpack.tmp-${process.ppid}-3`);
    writeFileSync(dead, "half");
    writeFileSync(live, "half");
    loadTables(config(dir), () => {}, T0);
    expect(existsSync(dead)).toBe(false);
    expect(existsSync(live)).toBe(true);
  });

  test("backends without a table mode have no file", () => {
    const dir = tmp();
    const cfg = config(dir, { persist: 'mode = "insert"\ncookie = "SRV"' });
    expect(saveTables(cfg, () => {}, T0)).toBe(0);
    loadTables(cfg, () => {}, T0);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe("unusable files: reported, moved aside, never fatal", () => {
  const packr = new Packr({ useRecords: false });
  const other = (() => {
    const c = config(tmp(), { name: "other", servers: ["x1", "x2"] });
    tableOf(c, "other").storeString("k", 1, T0);
    return encodeSnapshot(c.backends.get("other")!, T0);
  })();
  const learnLen = (len: number) => {
    const c = config(tmp(), { persist: `mode = "learn"\ncookie = "PHPSESSID"\nlen = ${len}` });
    tableOf(c).storeString("k", 1, T0);
    return encodeSnapshot(c.backends.get("app")!, T0);
  };
  const sourceMode = (() => {
    const c = config(tmp(), { persist: 'mode = "source"' });
    tableOf(c).storeString("127.0.0.1", 1, T0);
    return encodeSnapshot(c.backends.get("app")!, T0);
  })();
  const cases: [string, Uint8Array, string][] = [
    ["random bytes", new Uint8Array([0xc1, 0xff, 0x00, 0x13, 0x37, 0xde, 0xad, 0xbe, 0xef]), "corrupt: not msgpack"],
    ["empty file", new Uint8Array(0), "corrupt: not msgpack"],
    ["truncated snapshot", other.subarray(0, other.length - 5), "corrupt: not msgpack"],
    ["msgpack of something else", packr.pack({ hello: "world", n: [1, 2, 3] }), "foreign: not a Latch table snapshot"],
    ["a msgpack string", packr.pack("latch-state"), "foreign: not a Latch table snapshot"],
    ["a bare session-table snapshot", tableOf(config(tmp())).snapshot(T0), "foreign: not a Latch table snapshot"],
    ["another version", packr.pack({ kind: STATE_KIND, v: 99 }), "version 99; this Latch reads version 1"],
    ["no table", packr.pack({ kind: STATE_KIND, v: 1, backend: "app", servers: [] }), "corrupt: backend, servers or table missing"],
    ["another backend's snapshot", other, 'foreign: snapshot of backend "other", not "app"'],
    ["another persist mode", sourceMode, 'persist mode was "source", is now "learn"'],
    ["keys shorter than len", learnLen(16), "key length mismatch: snapshot keys cut at 16 bytes, len is now 64"],
    [
      "a corrupt inner table",
      packr.pack({ kind: STATE_KIND, v: 1, backend: "app", mode: "learn", len: 64, servers: ["ap01", "ap02"], table: new Uint8Array([1, 2, 3]) }),
      "session table snapshot is",
    ],
  ];
  for (const [what, bytes, reason] of cases) {
    test(what, () => {
      const dir = tmp();
      const file = snapshotPath(dir, "app");
      writeFileSync(file, bytes);
      const { lines, log } = logger();
      const cfg = config(dir);
      expect(() => loadTables(cfg, log, T0)).not.toThrow();
      expect(tableOf(cfg).stats.size).toBe(0);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toStartWith(`warn state: ignoring ${file}: `);
      expect(lines[0]).toContain(reason);
      const aside = readdirSync(dir);
      expect(aside).toHaveLength(1);
      expect(aside[0]).toMatch(/^app\.table\.msgpack\.corrupt-\d+$/);
      expect(lines[0]).toContain(`moved aside to ${join(dir, aside[0]!)}`);
      expect(readFileSync(join(dir, aside[0]!))).toEqual(Buffer.from(bytes));
      // the next save is not in the way
      tableOf(cfg).storeString("fresh", 0, T0);
      expect(saveTables(cfg, log, T0)).toBe(1);
    });
  }

  test("longer keys than len now are fine (truncated, as the table does)", () => {
    const cfg = config(tmp(), { persist: 'mode = "learn"\ncookie = "PHPSESSID"\nlen = 4' });
    const c = config(tmp());
    tableOf(c).storeString("abcdefgh", 1, T0);
    decodeSnapshot(encodeSnapshot(c.backends.get("app")!, T0), cfg.backends.get("app")!, T0);
    expect(tableOf(cfg).lookupString("abcdXXXX", T0)).toBe(1);
  });

  test("decodeSnapshot throws RejectedSnapshot and loads nothing", () => {
    const cfg = config(tmp());
    expect(() => decodeSnapshot(other, cfg.backends.get("app")!, T0)).toThrow(RejectedSnapshot);
    expect(tableOf(cfg).stats.size).toBe(0);
  });
});

describe("reload and periodic saves", () => {
  test("carryTables moves learned entries into the new config's tables by server id", () => {
    const dir = tmp();
    const old = config(dir, { servers: ["ap01", "ap02"] });
    tableOf(old).storeString("s1", 0, T0);
    tableOf(old).storeString("s2", 1, T0);
    const next = config(dir, { servers: ["ap00", "ap01", "ap02"] });
    const { lines, log } = logger();
    carryTables(old, next, log, T0 + 1);
    expect(lines).toEqual([]);
    expect(tableOf(next).lookupString("s1", T0 + 1)).toBe(1);
    expect(tableOf(next).lookupString("s2", T0 + 1)).toBe(2);
  });

  test("carryTables: a table that changed mode starts empty, said once", () => {
    const old = config(tmp());
    tableOf(old).storeString("s1", 0, T0);
    const next = config(tmp(), { persist: 'mode = "source"' });
    const { lines, log } = logger();
    carryTables(old, next, log, T0);
    expect(tableOf(next).stats.size).toBe(0);
    expect(lines).toEqual(['warn state: backend app: learned sessions not carried over the reload: persist mode was "learn", is now "source"']);
  });

  test("snapshot_interval: default 60s, \"0s\" disables, a short one saves periodically", async () => {
    expect(config(tmp()).snapshotInterval).toBe(60_000);
    expect(config(tmp(), { global: 'snapshot_interval = "0s"' }).snapshotInterval).toBe(0);
    expect(() => config(tmp(), { global: 'snapshot_interval = "soon"' })).toThrow(/snapshot_interval/);

    const dir = tmp();
    const cfg = config(dir, { global: 'snapshot_interval = "50ms"' });
    expect(cfg.snapshotInterval).toBe(50);
    tableOf(cfg).storeString("s", 1, Math.floor(Date.now() / 1000));
    const stop = startPeriodicSaves(() => cfg, cfg.snapshotInterval, () => {});
    const until = Date.now() + 3000;
    while (!existsSync(snapshotPath(dir, "app")) && Date.now() < until) await Bun.sleep(10);
    stop();
    expect(existsSync(snapshotPath(dir, "app"))).toBe(true);
    const b = config(dir);
    loadTables(b, () => {}, Math.floor(Date.now() / 1000));
    expect(tableOf(b).lookupString("s", Math.floor(Date.now() / 1000))).toBe(1);

    const none = tmp();
    const off = config(none, { global: 'snapshot_interval = "0s"' });
    tableOf(off).storeString("s", 1, T0);
    const stopOff = startPeriodicSaves(() => off, off.snapshotInterval, () => {});
    await Bun.sleep(100);
    stopOff();
    expect(readdirSync(none)).toEqual([]);
  });
});
