// mod_session's encoding of a session: `key=value&key2=value2`, each part form-urlencoded
// (space as "+", everything but letters, digits and `-_.!~*'()` as %XX of its UTF-8 bytes).
// This is what the backend reads in the request header and writes in the update header.
//
// Decoding follows mod_session's session_identity_decode:
//   - pairs are separated by "&"; empty pairs ("a=1&&b=2") are skipped;
//   - the key ends at the first "=", the value is the rest (it may hold further "=");
//   - a pair with no "=" or an empty value removes the key (mod_session: "unset");
//   - a pair whose key or value is not valid %-encoding (or not UTF-8) is skipped whole;
//   - a later pair with the same key replaces the earlier one.
// Neither direction ever throws: garbage decodes to whatever valid pairs it holds, possibly
// none. canonical() = encode(decode(x)) is what Latch stores and forwards, so whatever the
// backend wrote, the header Latch sends on is plain ASCII in one spelling.

export type SessionData = Map<string, string>;

function unescape(part: string): string | null {
  // "+" is a space in form encoding; a bare "%" or a bad escape makes decodeURIComponent throw
  const spaced = part.indexOf("+") === -1 ? part : part.replaceAll("+", " ");
  if (spaced.indexOf("%") === -1) return spaced;
  try {
    return decodeURIComponent(spaced);
  } catch {
    return null;
  }
}

/** "a=1&b=x+y" -> Map { a: "1", b: "x y" }. Never throws; garbage -> an empty map. */
export function decode(text: string | null | undefined): SessionData {
  const out: SessionData = new Map();
  if (typeof text !== "string" || text.length === 0) return out;
  let start = 0;
  const n = text.length;
  while (start <= n) {
    let end = text.indexOf("&", start);
    if (end === -1) end = n;
    if (end > start) {
      const eq = text.indexOf("=", start);
      if (eq !== -1 && eq < end && eq > start) {
        const key = unescape(text.slice(start, eq));
        const value = unescape(text.slice(eq + 1, end));
        if (key !== null && value !== null && key.length > 0) {
          if (value.length === 0) out.delete(key);
          else out.set(key, value);
        }
      } else if (eq === -1 || eq >= end) {
        // "key" alone: unset
        const key = unescape(text.slice(start, end));
        if (key !== null) out.delete(key);
      }
    }
    start = end + 1;
  }
  return out;
}

function escape(s: string): string {
  // toWellFormed: a lone surrogate would make encodeURIComponent throw
  const e = encodeURIComponent(s.isWellFormed() ? s : s.toWellFormed());
  return e.indexOf("%20") === -1 ? e : e.replaceAll("%20", "+");
}

/** Map { a: "1", b: "x y" } -> "a=1&b=x+y". Pairs with an empty key or value are left out (they mean "unset"). */
export function encode(data: ReadonlyMap<string, string> | Iterable<readonly [string, string]>): string {
  let out = "";
  for (const [k, v] of data) {
    if (typeof k !== "string" || typeof v !== "string" || k.length === 0 || v.length === 0) continue;
    out += `${out.length === 0 ? "" : "&"}${escape(k)}=${escape(v)}`;
  }
  return out;
}

/** One spelling for a session string: what Latch stores and sends to the backend. */
export function canonical(text: string | null | undefined): string {
  if (typeof text !== "string" || text.length === 0) return "";
  return encode(decode(text));
}
