// mod_session encoding: round trips, mod_session's decoding rules, garbage never throws.
import { describe, expect, test } from "bun:test";
import { canonical, decode, encode } from "./codec.ts";

const map = (o: Record<string, string>) => new Map(Object.entries(o));

describe("round trips", () => {
  const cases: Record<string, string>[] = [
    {},
    { user: "alice" },
    { user: "alice", role: "admin", cart: "1,2,3" },
    { "key with space": "value with space", "a=b": "c&d", "100%": "+plus+" },
    { 日本語: "セッション", emoji: "🍣", accents: "élève" },
    { quotes: `"'<>`, slash: "/a/b?c=d#e", newline: "line1\r\nline2", nul: "a\u0000b" },
  ];
  for (const c of cases) {
    test(JSON.stringify(c), () => {
      const text = encode(map(c));
      expect(decode(text)).toEqual(map(c));
      // what goes into a header is printable ASCII
      expect(text).toMatch(/^[\x21-\x7e]*$/);
      expect(canonical(text)).toBe(text);
    });
  }

  test("space is +, as form encoding has it", () => {
    expect(encode(map({ a: "x y" }))).toBe("a=x+y");
    expect(decode("a=x+y").get("a")).toBe("x y");
    expect(decode("a=x%20y").get("a")).toBe("x y");
    expect(decode("a=x%2By").get("a")).toBe("x+y");
  });

  test("order is kept", () => {
    expect(encode(map({ b: "2", a: "1", c: "3" }))).toBe("b=2&a=1&c=3");
  });

  test("a lone surrogate does not throw", () => {
    expect(() => encode(map({ bad: "\ud800x" }))).not.toThrow();
    expect(decode(encode(map({ bad: "\ud800x" }))).get("bad")).toBe("\ufffdx");
  });
});

describe("decoding follows mod_session", () => {
  test("empty pairs are skipped", () => {
    expect(decode("&&a=1&&&b=2&")).toEqual(map({ a: "1", b: "2" }));
  });
  test("the value is everything after the first =", () => {
    expect(decode("a=b=c")).toEqual(map({ a: "b=c" }));
  });
  test("a key without value, or with an empty one, is unset", () => {
    expect(decode("a=1&b=2&a")).toEqual(map({ b: "2" }));
    expect(decode("a=1&b=2&a=")).toEqual(map({ b: "2" }));
    expect(decode("a")).toEqual(new Map());
  });
  test("the last of a repeated key wins", () => {
    expect(decode("a=1&a=2")).toEqual(map({ a: "2" }));
  });
  test("an empty key is skipped", () => {
    expect(decode("=1&b=2")).toEqual(map({ b: "2" }));
  });
  test("a pair with a bad escape is skipped whole", () => {
    expect(decode("a=%zz&b=2&c%=3&d=%e3%81")).toEqual(map({ b: "2" }));
  });
  test("empty keys and values are left out when encoding", () => {
    expect(encode(map({ a: "", "": "x", b: "1" }))).toBe("b=1");
  });
});

describe("garbage never throws and decodes to what is valid in it", () => {
  test("non-strings", () => {
    for (const x of [null, undefined, 42, {}, [], true] as unknown[]) {
      expect(decode(x as string)).toEqual(new Map());
      expect(canonical(x as string)).toBe("");
    }
  });
  test("random bytes", () => {
    let seed = 12345;
    const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
    for (let i = 0; i < 2000; i++) {
      const len = rnd() % 64;
      let s = "";
      for (let j = 0; j < len; j++) s += String.fromCharCode(rnd() % 3 === 0 ? "%&=+"[rnd() % 4]!.charCodeAt(0) : rnd() % 0x3000);
      expect(() => canonical(s)).not.toThrow();
      const c = canonical(s);
      expect(canonical(c)).toBe(c);
    }
  });
  test("canonical spelling", () => {
    expect(canonical("b=%7e&a=x%20y&&z")).toBe("b=~&a=x+y");
    expect(canonical("")).toBe("");
    expect(canonical("&&&")).toBe("");
  });
});
