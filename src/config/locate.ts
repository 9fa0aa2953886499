// Where a key is written in the TOML text.
//
// Bun.TOML.parse returns plain values with no positions, and its SyntaxError carries the
// position of the JavaScript caller, not of the TOML text. So `latch check` finds lines itself:
// a small scanner walks the raw text with the TOML grammar (tables, arrays of tables, dotted
// keys, strings of the four kinds, multi-line arrays, inline tables) and records the line
// where every key path is written. It only runs after Bun.TOML.parse has accepted the text,
// so it can stay forgiving: on anything unexpected it skips to the next line, never throws.

/** A key path as valibot and compile report it: ["backend", "app", "server", 1, "address"]. */
export type KeyPath = readonly (string | number)[];

export interface Locator {
  /**
   * 1-based line where `path` is written. A path that is not written (a missing required key,
   * a default) falls back to its nearest written ancestor: the table it belongs in. null when
   * nothing of it is written.
   */
  lineOf(path: KeyPath): number | null;
}

/** "listen[0].route[1].backend", with keys that are not bare TOML keys quoted. */
export function formatPath(path: KeyPath): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else {
      const key = /^[A-Za-z0-9_-]+$/.test(seg) ? seg : JSON.stringify(seg);
      out += out === "" ? key : `.${key}`;
    }
  }
  return out;
}

export function locate(text: string): Locator {
  const lines = scan(text);
  return {
    lineOf(path) {
      for (let n = path.length; n > 0; n--) {
        const line = lines.get(JSON.stringify(path.slice(0, n)));
        if (line !== undefined) return line.line;
      }
      return null;
    },
  };
}

/**
 * Line of a Bun.TOML.parse failure. Uses the error's own position when it has one (Bun's
 * module loader gives `position.line`; Bun.TOML.parse does not). Otherwise finds the longest
 * prefix of whole lines that parses, or fails differently: the error is on the line after
 * it. Every prefix from the bad line on fails with the same message, because the parser stops
 * at the first error; an unterminated multi-line string or array is reported where it opens.
 */
export function syntaxErrorLine(text: string, error: unknown): number | null {
  const pos = (error as { position?: { line?: unknown } } | null)?.position;
  if (pos !== undefined && typeof pos?.line === "number" && pos.line > 0) return pos.line;
  const message = errorMessage(error);
  // Prefixes keep their newline: "y =" cut before its newline fails differently from "y =\n".
  const ends: number[] = [];
  for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) ends.push(i + 1);
  // Each probe parses a prefix: quadratic in the worst case, so give up on huge files.
  if (ends.length > 20_000) return null;
  for (let k = ends.length; k >= 1; k--) {
    const prefix = text.slice(0, ends[k - 1]);
    try {
      Bun.TOML.parse(prefix);
      return k + 1;
    } catch (e) {
      if (errorMessage(e) !== message) return k + 1;
    }
  }
  return 1;
}

/** Bun's message without its "TOML Parse error: " prefix. */
export function errorMessage(error: unknown): string {
  const m = error instanceof Error ? error.message : String(error);
  return m.replace(/^TOML Parse error:\s*/, "");
}

// ---------------------------------------------------------------------------------------------
// The scanner

interface Mark {
  line: number;
  /** written as a key or header (as opposed to a table only implied by a longer key) */
  explicit: boolean;
}

function scan(text: string): Map<string, Mark> {
  const marks = new Map<string, Mark>();
  /** arrays of tables by resolved path: how many elements so far */
  const aot = new Map<string, number>();
  const n = text.length;
  let i = 0;
  let line = 1;

  const mark = (path: KeyPath, at: number, explicit: boolean): void => {
    const key = JSON.stringify(path);
    const old = marks.get(key);
    if (old === undefined || (explicit && !old.explicit)) marks.set(key, { line: at, explicit });
  };
  /** marks `path` and, implicitly, every prefix longer than `from` */
  const markKey = (path: KeyPath, from: number, at: number): void => {
    for (let k = from + 1; k < path.length; k++) mark(path.slice(0, k), at, false);
    mark(path, at, true);
  };

  const skipSpaces = (): void => {
    while (i < n && (text[i] === " " || text[i] === "\t")) i++;
  };
  const skipToEol = (): void => {
    while (i < n && text[i] !== "\n") i++;
  };
  /** spaces, newlines and comments: what may sit between array elements */
  const skipBlank = (): void => {
    while (i < n) {
      const c = text[i];
      if (c === " " || c === "\t" || c === "\r") i++;
      else if (c === "\n") {
        line++;
        i++;
      } else if (c === "#") skipToEol();
      else break;
    }
  };

  /** A quoted string starting at i (the opening quote); returns its value, leaves i after it. */
  const readString = (): string => {
    const q = text[i]!;
    const multi = text.startsWith(q + q + q, i);
    i += multi ? 3 : 1;
    let out = "";
    while (i < n) {
      const c = text[i]!;
      if (multi ? text.startsWith(q + q + q, i) : c === q) {
        i += multi ? 3 : 1;
        // `""""` closes with one quote of content: up to two extra quotes belong to the value
        if (multi) for (let extra = 0; extra < 2 && text[i] === q; extra++, i++) out += q;
        return out;
      }
      if (c === "\n") {
        if (!multi) return out; // unterminated; the parser would have refused it
        line++;
      }
      if (c === "\\" && q === '"') {
        const e = text[i + 1];
        const simple: Record<string, string> = { b: "\b", t: "\t", n: "\n", f: "\f", r: "\r", e: "\x1b", '"': '"', "\\": "\\" };
        if (e !== undefined && simple[e] !== undefined) {
          out += simple[e];
          i += 2;
          continue;
        }
        if (e === "u" || e === "U" || e === "x") {
          const len = e === "u" ? 4 : e === "U" ? 8 : 2;
          out += String.fromCodePoint(parseInt(text.slice(i + 2, i + 2 + len), 16) || 0);
          i += 2 + len;
          continue;
        }
        // line-ending backslash in a multi-line string: the newline is consumed by the loop
        i++;
        continue;
      }
      out += c;
      i++;
    }
    return out;
  };

  /** A dotted key: bare, "basic" or 'literal' parts. null if there is none at i. */
  const readKey = (): string[] | null => {
    const parts: string[] = [];
    for (;;) {
      skipSpaces();
      const c = text[i];
      if (c === '"' || c === "'") parts.push(readString());
      else {
        const start = i;
        while (i < n && /[A-Za-z0-9_-]/.test(text[i]!)) i++;
        if (i === start) return null;
        parts.push(text.slice(start, i));
      }
      skipSpaces();
      if (text[i] !== ".") return parts;
      i++;
    }
  };

  /** Skips one value starting at i, marking the elements of arrays and keys of inline tables. */
  const skipValue = (path: KeyPath): void => {
    const c = text[i];
    if (c === '"' || c === "'") {
      readString();
      return;
    }
    if (c === "[") {
      i++;
      for (let index = 0; ; index++) {
        skipBlank();
        if (i >= n) return;
        if (text[i] === "]") {
          i++;
          return;
        }
        mark([...path, index], line, true);
        const before = i;
        skipValue([...path, index]);
        skipBlank();
        if (text[i] === ",") i++;
        else if (text[i] !== "]" && i === before) return; // not TOML; give up on this value
      }
    }
    if (c === "{") {
      i++;
      for (;;) {
        skipBlank();
        if (i >= n) return;
        if (text[i] === "}") {
          i++;
          return;
        }
        const at = line;
        const key = readKey();
        if (key === null) return;
        const full = [...path, ...key];
        markKey(full, path.length, at);
        skipSpaces();
        if (text[i] !== "=") return;
        i++;
        skipSpaces();
        skipValue(full);
        skipBlank();
        if (text[i] === ",") i++;
      }
    }
    // number, boolean, date-time (which may hold a space): up to a delimiter
    while (i < n && !",]}#\n".includes(text[i]!)) i++;
  };

  /** Resolves a header's key: a segment naming an array of tables means its last element. */
  const resolve = (segs: readonly string[]): (string | number)[] => {
    const out: (string | number)[] = [];
    for (const s of segs) {
      out.push(s);
      const count = aot.get(JSON.stringify(out));
      if (count !== undefined) out.push(count - 1);
    }
    return out;
  };

  let table: KeyPath = [];
  while (i < n) {
    skipSpaces();
    const c = text[i];
    if (c === "\n") {
      line++;
      i++;
      continue;
    }
    if (c === "\r" || c === "#") {
      skipToEol();
      continue;
    }
    if (c === "[") {
      const isArray = text[i + 1] === "[";
      i += isArray ? 2 : 1;
      const key = readKey();
      if (key !== null) {
        if (isArray) {
          const arr = [...resolve(key.slice(0, -1)), key[key.length - 1]!];
          const k = JSON.stringify(arr);
          const count = aot.get(k) ?? 0;
          aot.set(k, count + 1);
          table = [...arr, count];
          for (let p = 1; p <= arr.length; p++) mark(arr.slice(0, p), line, false);
          mark(table, line, true);
        } else {
          table = resolve(key);
          for (let p = 1; p < table.length; p++) mark(table.slice(0, p), line, false);
          mark(table, line, true);
        }
      }
      skipToEol();
      continue;
    }
    const at = line;
    const key = readKey();
    if (key !== null) {
      skipSpaces();
      if (text[i] === "=") {
        i++;
        skipSpaces();
        const full = [...table, ...key];
        markKey(full, table.length, at);
        skipValue(full);
      }
    }
    skipToEol();
  }
  return marks;
}
