// Persistence mode `insert` (HAProxy `cookie NAME insert`): reading the client's cookie on
// the request, and the Set-Cookie line Latch adds to the response.
//
// Value format: the server's cookie value, and when maxidle or maxlife is set, two
// timestamps: `ap01|<last seen>|<first seen>` (unix seconds, base 36). A cookie whose
// dates are past maxidle/maxlife, or more than a day in the future, counts as absent and is
// replaced. A cookie without dates (written before maxidle was configured) is accepted and
// gets dates on the next response.

import type { CompiledBackend, InsertPersist } from "./types.ts";
import { H_COOKIE, type Head } from "./h1-head.ts";

/** Result of findCookie: header index and byte ranges of the NAME=value pair. */
export const found = { header: -1, pairS: 0, pairE: 0, valS: 0, valE: 0 };

/**
 * Finds cookie `name` (case-sensitive, as browsers send it) in the request's Cookie
 * headers. Fills `found` and returns true when present.
 */
export function findCookie(buf: Uint8Array, h: Head, name: Uint8Array): boolean {
  const n = name.length;
  const first = name[0];
  for (let k = 0; k < h.count; k++) {
    if (h.id[k] !== H_COOKIE) continue;
    const ve = h.ve[k];
    let i = h.vs[k];
    while (i < ve) {
      while (i < ve && (buf[i] === 32 || buf[i] === 9)) i++;
      const ps = i;
      // name up to '='
      let eq = -1;
      while (i < ve && buf[i] !== 59) {
        if (eq < 0 && buf[i] === 61) eq = i;
        i++;
      }
      // i at ';' or end
      if (eq - ps === n && buf[ps] === first) {
        let same = true;
        for (let j = 1; j < n; j++) {
          if (buf[ps + j] !== name[j]) {
            same = false;
            break;
          }
        }
        if (same) {
          let e = i;
          while (e > eq + 1 && (buf[e - 1] === 32 || buf[e - 1] === 9)) e--;
          let vs = eq + 1;
          if (buf[vs] === 34 && e - vs >= 2 && buf[e - 1] === 34) {
            vs++; // quoted value
            e--;
          }
          found.header = k;
          found.pairS = ps;
          found.pairE = i;
          found.valS = vs;
          found.valE = e;
          return true;
        }
      }
      i++; // skip ';'
    }
  }
  found.header = -1;
  return false;
}

/**
 * The byte range to cut so that the pair disappears from its Cookie header (indirect),
 * keeping the other cookies and their separators well-formed; the whole line when the
 * pair was alone. Writes into `cut`.
 */
export const cut = { s: 0, e: 0, wholeLine: false };
export function cookieCut(buf: Uint8Array, h: Head): void {
  const k = found.header;
  const vs = h.vs[k], ve = h.ve[k];
  let s = found.pairS, e = found.pairE;
  // the pair and the separator after it
  if (e < ve) {
    e++; // ';'
    while (e < ve && (buf[e] === 32 || buf[e] === 9)) e++;
  } else {
    // last pair: take the separator before it
    while (s > vs && (buf[s - 1] === 32 || buf[s - 1] === 9)) s--;
    if (s > vs && buf[s - 1] === 59) s--;
  }
  if (s <= vs && e >= ve) {
    cut.s = h.ns[k];
    cut.e = h.le[k];
    cut.wholeLine = true;
  } else {
    cut.s = s;
    cut.e = e;
    cut.wholeLine = false;
  }
}

/** Decision of checkValue */
export const verdict = { server: -1, first: 0, refresh: false };

const DAY = 86400;

/**
 * Maps the cookie value buf[vs, ve) to a server index, honouring maxidle/maxlife.
 * Sets verdict.server (-1 = absent/invalid/expired), verdict.first (first-seen seconds to
 * carry over) and verdict.refresh (the dates need renewing).
 */
export function checkValue(p: InsertPersist, buf: Buffer, vs: number, ve: number, nowSec: number): void {
  verdict.server = -1;
  verdict.refresh = false;
  verdict.first = nowSec;
  const dated = p.maxidle > 0 || p.maxlife > 0;
  let idEnd = ve;
  if (dated) {
    const bar = buf.indexOf(124, vs); // '|'
    if (bar >= 0 && bar < ve) idEnd = bar;
  }
  const idx = p.byValue.get(buf.latin1Slice(vs, idEnd));
  if (idx === undefined) return;
  if (!dated) {
    verdict.server = idx;
    return;
  }
  if (idEnd === ve) {
    // no dates yet: accept and date it
    verdict.server = idx;
    verdict.refresh = true;
    return;
  }
  const bar2 = buf.indexOf(124, idEnd + 1);
  if (bar2 < 0 || bar2 >= ve) return;
  const last = parseInt(buf.latin1Slice(idEnd + 1, bar2), 36);
  const first = parseInt(buf.latin1Slice(bar2 + 1, ve), 36);
  if (!(last >= 0) || !(first >= 0)) return; // NaN or negative: garbage
  if (last > nowSec + DAY || first > nowSec + DAY) return; // from the future: ignored
  const idle = nowSec - last, life = nowSec - first;
  if (p.maxidle > 0 && idle * 1000 > p.maxidle) return;
  if (p.maxlife > 0 && life * 1000 > p.maxlife) return;
  verdict.server = idx;
  verdict.first = first;
  // renew the last-seen date once a quarter of maxidle has passed
  verdict.refresh = p.maxidle > 0 && idle * 4000 >= p.maxidle;
}

/** The Set-Cookie line to add for server `s`. */
export function setCookieLine(p: InsertPersist, b: CompiledBackend, s: number, nowSec: number, first: number): Uint8Array {
  if (p.maxidle === 0 && p.maxlife === 0) return p.setCookieLine[s];
  const v = `Set-Cookie: ${p.cookie}=${b.servers[s].cookieValue}|${nowSec.toString(36)}|${first.toString(36)}${p.attributes}\r\n`;
  return Buffer.from(v, "latin1");
}
