// Loading a config: TOML text -> schema -> compile -> frozen CompiledConfig, or a ConfigError
// that lists every problem as `file:line: key.path: message`, the way compilers do, so
// `latch check` output can be clicked through in an editor.
//
// Nothing here is imported by the forwarding core; the CLI and the reload path call it.

import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import * as v from "valibot";
import type { CompiledConfig } from "../core/types.ts";
import { compile, type CompileIssue } from "./compile.ts";
import { errorMessage, formatPath, locate, syntaxErrorLine, type Locator } from "./locate.ts";
import { configSchema } from "./schema.ts";

export interface ConfigIssue {
  readonly file: string;
  /** 1-based; null when the problem is not tied to a written key (e.g. the file is unreadable) */
  readonly line: number | null;
  /** "listen[0].route[1].backend"; "" for the file as a whole */
  readonly path: string;
  readonly message: string;
}

export class ConfigError extends Error {
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[]) {
    super(issues.map(formatIssue).join("\n"));
    this.name = "ConfigError";
    this.issues = issues;
  }
}

export function formatIssue(issue: ConfigIssue): string {
  const where = issue.line === null ? issue.file : `${issue.file}:${issue.line}`;
  return issue.path === "" ? `${where}: ${issue.message}` : `${where}: ${issue.path}: ${issue.message}`;
}

/**
 * Compiles config text. `file` names it in errors and in CompiledConfig.source; relative paths
 * in the config (tls files, state_dir) are resolved against `baseDir`, by default the
 * directory of `file`.
 */
export function loadConfigText(text: string, file: string, baseDir: string = dirname(resolve(file))): CompiledConfig {
  let raw: unknown;
  try {
    raw = Bun.TOML.parse(text);
  } catch (e) {
    throw new ConfigError([{ file, line: syntaxErrorLine(text, e), path: "", message: `TOML syntax error: ${errorMessage(e)}` }]);
  }
  const where = locate(text);

  const checked = v.safeParse(configSchema, raw);
  if (!checked.success) {
    const issues = checked.issues.map((i) => ({ path: (i.path ?? []).map((p) => p.key as string | number), message: i.message }));
    throw new ConfigError(toConfigIssues(issues, file, where));
  }

  const result = compile(checked.output, { source: file, baseDir });
  if (result.config === null) throw new ConfigError(toConfigIssues(result.issues, file, where));
  return result.config;
}

/** Reads and compiles a config file; CompiledConfig.source is its absolute path (reload re-reads it). */
export function loadConfigFile(path: string): CompiledConfig {
  const absolute = resolve(path);
  let text: string;
  try {
    text = readFileSync(absolute, "utf8");
  } catch (e) {
    const reason = (e as NodeJS.ErrnoException).code === "ENOENT" ? "file not found" : `cannot read: ${(e as Error).message}`;
    throw new ConfigError([{ file: path, line: null, path: "", message: reason }]);
  }
  const config = loadConfigText(text, path, dirname(absolute));
  return Object.freeze({ ...config, source: absolute });
}

function toConfigIssues(issues: readonly CompileIssue[], file: string, where: Locator): ConfigIssue[] {
  return issues
    .map((i) => ({ file, line: where.lineOf(i.path), path: formatPath(i.path), message: i.message }))
    .sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
}

/**
 * The config behind `latch run --demo`: two local backends behind a cookie-insert listener,
 * the smallest setup that shows stickiness (see examples/latch.toml for a documented one).
 */
export function demoConfigText(backendPorts: [number, number], listenPort: number): string {
  return `# latch run --demo
[[listen]]
name = "demo"
bind = "127.0.0.1:${listenPort}"

  [[listen.route]]
  path = "/"
  backend = "demo"

[backend.demo]
balance = "roundrobin"

  [backend.demo.persist]
  mode = "insert"
  cookie = "SRV"
  indirect = true
  nocache = true
  httponly = true

  [[backend.demo.server]]
  id = "ap01"
  address = "127.0.0.1:${backendPorts[0]}"

  [[backend.demo.server]]
  id = "ap02"
  address = "127.0.0.1:${backendPorts[1]}"
`;
}
