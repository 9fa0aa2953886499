// Status-code sets as written in latch.toml (`[backend.X.health] expect`), parsed once at
// compile time into sorted, merged inclusive ranges.
//
// Syntax: a comma-separated list of items, each one of
//   "200"       one code
//   "200-299"   an inclusive range
//   "2xx"       a class (200-299); "X" is accepted too
// e.g. "200-399" (the default), "2xx,302", "200, 204, 301-308". Codes are 100..599. A TOML
// integer (`expect = 200`) means that one code.

/** Inclusive [low, high] pairs, sorted by low, non-overlapping and non-adjacent. */
export type StatusRanges = readonly (readonly [number, number])[];

const ITEM = /^(?:([1-5])[xX][xX]|([1-9]\d\d)(?:\s*-\s*([1-9]\d\d))?)$/;

/** "2xx,302" -> [[200, 299], [302, 302]]. Throws with a readable message. */
export function parseStatusRanges(text: string | number): StatusRanges {
  const src = typeof text === "number" ? String(text) : text;
  const items = src.split(",").map((s) => s.trim());
  if (items.length === 1 && items[0] === "") throw new Error(`empty status list; write e.g. "200", "2xx" or "200-299,302"`);
  const ranges: [number, number][] = [];
  for (const item of items) {
    const m = ITEM.exec(item);
    if (m === null) {
      throw new Error(
        item === ""
          ? `status list ${JSON.stringify(src)} has an empty item (a stray ",")`
          : `"${item}" is not a status code, range or class; write e.g. "200", "200-299" or "2xx"`,
      );
    }
    let lo: number;
    let hi: number;
    if (m[1] !== undefined) {
      lo = Number(m[1]) * 100;
      hi = lo + 99;
    } else {
      lo = Number(m[2]);
      hi = m[3] === undefined ? lo : Number(m[3]);
    }
    if (lo < 100 || lo > 599 || hi < 100 || hi > 599) throw new Error(`"${item}": status codes are 100 to 599`);
    if (hi < lo) throw new Error(`"${item}": a range is written low-high`);
    ranges.push([lo, hi]);
  }
  ranges.sort((a, b) => a[0] - b[0]);
  const merged: [number, number][] = [];
  for (const r of ranges) {
    const last = merged[merged.length - 1];
    if (last !== undefined && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
    else merged.push([r[0], r[1]]);
  }
  return Object.freeze(merged.map((r) => Object.freeze(r) as readonly [number, number]));
}

/** Whether `code` is in `ranges` (a handful of ranges: a linear scan). */
export function statusIn(ranges: StatusRanges, code: number): boolean {
  for (let i = 0; i < ranges.length; i++) {
    const r = ranges[i]!;
    if (code < r[0]) return false;
    if (code <= r[1]) return true;
  }
  return false;
}

/** [[200, 299], [302, 302]] -> "200-299,302": how the set reads in logs. */
export function formatStatusRanges(ranges: StatusRanges): string {
  return ranges.map(([lo, hi]) => (lo === hi ? String(lo) : `${lo}-${hi}`)).join(",");
}
