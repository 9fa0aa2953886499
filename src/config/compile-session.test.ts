// [session.NAME] in config compile: passphrase rules with file:line, per-store keys,
// lifetimes, defaults, and the runtime a route gets.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import type { SessionView } from "../session/session.ts";
import { ConfigError, type ConfigIssue, formatIssue, loadConfigText } from "./index.ts";

const GOOD = "a passphrase of thirty characters";

const BASE = `[[listen]]
name = "web"
bind = "127.0.0.1:8080"

  [[listen.route]]
  backend = "app"

[backend.app]

  [[backend.app.server]]
  id = "ap01"
  address = "127.0.0.1:9001"
`;

function issuesOf(text: string): ConfigIssue[] {
  try {
    loadConfigText(text, "latch.toml", "/etc/latch");
  } catch (e) {
    if (e instanceof ConfigError) return [...e.issues];
    throw e;
  }
  throw new Error("expected a ConfigError");
}

function lineOf(text: string, needle: string): number {
  const i = text.split("\n").findIndex((l) => l.includes(needle));
  if (i === -1) throw new Error(`"${needle}" not in text`);
  return i + 1;
}

const session = (body: string, name = "main") => `${BASE}\n[session.${name}]\n${body}\n`;

describe("passphrases", () => {
  test("shorter than 16 characters: refused with key path and line, never echoed", () => {
    const text = session(`store = "cookie"\npassphrases = ["${GOOD}", "short secret"]`);
    const issues = issuesOf(text);
    expect(issues).toHaveLength(1);
    expect(issues[0]!.path).toBe("session.main.passphrases[1]");
    expect(issues[0]!.line).toBe(lineOf(text, "passphrases ="));
    expect(formatIssue(issues[0]!)).toBe(
      `latch.toml:${lineOf(text, "passphrases =")}: session.main.passphrases[1]: passphrase 2 is 12 characters long; use at least 16 (a random one: openssl rand -base64 32)`,
    );
    expect(formatIssue(issues[0]!)).not.toContain("short secret");
  });

  test("CONFIG.md's example passphrases are too short", () => {
    const text = session(`passphrases = ["current secret", "previous secret"]`);
    expect(issuesOf(text).map((i) => i.path)).toEqual(["session.main.passphrases[0]", "session.main.passphrases[1]"]);
  });

  test("one per line: each issue on its own line", () => {
    const text = session(`passphrases = [\n  "${GOOD}",\n  "tiny",\n]`);
    const issues = issuesOf(text);
    expect(issues).toHaveLength(1);
    expect(issues[0]!.path).toBe("session.main.passphrases[1]");
    const line = issues[0]!.line!;
    expect([lineOf(text, '"tiny"'), lineOf(text, "passphrases =")]).toContain(line);
  });

  test("characters, not bytes: 16 Japanese characters are enough, 15 are not", () => {
    expect(issuesOf(session(`passphrases = ["${"鍵".repeat(15)}"]`))[0]!.message).toContain("15 characters");
    expect(loadConfigText(session(`passphrases = ["${"鍵".repeat(16)}"]`), "t.toml", "/tmp").sessions.size).toBe(1);
  });

  test("the cookie store needs one; repeats are refused", () => {
    const none = session(`store = "cookie"`);
    expect(issuesOf(none)).toMatchObject([{ path: "session.main.passphrases", message: expect.stringContaining('store = "cookie" needs passphrases') }]);
    expect(issuesOf(session(`passphrases = ["${GOOD}", "${GOOD}"]`))).toMatchObject([
      { path: "session.main.passphrases[1]", message: "passphrase 2 repeats passphrase 1" },
    ]);
  });

  test("server-side stores take none", () => {
    expect(issuesOf(session(`store = "sqlite"\nidle = "30m"\npassphrases = ["${GOOD}"]`))).toMatchObject([
      { path: "session.main.passphrases", message: expect.stringContaining("only used by store = \"cookie\"") },
    ]);
  });
});

describe("other rules", () => {
  test("server-side stores need idle or max_age", () => {
    const text = session(`store = "redis"`);
    expect(issuesOf(text)).toMatchObject([{ path: "session.main.store", line: lineOf(text, 'store = "redis"') }]);
    expect(loadConfigText(session(`store = "redis"\nmax_age = "8h"`), "t.toml", "/tmp").sessions.get("main")!.options.store).toBe("redis");
  });

  test("redis = only with store = redis, and a Redis URL", () => {
    expect(issuesOf(session(`passphrases = ["${GOOD}"]\nredis = "redis://10.0.0.1:6379"`))).toMatchObject([{ path: "session.main.redis" }]);
    expect(issuesOf(session(`store = "redis"\nidle = "30m"\nredis = "http://10.0.0.1"`))).toMatchObject([
      { path: "session.main.redis", message: expect.stringContaining("is not a Redis URL") },
    ]);
  });

  test("update_interval must be shorter than idle", () => {
    const text = session(`passphrases = ["${GOOD}"]\nidle = "1m"\nupdate_interval = "2m"`);
    expect(issuesOf(text)).toMatchObject([{ path: "session.main.update_interval", line: lineOf(text, "update_interval") }]);
  });

  test("renew_header and update_header differ", () => {
    expect(issuesOf(session(`passphrases = ["${GOOD}"]\nrenew_header = "x-replace-session"`))).toMatchObject([{ path: "session.main.renew_header" }]);
  });

  test("__Host- cookies: Secure, Path=/, no Domain", () => {
    const text = session(`passphrases = ["${GOOD}"]\ncookie = "__Host-s"\nsecure = false\npath = "/app"\ndomain = "example.com"`);
    expect(issuesOf(text).map((i) => i.path)).toEqual(["session.main.secure", "session.main.path", "session.main.domain"]);
    const ok = loadConfigText(session(`passphrases = ["${GOOD}"]\ncookie = "__Host-s"`), "t.toml", "/tmp");
    expect(ok.sessions.get("main")!.runtime(false).secure).toBe(true);
  });

  test("schema: unknown keys and bad values", () => {
    expect(issuesOf(session(`passphrases = ["${GOOD}"]\nrenew = "X"`))[0]!.message).toContain("unknown key");
    expect(issuesOf(session(`passphrases = ["${GOOD}"]\nsamesite = "sometimes"`))[0]!.path).toBe("session.main.samesite");
    expect(issuesOf(session(`passphrases = ["${GOOD}"]\npath = "app"`))[0]!.path).toBe("session.main.path");
    expect(issuesOf(session(`passphrases = ["${GOOD}"]\nupdate_interval = 60`))[0]!.path).toBe("session.main.update_interval");
  });

  test("a route naming a session that does not exist", () => {
    const text = BASE.replace('backend = "app"', 'backend = "app"\n  session = "nope"');
    expect(issuesOf(text)).toMatchObject([{ path: "listen[0].route[0].session", message: "no [session.nope] table" }]);
  });
});

describe("what compile builds", () => {
  test("defaults", () => {
    const c = loadConfigText(session(`passphrases = ["${GOOD}"]`), "t.toml", "/etc/latch");
    const m = c.sessions.get("main")!;
    expect(m.options).toMatchObject({
      store: "cookie",
      cookie: "session",
      maxAge: 0,
      idle: 0,
      updateInterval: 60_000,
      header: "X-Session",
      updateHeader: "X-Replace-Session",
      renewHeader: "X-Session-Renew",
      path: "/",
      domain: null,
      httponly: true,
      secure: null,
      samesite: "Lax",
      redis: "redis://127.0.0.1:6379",
      file: join("/etc/latch", ".latch", "sessions-main.sqlite"),
    });
    expect(m.sealer!.keys).toHaveLength(1);
  });

  test("every key", () => {
    const c = loadConfigText(
      session(`store = "redis"
cookie = "SID"
max_age = "8h"
idle = "30m"
update_interval = "5m"
header = "X-App-Session"
update_header = "X-App-Update"
renew_header = "X-App-Renew"
redis = "redis://10.0.0.5:6380"
path = "/shop"
domain = "example.com"
httponly = false
secure = true
samesite = "strict"`),
      "t.toml",
      "/tmp",
    );
    expect(c.sessions.get("main")!.options).toMatchObject({
      store: "redis",
      cookie: "SID",
      maxAge: 8 * 3600_000,
      idle: 30 * 60_000,
      updateInterval: 5 * 60_000,
      header: "X-App-Session",
      updateHeader: "X-App-Update",
      renewHeader: "X-App-Renew",
      redis: "redis://10.0.0.5:6380",
      path: "/shop",
      domain: "example.com",
      httponly: false,
      secure: true,
      samesite: "Strict",
    });
  });

  test("sqlite file under state_dir, relative to the config file", () => {
    const c = loadConfigText(`[global]\nstate_dir = "state"\n${session(`store = "sqlite"\nidle = "1h"`, "shop")}`, "t.toml", "/srv/latch");
    expect(c.sessions.get("shop")!.options.file).toBe("/srv/latch/state/sessions-shop.sqlite");
  });

  test("Secure follows the listener's TLS unless set", () => {
    const c = loadConfigText(session(`passphrases = ["${GOOD}"]`), "t.toml", "/tmp");
    const m = c.sessions.get("main")!;
    expect(m.runtime(true).secure).toBe(true);
    expect(m.runtime(false).secure).toBe(false);
    expect(Buffer.from((m.runtime(true) as SessionView).deleteLine).toString()).toContain("; Secure");
  });

  test("routes without a session have session = null", () => {
    const c = loadConfigText(BASE, "t.toml", "/tmp");
    expect(c.listeners[0]!.routes[0]!.session).toBeNull();
    expect(c.sessions.size).toBe(0);
  });
});
