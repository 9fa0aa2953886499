// Schema errors as `latch check` reports them: key path, line, and a message in plain words.
import { describe, expect, test } from "bun:test";
import { ConfigError, type ConfigIssue, loadConfigText } from "./index.ts";

const VALID = `#TOP
[global]
#GLOBAL

[[listen]]
bind = "127.0.0.1:8080"
#LISTEN

  [[listen.route]]
  backend = "app"
  #ROUTE

[backend.app]
#BACKEND

  [backend.app.persist]
  mode = "insert"
  cookie = "SRV"
  #PERSIST

  [[backend.app.server]]
  id = "ap01"
  address = "127.0.0.1:9001"
  #SERVER0

  [[backend.app.server]]
  id = "ap02"
  address = "127.0.0.1:9002"
  #SERVER1
#END
`;

/** VALID with marker comments replaced by the given lines. */
function configWith(parts: Record<string, string>): string {
  let text = VALID;
  for (const [marker, lines] of Object.entries(parts)) text = text.replace(`#${marker}`, lines);
  return text;
}

function issuesOf(text: string): ConfigIssue[] {
  try {
    loadConfigText(text, "t.toml");
  } catch (e) {
    if (e instanceof ConfigError) return [...e.issues];
    throw e;
  }
  throw new Error("expected a ConfigError");
}

/** 1-based line of the first line containing `needle` */
function lineOf(text: string, needle: string): number {
  const i = text.split("\n").findIndex((l) => l.includes(needle));
  if (i === -1) throw new Error(`"${needle}" not in text`);
  return i + 1;
}

describe("the base config", () => {
  test("is valid", () => {
    expect(() => loadConfigText(VALID, "t.toml")).not.toThrow();
  });
});

describe("unknown keys are errors naming the full key path and line", () => {
  test.each([
    ["top level", { TOP: "colour = 1" }, "colour", "colour = 1"],
    ["[global]", { GLOBAL: "worker = 2" }, "global.worker", "worker = 2"],
    ["inline table", { BACKEND: 'timeout = { connect = "1s", sever = "2s" }' }, "backend.app.timeout.sever", "sever"],
    ["persist", { PERSIST: 'cokie = "x"' }, "backend.app.persist.cokie", "cokie"],
    ["second server", { SERVER1: "wieght = 2" }, "backend.app.server[1].wieght", "wieght"],
    ["route", { ROUTE: "prefered_host = true" }, "listen[0].route[0].prefered_host", "prefered_host"],
    ["listener tls", { LISTEN: 'tls = { cert = "c", key = "k", chain = "x" }' }, "listen[0].tls.chain", "chain ="],
    ["session table", { END: '[session.main]\nstore = "cookie"\npassphrase = "x"' }, "session.main.passphrase", "passphrase ="],
    ["rule", { PERSIST: '[[backend.app.ignore_persist]]\npath = "/x"\nagent = "y"' }, "backend.app.ignore_persist[0].agent", "agent"],
  ])("%s", (_, parts, path, needle) => {
    const text = configWith(parts);
    const issues = issuesOf(text);
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ file: "t.toml", path, line: lineOf(text, needle) });
    expect(issues[0]!.message).toStartWith("unknown key");
  });

  test("a near miss gets a suggestion; the message reads as file:line: path: message", () => {
    const text = configWith({ PERSIST: 'cokie = "x"' });
    const line = lineOf(text, "cokie");
    expect(() => loadConfigText(text, "t.toml")).toThrow(
      `t.toml:${line}: backend.app.persist.cokie: unknown key for mode = "insert" (did you mean "cookie"?)`,
    );
  });

  test("a key of another persistence mode is unknown for this one", () => {
    const text = configWith({ PERSIST: "len = 32" });
    expect(issuesOf(text)).toEqual([
      { file: "t.toml", line: lineOf(text, "len = 32"), path: "backend.app.persist.len", message: 'unknown key for mode = "insert"' },
    ]);
  });
});

describe("type and value errors report the line of the value", () => {
  test.each([
    ["backend.app.server[1].weight", { SERVER1: 'weight = "2"' }, 'expected an integer, got "2"'],
    ["backend.app.server[1].weight", { SERVER1: "weight = 1.5" }, "expected an integer, got 1.5"],
    ["backend.app.server[1].weight", { SERVER1: "weight = 257" }, "must be from 0 to 256, got 257"],
    ["backend.app.server[0].maxconn", { SERVER0: "maxconn = -1" }, "must be at least 0, got -1"],
    ["global.workers", { GLOBAL: 'workers = "two"' }, 'expected a number of processes or "auto", got "two"'],
    ["backend.app.persist.indirect", { PERSIST: 'indirect = "yes"' }, 'expected true or false, got "yes"'],
    ["backend.app.persist.maxidle", { PERSIST: 'maxidle = "30"' }, 'duration "30" has no unit; write e.g. "30s" or "30ms" (units: ms, s, m, h, d)'],
    ["global.max_head_size", { GLOBAL: 'max_head_size = "lots"' }, 'invalid size "lots"; write e.g. "512B", "64KB", "1MB" or "1GB"'],
    ["backend.app.persist.samesite", { PERSIST: 'samesite = "lax-ish"' }, 'expected "Lax", "Strict" or "None", got "lax-ish"'],
    ["backend.app.persist.path", { PERSIST: 'path = "/a;b"' }, 'must start with "/" and hold no ";", space or control byte, got "/a;b"'],
    ["backend.app.balance", { BACKEND: 'balance = "round-robin"' }, 'expected roundrobin, leastconn, random, first, source, uri, "hdr:NAME" or "cookie:NAME", got "round-robin"'],
    ["backend.app.failover", { BACKEND: 'failover = "never"' }, 'expected one of "redispatch", "strict", got "never"'],
    ["backend.app.hash_balance_factor", { BACKEND: "hash_balance_factor = 1" }, "must be greater than 1, got 1"],
    ["listen[0].route[0].path", { ROUTE: 'path = "api"' }, 'must start with "/", got "api"'],
    ["listen[0].redirect", { LISTEN: 'redirect = "http"' }, 'expected one of "https", got "http"'],
    ["listen[0].via", { LISTEN: "via = true" }, "expected a string, got true"],
    ["listen[0].name", { LISTEN: 'name = "my web"' }, '"my web" is not a valid listener name (letters, digits, "_", ".", ":", "-")'],
    ["log.format", { END: "[log]\nformat = \"xml\"" }, 'expected one of "combined", "json", got "xml"'],
  ] as const)("%s", (path, parts, message) => {
    const text = configWith(parts);
    // the line that was put in (a table plus key puts the key last)
    const inserted = Object.values(parts)[0]!.split("\n").at(-1)!;
    expect(issuesOf(text)).toEqual([{ file: "t.toml", line: lineOf(text, inserted), path, message }]);
  });

  test("persistence mode must be one of the eight", () => {
    const text = VALID.replace('mode = "insert"', 'mode = "lean"');
    expect(issuesOf(text)).toEqual([
      {
        file: "t.toml",
        line: lineOf(text, "lean"),
        path: "backend.app.persist.mode",
        message: 'expected one of "insert", "prefix", "rewrite", "learn", "route", "source", "header", "param", got "lean"',
      },
    ]);
  });

  test("a table where a value belongs, and the reverse", () => {
    const text = configWith({ TOP: 'admin = "127.0.0.1:9090"' });
    expect(issuesOf(text)).toEqual([{ file: "t.toml", line: lineOf(text, "admin ="), path: "admin", message: 'expected a table, got "127.0.0.1:9090"' }]);
  });
});

describe("missing keys point at the table that lacks them", () => {
  test("server without address", () => {
    const text = VALID.replace('address = "127.0.0.1:9002"', "");
    expect(issuesOf(text)).toEqual([
      { file: "t.toml", line: 26, path: "backend.app.server[1].address", message: "required key is missing" },
    ]);
    expect(text.split("\n")[25]).toContain("[[backend.app.server]]");
  });

  test("persist without mode", () => {
    const text = VALID.replace('mode = "insert"', "");
    const [issue] = issuesOf(text);
    expect(issue).toMatchObject({ path: "backend.app.persist.mode", line: lineOf(text, "[backend.app.persist]") });
    expect(issue!.message).toStartWith("required key is missing");
  });

  test("no [[listen]] at all", () => {
    expect(issuesOf('[backend.app]\n[[backend.app.server]]\nid = "a"\naddress = "h:1"\n')).toEqual([
      { file: "t.toml", line: null, path: "listen", message: "required key is missing" },
    ]);
  });

  test("a backend without servers", () => {
    const text = `${VALID}\n[backend.empty]\nbalance = "first"\n`;
    expect(issuesOf(text)).toEqual([
      { file: "t.toml", line: lineOf(text, "[backend.empty]"), path: "backend.empty.server", message: "required key is missing" },
    ]);
    const text2 = `${VALID}\n[backend.empty]\nserver = []\n`;
    expect(issuesOf(text2)).toEqual([
      { file: "t.toml", line: lineOf(text2, "server = []"), path: "backend.empty.server", message: "a backend needs at least one [[server]]" },
    ]);
  });
});

describe("persistence rules", () => {
  test.each([
    ['header = "User-Agent"'],
    ['contains = "bot"'],
    ['path = "/a"\nsrc = "10.0.0.0/8"'],
  ])("%p is not one condition", (body) => {
    const text = configWith({ PERSIST: `[[backend.app.force_persist]]\n${body}` });
    expect(issuesOf(text)).toEqual([
      {
        file: "t.toml",
        line: lineOf(text, "[[backend.app.force_persist]]"),
        path: "backend.app.force_persist[0]",
        message: "a rule has exactly one condition: header + contains, path, or src",
      },
    ]);
  });
});

test("every problem is reported at once, in line order", () => {
  const text = configWith({ GLOBAL: "max_headers = 0", PERSIST: "nocache = 1", SERVER1: "colour = 1" });
  expect(issuesOf(text).map((i) => [i.line, i.path])).toEqual([
    [3, "global.max_headers"],
    [lineOf(text, "nocache"), "backend.app.persist.nocache"],
    [lineOf(text, "colour"), "backend.app.server[1].colour"],
  ]);
});
