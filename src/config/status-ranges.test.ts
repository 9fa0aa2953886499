import { describe, expect, test } from "bun:test";
import { formatStatusRanges, parseStatusRanges, statusIn } from "./status-ranges.ts";

describe("parseStatusRanges", () => {
  test.each([
    ["200", [[200, 200]]],
    [200, [[200, 200]]],
    ["200-399", [[200, 399]]],
    ["2xx", [[200, 299]]],
    ["2XX", [[200, 299]]],
    ["200-299,302", [[200, 299], [302, 302]]],
    [" 302 , 2xx ", [[200, 299], [302, 302]]],
    ["2xx,3xx", [[200, 399]]], // adjacent ranges merge
    ["200-250, 240-260, 204", [[200, 260]]], // overlapping ranges merge
    ["404,200", [[200, 200], [404, 404]]], // sorted
    ["200 - 204", [[200, 204]]],
  ] as const)("%p", (text, want) => {
    expect(parseStatusRanges(text)).toEqual(want as unknown as [number, number][]);
  });

  test.each([
    ["", /empty status list/],
    ["200,", /empty item/],
    ["ok", /"ok" is not a status code, range or class/],
    ["6xx", /not a status code/],
    ["20", /not a status code/],
    ["2000", /not a status code/],
    ["600", /100 to 599/],
    ["299-200", /low-high/],
    ["200-", /not a status code/],
  ])("%p is refused", (text, msg) => {
    expect(() => parseStatusRanges(text)).toThrow(msg);
  });

  test("the result is frozen", () => {
    const r = parseStatusRanges("2xx,302");
    expect(Object.isFrozen(r)).toBe(true);
    expect(Object.isFrozen(r[0])).toBe(true);
  });
});

test("statusIn", () => {
  const r = parseStatusRanges("2xx,302,404");
  expect([199, 200, 250, 299, 300, 302, 303, 404, 405, 500].filter((c) => statusIn(r, c))).toEqual([200, 250, 299, 302, 404]);
  expect(statusIn(parseStatusRanges("200-399"), 399)).toBe(true);
});

test("formatStatusRanges", () => {
  expect(formatStatusRanges(parseStatusRanges("2xx, 302"))).toBe("200-299,302");
});
