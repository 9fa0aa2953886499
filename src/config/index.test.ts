// Loading from text and files: syntax errors, relative paths, the demo and the shipped example.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, demoConfigText, formatIssue, loadConfigFile, loadConfigText } from "./index.ts";

const dir = mkdtempSync(join(tmpdir(), "latch-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error("expected a ConfigError");
}

describe("TOML syntax errors", () => {
  test("name the file and the line", () => {
    const text = '[[listen]]\nname = "web"\nbind = 127.0.0.1:8080\n';
    const e = errorOf(() => loadConfigText(text, "conf/latch.toml"));
    expect(e.issues).toHaveLength(1);
    expect(e.issues[0]).toMatchObject({ file: "conf/latch.toml", line: 3, path: "" });
    expect(e.message).toStartWith("conf/latch.toml:3: TOML syntax error: ");
  });

  test("a duplicate table", () => {
    const e = errorOf(() => loadConfigText("[global]\nworkers = 1\n\n[global]\n", "x.toml"));
    expect(e.message).toBe("x.toml:4: TOML syntax error: Cannot redefine table 'global'");
  });
});

describe("ConfigError", () => {
  test("is an Error listing file:line: path: message, one issue per line", () => {
    const e = new ConfigError([
      { file: "a.toml", line: 3, path: "listen[0].bind", message: "bad" },
      { file: "a.toml", line: null, path: "listen", message: "missing" },
      { file: "a.toml", line: 1, path: "", message: "whole file" },
    ]);
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe("ConfigError");
    expect(e.message).toBe("a.toml:3: listen[0].bind: bad\na.toml: listen: missing\na.toml:1: whole file");
    expect(formatIssue(e.issues[0]!)).toBe("a.toml:3: listen[0].bind: bad");
  });
});

describe("loadConfigFile", () => {
  test("resolves tls files and state_dir against the config file's directory", () => {
    writeFileSync(join(dir, "cert.pem"), "x");
    writeFileSync(join(dir, "key.pem"), "x");
    const file = join(dir, "latch.toml");
    writeFileSync(
      file,
      `[global]\nstate_dir = "var/state"\n\n[[listen]]\nbind = "127.0.0.1:8443"\ntls = { cert = "cert.pem", key = "./key.pem" }\n` +
        `  [[listen.route]]\n  backend = "b"\n\n[backend.b]\n  [[backend.b.server]]\n  id = "s1"\n  address = "127.0.0.1:9001"\n`,
    );
    const c = loadConfigFile(file);
    expect(c.source).toBe(file);
    expect(c.stateDir).toBe(join(dir, "var/state"));
    expect(c.listeners[0]!.tls).toEqual({ cert: join(dir, "cert.pem"), key: join(dir, "key.pem") });
    expect(Object.isFrozen(c)).toBe(true);
  });

  test("a missing file", () => {
    const e = errorOf(() => loadConfigFile(join(dir, "nope.toml")));
    expect(e.issues).toEqual([{ file: join(dir, "nope.toml"), line: null, path: "", message: "file not found" }]);
  });

  test("errors name the file as it was given", () => {
    const file = join(dir, "bad.toml");
    writeFileSync(file, '[[listen]]\nbind = "127.0.0.1:8080"\nbnid = 1\n');
    const e = errorOf(() => loadConfigFile(file));
    expect(e.message).toContain(`${file}:3: listen[0].bnid: unknown key (did you mean "bind"?)`);
  });
});

describe("shipped configs", () => {
  test("examples/latch.toml is valid in this build", () => {
    const c = loadConfigFile(join(import.meta.dir, "../../examples/latch.toml"));
    expect(c.backends.get("app")!.persist!.mode).toBe("insert");
    expect(c.listeners[0]!.routes.length).toBeGreaterThanOrEqual(2);
    expect(c.backends.size).toBe(2);
  });

  test("demoConfigText: listener, two servers, cookie insert SRV indirect nocache httponly", () => {
    const c = loadConfigText(demoConfigText([9101, 9102], 8099), "<demo>");
    expect(c.listeners).toHaveLength(1);
    expect(c.listeners[0]).toMatchObject({ host: "127.0.0.1", port: 8099 });
    const b = c.backends.get("demo")!;
    expect(b.balance.kind).toBe("roundrobin");
    expect(b.servers.map((s) => [s.id, s.host, s.port])).toEqual([
      ["ap01", "127.0.0.1", 9101],
      ["ap02", "127.0.0.1", 9102],
    ]);
    expect(b.persist).toMatchObject({ mode: "insert", cookie: "SRV", indirect: true, nocache: true, attributes: "; Path=/; HttpOnly" });
    expect(c.listeners[0]!.routes[0]!.backend).toBe(b);
  });
});
