import { describe, expect, test } from "bun:test";
import { parseDuration, parseSize } from "./duration.ts";

describe("parseDuration", () => {
  test.each([
    ["500ms", 500],
    ["0s", 0],
    ["2s", 2000],
    ["1.5s", 1500],
    ["30m", 1_800_000],
    ["8h", 28_800_000],
    ["1d", 86_400_000],
    ["1h30m", 5_400_000],
    ["1m30s", 90_000],
    [" 2s ", 2000],
  ])("%p -> %p ms", (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  test("a bare number is refused with a hint, not guessed", () => {
    expect(() => parseDuration("30")).toThrow(/no unit.*"30s"/);
  });

  test.each(["", "s", "2x", "2 s", "-1s", "2s3", "1s1h", "1m1m", "2S", "1e3ms"])("%p is refused", (text) => {
    expect(() => parseDuration(text)).toThrow();
  });

  test("unknown unit is named", () => {
    expect(() => parseDuration("5w")).toThrow(/unknown unit "w"/);
  });
});

describe("parseSize", () => {
  test.each([
    ["512B", 512],
    ["64KB", 65_536],
    ["1MB", 1_048_576],
    ["1GB", 1_073_741_824],
    ["1.5KB", 1536],
    ["8kb", 8192],
    ["4KiB", 4096],
    ["0B", 0],
  ])("%p -> %p bytes", (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  test("a bare number is refused with a hint", () => {
    expect(() => parseSize("1024")).toThrow(/no unit.*"1024B"/);
  });

  test.each(["", "KB", "1.5B", "-1KB", "1TB", "1 K B", "x1KB"])("%p is refused", (text) => {
    expect(() => parseSize(text)).toThrow();
  });
});
