// Request header rules of a route (`set_headers`, `remove_headers`) and a token-list test,
// applied while the request head is rewritten (src/core/splice.ts plans the bytes).

import type { HeaderRule } from "./types.ts";
import { eqLower, type Head } from "./h1-head.ts";
import { planAdd, planAddAll, CRLF } from "./splice.ts";
import { findCookie, found } from "./persist-insert.ts";

/** Is `token` in the comma list buf[s, e) (case-insensitive)? */
export function tokenListHas(buf: Uint8Array, s: number, e: number, token: Uint8Array): boolean {
  let i = s;
  while (i < e) {
    while (i < e && (buf[i] === 32 || buf[i] === 9 || buf[i] === 44)) i++;
    const ts = i;
    while (i < e && buf[i] !== 44 && buf[i] !== 32 && buf[i] !== 9) i++;
    if (i > ts && eqLower(buf, ts, i, token)) return true;
  }
  return false;
}


export function ruleNamesHeader(rules: readonly HeaderRule[], buf: Uint8Array, ns: number, ne: number): boolean {
  for (let i = 0; i < rules.length; i++) if (eqLower(buf, ns, ne, rules[i].nameLower)) return true;
  return false;
}

export function addHeaderRules(rules: readonly HeaderRule[], buf: Buffer, h: Head): void {
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i];
    if (r.prefix === null) continue;
    if (r.literal !== null) {
      planAddAll(r.prefix);
      planAddAll(r.literal);
      planAddAll(CRLF);
    } else if (r.cookie !== null && findCookie(buf, h, r.cookie)) {
      planAddAll(r.prefix);
      planAdd(buf, found.valS, found.valE);
      planAddAll(CRLF);
    }
  }
}
