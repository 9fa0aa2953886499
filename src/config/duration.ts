// Durations and sizes as written in latch.toml. The config is the only place they appear as
// text: the compiled snapshot holds milliseconds and bytes (see src/core/types.ts).
//
// A unit is always required. A bare `30` could mean seconds (HAProxy's old `clitimeout`),
// milliseconds (HAProxy's `timeout client 30`) or bytes; guessing is how configs go wrong.

const DURATION_UNITS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

const SIZE_UNITS: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1024,
  mb: 1024 ** 2,
  gb: 1024 ** 3,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
};

// One part is a number with its unit: "500ms", "1.5s". Durations may chain parts, largest
// first, as Go's time.ParseDuration does: "1h30m".
const PART = /(\d+(?:\.\d+)?)([a-z]+)/gy;

/** "500ms" | "2s" | "30m" | "8h" | "1d" | "1h30m" -> milliseconds. Throws with a readable message. */
export function parseDuration(text: string): number {
  const s = text.trim();
  if (s === "") throw new Error(`empty duration; write e.g. "500ms", "2s", "30m", "8h" or "1d"`);
  if (/^\d+(\.\d+)?$/.test(s)) {
    throw new Error(`duration "${text}" has no unit; write e.g. "${s}s" or "${s}ms" (units: ms, s, m, h, d)`);
  }
  let total = 0;
  let at = 0;
  let lastScale = Infinity;
  PART.lastIndex = 0;
  for (let m = PART.exec(s); m !== null; m = PART.exec(s)) {
    const unit = m[2]!;
    const scale = DURATION_UNITS[unit];
    if (scale === undefined) {
      throw new Error(`duration "${text}": unknown unit "${unit}" (units: ms, s, m, h, d)`);
    }
    if (scale >= lastScale) {
      throw new Error(`duration "${text}": write the parts largest first, each unit once (e.g. "1h30m")`);
    }
    lastScale = scale;
    total += Number(m[1]) * scale;
    at = PART.lastIndex;
  }
  if (at !== s.length || at === 0) {
    throw new Error(`invalid duration "${text}"; write e.g. "500ms", "2s", "30m", "8h", "1d" or "1h30m"`);
  }
  const ms = Math.round(total);
  if (!Number.isSafeInteger(ms)) throw new Error(`duration "${text}" is too large`);
  return ms;
}

/** "512B" | "64KB" | "1MB" | "1GB" (KB = 1024 bytes; KiB/MiB/GiB accepted too) -> bytes. */
export function parseSize(text: string): number {
  const s = text.trim();
  const m = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/.exec(s);
  if (m === null) throw new Error(`invalid size "${text}"; write e.g. "512B", "64KB", "1MB" or "1GB"`);
  const unit = m[2]!;
  if (unit === "") {
    throw new Error(`size "${text}" has no unit; write e.g. "${m[1]}B" or "${m[1]}KB" (units: B, KB, MB, GB)`);
  }
  const scale = SIZE_UNITS[unit.toLowerCase()];
  if (scale === undefined) throw new Error(`size "${text}": unknown unit "${unit}" (units: B, KB, MB, GB)`);
  const bytes = Number(m[1]) * scale;
  if (!Number.isInteger(bytes)) throw new Error(`size "${text}" is not a whole number of bytes`);
  if (!Number.isSafeInteger(bytes)) throw new Error(`size "${text}" is too large`);
  return bytes;
}
