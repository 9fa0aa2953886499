import { describe, expect, test } from "bun:test";
import { formatPath, locate, syntaxErrorLine } from "./locate.ts";

// Line numbers in the comments are the 1-based lines of this text.
const TEXT = `# comment with [brackets] and key = "value"
title = "a # not a comment"        # line 2
nested.dotted . key = 1            # line 3

[global]                           # line 5
timeout = { client = "60s", head = "10s" }

[[listen]]                         # line 8
name = "web"
  [[listen.route]]                 # line 10
  path = "/"
  [[listen.route]]                 # line 12
  path = "/api"
  backend = "api"                  # line 14
  set_headers = { "X-Session-ID" = "cookie:SID" }
  [listen.tls]                     # line 16
  cert = "c.pem"

[[listen]]                         # line 19
name = "admin"
  [[listen.route]]                 # line 21
  backend = "x"

[backend.app]                      # line 24
multi = """
[not.a.table]
x = 1
"""                                # line 28
after = 'literal ] }'              # line 29
list = [
  "a",                             # line 31
  # comment ] inside
  "b", [1, 2],                     # line 33
]
rules = [ { header = "UA", contains = "ab" },
          { path = "/x" } ]        # line 36
  [backend.app.persist]            # line 37
  mode = "insert"
  [[backend.app.server]]           # line 39
  id = "ap01"
  [[backend.app.server]]           # line 41
  id = "ap02"
  address = "h:1"                  # line 43
  [[backend."quoted.name".server]] # line 44
  id = 'q'
"key with spaces" = 1              # line 46
`;

describe("locate", () => {
  const where = locate(TEXT);
  test.each([
    [["title"], 2],
    [["nested"], 3],
    [["nested", "dotted", "key"], 3],
    [["global"], 5],
    [["global", "timeout"], 6],
    [["global", "timeout", "head"], 6],
    [["listen"], 8],
    [["listen", 0], 8],
    [["listen", 0, "name"], 9],
    [["listen", 0, "route", 0], 10],
    [["listen", 0, "route", 0, "path"], 11],
    [["listen", 0, "route", 1], 12],
    [["listen", 0, "route", 1, "backend"], 14],
    [["listen", 0, "route", 1, "set_headers", "X-Session-ID"], 15],
    [["listen", 0, "tls"], 16],
    [["listen", 0, "tls", "cert"], 17],
    [["listen", 1], 19],
    [["listen", 1, "name"], 20],
    [["listen", 1, "route", 0, "backend"], 22],
    [["backend"], 24],
    [["backend", "app"], 24],
    [["backend", "app", "after"], 29],
    [["backend", "app", "list", 0], 31],
    [["backend", "app", "list", 1], 33],
    [["backend", "app", "list", 2, 1], 33],
    [["backend", "app", "rules", 0, "contains"], 35],
    [["backend", "app", "rules", 1, "path"], 36],
    [["backend", "app", "persist", "mode"], 38],
    [["backend", "app", "server", 0, "id"], 40],
    [["backend", "app", "server", 1], 41],
    [["backend", "app", "server", 1, "address"], 43],
    [["backend", "quoted.name", "server", 0, "id"], 45],
    [["backend", "quoted.name", "server", 0, "key with spaces"], 46],
  ] as const)("%p is on line %p", (path, line) => {
    expect(where.lineOf(path)).toBe(line);
  });

  test("a key that is not written falls back to the table it belongs in", () => {
    expect(where.lineOf(["backend", "app", "server", 1, "weight"])).toBe(41);
    expect(where.lineOf(["backend", "app", "persist", "cookie"])).toBe(37);
    expect(where.lineOf(["listen", 0, "route", 0, "backend"])).toBe(10);
  });

  test("a path that is not written at all has no line", () => {
    expect(where.lineOf(["admin", "bind"])).toBeNull();
    expect(where.lineOf([])).toBeNull();
  });

  test("the text inside a multi-line string is not taken for tables", () => {
    expect(where.lineOf(["not"])).toBeNull();
    expect(where.lineOf(["backend", "app", "x"])).toBe(24); // only the table's own line
  });

  test("CRLF line endings", () => {
    const crlf = locate("a = 1\r\n[t]\r\nb = [\r\n 1,\r\n 2 ]\r\nc = 3\r\n");
    expect(crlf.lineOf(["t", "b", 1])).toBe(5);
    expect(crlf.lineOf(["t", "c"])).toBe(6);
  });

  test("agrees with Bun.TOML.parse on what the keys are", () => {
    const parsed = Bun.TOML.parse(TEXT) as Record<string, any>;
    expect(parsed.backend["quoted.name"].server[0].id).toBe("q");
    expect(parsed.backend["quoted.name"].server[0]["key with spaces"]).toBe(1);
    expect(parsed.listen[0].route[1].set_headers["X-Session-ID"]).toBe("cookie:SID");
  });
});

describe("formatPath", () => {
  test("dots, indexes and quoted keys", () => {
    expect(formatPath(["listen", 0, "route", 1, "backend"])).toBe("listen[0].route[1].backend");
    expect(formatPath(["backend", "app", "persist", "cokie"])).toBe("backend.app.persist.cokie");
    expect(formatPath(["set_headers", "X-Session-ID"])).toBe("set_headers.X-Session-ID");
    expect(formatPath(["backend", "my app", "server"])).toBe('backend."my app".server');
    expect(formatPath([])).toBe("");
  });
});

describe("syntaxErrorLine", () => {
  const lineOf = (text: string): number | null => {
    try {
      Bun.TOML.parse(text);
    } catch (e) {
      return syntaxErrorLine(text, e);
    }
    throw new Error("expected a syntax error");
  };

  test.each([
    ["a = 1\n\n[x]\ny = \nz = 2\n", 4],
    ["a = 1\nb = [\n 1,\n 2\n\n[t]\nk = 1\n", 6],
    ['a = 1\nb = "unterminated\nc = 2\n', 2],
    ['a = 1\nb = """\nnever closed\n', 2],
    ["[t]\nk = 1\n[u]\n[t]\nq = 2\n", 4],
    ["a = 1\na = 2\n", 2],
    ["[[a]]\nb = 1\n[a]\n", 3],
    ["a = 1\nbind = 127.0.0.1:8080", 2],
  ])("%p fails on line %p", (text, line) => {
    expect(lineOf(text)).toBe(line);
  });

  test("uses the error's own position when it carries one", () => {
    expect(syntaxErrorLine("whatever", { position: { line: 7, column: 3 } })).toBe(7);
  });
});
