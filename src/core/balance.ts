// Server selection for a backend: the "balance" step of the pipeline, used for every request
// that persistence did not already place. Hot path: synchronous, no allocation, no closures.
//
// Contract (test/conformance/balance/balance.test.ts runs it against every algorithm):
// - only servers that are eligible() and have weight > 0 are chosen;
// - primaries first; backups (Apache `status=+H`) only when no primary can take the request;
// - `exclude` (a server index, or -1) is treated as ineligible for this call: a retry goes to
//   another server or, if none is left, to a backup or to null; never back to `exclude`;
// - null means nothing can take the request: the caller answers 503 (or queues).
//
// Mutable state touched: ServerState.rrCurrent (roundrobin) and backend.rr.next (leastconn
// tie rotation). Both are plain numbers on long-lived objects, so a pick allocates nothing.

import { clock } from "./clock.ts";
import type { CompiledBackend, CompiledServer } from "./types.ts";

/** Ring points per unit of weight (as Ketama/HAProxy: enough for ~±10% spread with few servers). */
const POINTS_PER_WEIGHT = 160;

// ---------------------------------------------------------------------------------------------
// Hashing: xxHash32, seed 0, bit-identical to Bun.hash.xxHash32 over the same bytes.
// Written out in JS because Bun.hash.xxHash32(buf.subarray(a, b)) allocates a view per call
// and costs ~50 ns for 32 bytes; this loop costs ~15 ns and allocates nothing.

const P1 = 2654435761 | 0;
const P2 = 2246822519 | 0;
const P3 = 3266489917 | 0;
const P4 = 668265263;
const P5 = 374761393;

function round(acc: number, lane: number): number {
  acc = (acc + Math.imul(lane, P2)) | 0;
  acc = (acc << 13) | (acc >>> 19);
  return Math.imul(acc, P1);
}

function avalanche(h: number): number {
  h ^= h >>> 15;
  h = Math.imul(h, P2);
  h ^= h >>> 13;
  h = Math.imul(h, P3);
  h ^= h >>> 16;
  return h >>> 0;
}

/** xxHash32 (seed 0) of buf[start, end), as Bun.hash.xxHash32(buf.subarray(start, end)) >>> 0. */
export function hashKey(buf: Uint8Array, start: number, end: number): number {
  const len = end - start;
  let p = start;
  let h: number;
  if (len >= 16) {
    let v1 = (P1 + P2) | 0;
    let v2 = P2;
    let v3 = 0;
    let v4 = -P1 | 0;
    const limit = end - 16;
    do {
      v1 = round(v1, buf[p]! | (buf[p + 1]! << 8) | (buf[p + 2]! << 16) | (buf[p + 3]! << 24));
      v2 = round(v2, buf[p + 4]! | (buf[p + 5]! << 8) | (buf[p + 6]! << 16) | (buf[p + 7]! << 24));
      v3 = round(v3, buf[p + 8]! | (buf[p + 9]! << 8) | (buf[p + 10]! << 16) | (buf[p + 11]! << 24));
      v4 = round(v4, buf[p + 12]! | (buf[p + 13]! << 8) | (buf[p + 14]! << 16) | (buf[p + 15]! << 24));
      p += 16;
    } while (p <= limit);
    h = (((v1 << 1) | (v1 >>> 31)) + ((v2 << 7) | (v2 >>> 25)) + ((v3 << 12) | (v3 >>> 20)) + ((v4 << 18) | (v4 >>> 14))) | 0;
  } else {
    h = P5;
  }
  h = (h + len) | 0;
  while (p + 4 <= end) {
    h = (h + Math.imul(buf[p]! | (buf[p + 1]! << 8) | (buf[p + 2]! << 16) | (buf[p + 3]! << 24), P3)) | 0;
    h = Math.imul((h << 17) | (h >>> 15), P4);
    p += 4;
  }
  while (p < end) {
    h = (h + Math.imul(buf[p]!, P5)) | 0;
    h = Math.imul((h << 11) | (h >>> 21), P1);
    p++;
  }
  return avalanche(h);
}

/**
 * xxHash32 (seed 0) of the UTF-8 bytes of s, as Bun.hash.xxHash32(s) >>> 0, so a key hashed
 * from a string (e.g. socket.remoteAddress) and from head bytes lands on the same ring point.
 * ASCII strings are hashed in JS (no encoding, ~2x faster); others go to Bun's native hash.
 */
export function hashString(s: string): number {
  const end = s.length;
  let p = 0;
  let seen = 0; // OR of all code units: >= 0x80 means the UTF-8 bytes differ from the units
  let h: number;
  if (end >= 16) {
    let v1 = (P1 + P2) | 0;
    let v2 = P2;
    let v3 = 0;
    let v4 = -P1 | 0;
    const limit = end - 16;
    do {
      const c0 = s.charCodeAt(p), c1 = s.charCodeAt(p + 1), c2 = s.charCodeAt(p + 2), c3 = s.charCodeAt(p + 3);
      const c4 = s.charCodeAt(p + 4), c5 = s.charCodeAt(p + 5), c6 = s.charCodeAt(p + 6), c7 = s.charCodeAt(p + 7);
      const c8 = s.charCodeAt(p + 8), c9 = s.charCodeAt(p + 9), c10 = s.charCodeAt(p + 10), c11 = s.charCodeAt(p + 11);
      const c12 = s.charCodeAt(p + 12), c13 = s.charCodeAt(p + 13), c14 = s.charCodeAt(p + 14), c15 = s.charCodeAt(p + 15);
      seen |= c0 | c1 | c2 | c3 | c4 | c5 | c6 | c7 | c8 | c9 | c10 | c11 | c12 | c13 | c14 | c15;
      v1 = round(v1, c0 | (c1 << 8) | (c2 << 16) | (c3 << 24));
      v2 = round(v2, c4 | (c5 << 8) | (c6 << 16) | (c7 << 24));
      v3 = round(v3, c8 | (c9 << 8) | (c10 << 16) | (c11 << 24));
      v4 = round(v4, c12 | (c13 << 8) | (c14 << 16) | (c15 << 24));
      p += 16;
    } while (p <= limit);
    h = (((v1 << 1) | (v1 >>> 31)) + ((v2 << 7) | (v2 >>> 25)) + ((v3 << 12) | (v3 >>> 20)) + ((v4 << 18) | (v4 >>> 14))) | 0;
  } else {
    h = P5;
  }
  h = (h + end) | 0;
  while (p + 4 <= end) {
    const c0 = s.charCodeAt(p), c1 = s.charCodeAt(p + 1), c2 = s.charCodeAt(p + 2), c3 = s.charCodeAt(p + 3);
    seen |= c0 | c1 | c2 | c3;
    h = (h + Math.imul(c0 | (c1 << 8) | (c2 << 16) | (c3 << 24), P3)) | 0;
    h = Math.imul((h << 17) | (h >>> 15), P4);
    p += 4;
  }
  while (p < end) {
    const c = s.charCodeAt(p);
    seen |= c;
    h = (h + Math.imul(c, P5)) | 0;
    h = Math.imul((h << 11) | (h >>> 21), P1);
    p++;
  }
  if (seen >= 0x80) return Bun.hash.xxHash32(s) >>> 0;
  return avalanche(h);
}

// ---------------------------------------------------------------------------------------------
// Ring (built at compile time, not on the hot path)

/**
 * Consistent-hash ring: POINTS_PER_WEIGHT * weight points per server, each the xxHash32 of
 * `${id}#${i}`, sorted ascending; `servers[k]` is the index (in the given array) owning
 * `points[k]`. Weight 0 gives no points. A server's points depend only on its id and weight,
 * so adding or removing one server leaves every other server's points where they were.
 * Equal points (hash collisions) are ordered by server index, so the ring is deterministic.
 */
export function buildRing(servers: readonly { weight: number; id: string }[]): { points: Uint32Array; servers: Uint16Array } {
  if (servers.length > 65536) throw new RangeError(`buildRing: ${servers.length} servers, at most 65536`);
  let n = 0;
  for (let si = 0; si < servers.length; si++) n += pointsFor(servers[si]!.weight);
  // Pack (point, server) into one float64 (48 bits, exact) so one numeric typed-array sort does it.
  const packed = new Float64Array(n);
  let k = 0;
  for (let si = 0; si < servers.length; si++) {
    const s = servers[si]!;
    const count = pointsFor(s.weight);
    for (let i = 0; i < count; i++) packed[k++] = hashString(`${s.id}#${i}`) * 65536 + si;
  }
  packed.sort();
  const points = new Uint32Array(n);
  const owners = new Uint16Array(n);
  for (let j = 0; j < n; j++) {
    const v = packed[j]!;
    const owner = v % 65536;
    points[j] = (v - owner) / 65536;
    owners[j] = owner;
  }
  return { points, servers: owners };
}

function pointsFor(weight: number): number {
  return weight > 0 ? Math.round(POINTS_PER_WEIGHT * weight) : 0;
}

// ---------------------------------------------------------------------------------------------
// Selection

/** Can take a new, non-persisted request: up, admin "ready", and under maxconn. */
export function eligible(s: CompiledServer): boolean {
  const st = s.state;
  return st.up && st.admin === "ready" && (s.maxconn === 0 || st.active < s.maxconn);
}

/** A candidate of the tier being searched (primaries or backups) for this call. */
function candidate(s: CompiledServer, i: number, exclude: number, backup: boolean): boolean {
  return s.backup === backup && s.weight > 0 && i !== exclude && eligible(s);
}

/**
 * Picks a server for a request with no persistence. `keyHash` is the request key's hash
 * (hashKey/hashString) for source/uri/hdr/cookie, or -1 when the request has no key (those
 * algorithms then fall back to roundrobin). `exclude` is a server index to avoid, or -1.
 */
export function chooseServer(b: CompiledBackend, keyHash: number, exclude: number): CompiledServer | null {
  let i = pick(b, keyHash, exclude, false);
  // backups only when no primary is up (Apache status=+H, HAProxy backup): primaries that are
  // merely full (maxconn) make the request wait in the queue, not spill over to a backup
  if (i < 0 && !anyFull(b, exclude, false)) i = pick(b, keyHash, exclude, true);
  return i < 0 ? null : b.servers[i]!;
}

/**
 * Some server (a primary, or with `backups` any) is up and ready but at its maxconn: a request
 * nothing else can take waits in the queue for it instead of failing or spilling to a backup.
 */
export function anyFull(b: CompiledBackend, exclude: number, backups: boolean): boolean {
  const servers = b.servers;
  for (let i = 0; i < servers.length; i++) {
    const s = servers[i]!, st = s.state;
    if ((backups || !s.backup) && i !== exclude && s.weight > 0 && st.up && st.admin === "ready" && s.maxconn > 0 && st.active >= s.maxconn) return true;
  }
  return false;
}

function pick(b: CompiledBackend, keyHash: number, exclude: number, backup: boolean): number {
  switch (b.balance.kind) {
    case "roundrobin":
      return pickRoundRobin(b, exclude, backup);
    case "leastconn":
      return pickLeastConn(b, exclude, backup);
    case "random":
      return pickRandom(b, exclude, backup);
    case "first":
      return pickFirst(b, exclude, backup);
    default: // source | uri | hdr | cookie
      if (keyHash < 0 || b.ringPoints.length === 0) return pickRoundRobin(b, exclude, backup);
      return pickHash(b, keyHash, exclude, backup);
  }
}

/**
 * The weight a server has now: with `slowstart`, a server that came back up after being down
 * ramps from 5% to its full weight over that time (as HAProxy; never at start-up, only after a
 * down). Used by the weight-driven algorithms (roundrobin, leastconn, random).
 */
export function weightOf(s: CompiledServer): number {
  const w = s.weight;
  if (s.slowstart === 0) return w;
  const st = s.state;
  if (st.downs === 0) return w;
  const t = clock.now - st.upSince;
  if (t >= s.slowstart) return w;
  const ramp = (w * t) / s.slowstart;
  return ramp > w / 20 ? ramp : w / 20;
}

/**
 * Smooth weighted round robin (nginx ngx_http_upstream_get_peer): every candidate gains its
 * weight, the highest current wins and pays back the total. Weights 5,1,1 give a a b a c a a.
 * Ties go to the lower index.
 */
function pickRoundRobin(b: CompiledBackend, exclude: number, backup: boolean): number {
  const servers = b.servers;
  let total = 0;
  let best = -1;
  let bestCurrent = 0;
  for (let i = 0; i < servers.length; i++) {
    const s = servers[i]!;
    if (!candidate(s, i, exclude, backup)) continue;
    const st = s.state;
    const w = weightOf(s);
    const current = st.rrCurrent + w;
    st.rrCurrent = current;
    total += w;
    if (best < 0 || current > bestCurrent) {
      best = i;
      bestCurrent = current;
    }
  }
  if (best >= 0) servers[best]!.state.rrCurrent = bestCurrent - total;
  return best;
}

/**
 * Least connections: lowest active/weight (compared as active_a * weight_b < active_b * weight_a,
 * exact in integers). The scan starts at b.rr.next and only a strictly lower load replaces the
 * best, so ties rotate: idle servers are taken in turn.
 */
function pickLeastConn(b: CompiledBackend, exclude: number, backup: boolean): number {
  const servers = b.servers;
  const n = servers.length;
  let i = b.rr.next;
  if (i >= n || i < 0) i = 0;
  let best = -1;
  let bestActive = 0;
  let bestWeight = 1;
  for (let k = 0; k < n; k++, i++) {
    if (i === n) i = 0;
    const s = servers[i]!;
    if (!candidate(s, i, exclude, backup)) continue;
    const active = s.state.active;
    const w = weightOf(s);
    if (best < 0 || active * bestWeight < bestActive * w) {
      best = i;
      bestActive = active;
      bestWeight = w;
    }
  }
  if (best >= 0) b.rr.next = best + 1 === n ? 0 : best + 1;
  return best;
}

/**
 * Power of two choices: two independent weight-proportional random picks; the one with the
 * lower active/weight wins, the first on a tie (so idle servers are chosen in weight proportion).
 */
function pickRandom(b: CompiledBackend, exclude: number, backup: boolean): number {
  const servers = b.servers;
  const n = servers.length;
  let total = 0;
  let last = -1;
  for (let i = 0; i < n; i++) {
    const s = servers[i]!;
    if (!candidate(s, i, exclude, backup)) continue;
    total += weightOf(s);
    last = i;
  }
  if (last < 0) return -1;
  let r1 = Math.random() * total;
  let r2 = Math.random() * total;
  let p1 = -1;
  let p2 = -1;
  for (let i = 0; i < n; i++) {
    const s = servers[i]!;
    if (!candidate(s, i, exclude, backup)) continue;
    const w = weightOf(s);
    if (p1 < 0 && (r1 -= w) < 0) p1 = i;
    if (p2 < 0 && (r2 -= w) < 0) p2 = i;
    if (p1 >= 0 && p2 >= 0) break;
  }
  if (p1 < 0) p1 = last; // floating-point rounding at the very top of the range
  if (p2 < 0) p2 = last;
  if (p1 === p2) return p1;
  const a = servers[p1]!;
  const c = servers[p2]!;
  return c.state.active * weightOf(a) < a.state.active * weightOf(c) ? p2 : p1;
}

/** First candidate in declaration order: with maxconn, fills servers one after another (HAProxy `first`). */
function pickFirst(b: CompiledBackend, exclude: number, backup: boolean): number {
  const servers = b.servers;
  for (let i = 0; i < servers.length; i++) {
    if (candidate(servers[i]!, i, exclude, backup)) return i;
  }
  return -1;
}

/**
 * Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018; HAProxy
 * `hash-balance-factor`): find the first ring point >= keyHash (wrapping), walk clockwise to the
 * first candidate with active + 1 <= ceil(factor * (totalActive + 1) / candidates). If every
 * candidate is over the bound (only possible with factor < 1, which is raised to 1 here), the
 * first candidate met on the walk is used. factor <= 0 disables the bound.
 * With all servers idle the bound never bites, so the plain consistent-hash guarantees hold:
 * a server going down moves only its own keys, a new server takes keys only for itself.
 */
function pickHash(b: CompiledBackend, keyHash: number, exclude: number, backup: boolean): number {
  const servers = b.servers;
  let count = 0;
  let totalActive = 0;
  for (let i = 0; i < servers.length; i++) {
    const s = servers[i]!;
    if (!candidate(s, i, exclude, backup)) continue;
    count++;
    totalActive += s.state.active;
  }
  if (count === 0) return -1;
  const factor = b.hashBoundFactor;
  const limit = factor > 0 ? Math.ceil(((factor < 1 ? 1 : factor) * (totalActive + 1)) / count) : Infinity;

  const points = b.ringPoints;
  const owners = b.ringServers;
  const len = points.length;
  let lo = 0;
  let hi = len;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (points[mid]! < keyHash) lo = mid + 1;
    else hi = mid;
  }
  let k = lo === len ? 0 : lo;
  let fallback = -1;
  for (let steps = 0; steps < len; steps++) {
    const i = owners[k]!;
    const s = servers[i];
    if (s !== undefined && candidate(s, i, exclude, backup)) {
      if (s.state.active + 1 <= limit) return i;
      if (fallback < 0) fallback = i;
    }
    if (++k === len) k = 0;
  }
  // The ring may lack a candidate only if it was built from another server list; stay available.
  return fallback >= 0 ? fallback : pickRoundRobin(b, exclude, backup);
}
