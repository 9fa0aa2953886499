// ignore_persist / force_persist rule matching over the parsed request.

import type { PersistRule } from "./types.ts";
import { eqLower, type Head } from "./h1-head.ts";

/** Index of the first header named `nameLower` (lowercase bytes), or -1. */
export function findHeader(buf: Uint8Array, h: Head, nameLower: Uint8Array): number {
  for (let k = 0; k < h.count; k++) if (eqLower(buf, h.ns[k], h.ne[k], nameLower)) return k;
  return -1;
}

/** Client address as bytes (4 for IPv4, 16 for IPv6), for CIDR rules. */
export function ipBytes(ip: string): Uint8Array | null {
  if (ip.startsWith("::ffff:") && ip.includes(".")) ip = ip.slice(7);
  if (ip.includes(".")) {
    const p = ip.split(".");
    if (p.length !== 4) return null;
    const out = new Uint8Array(4);
    for (let i = 0; i < 4; i++) out[i] = Number(p[i]);
    return out;
  }
  const out = new Uint8Array(16);
  const [head, tail] = ip.split("::");
  const hp = head ? head.split(":") : [];
  const tp = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const put = (parts: string[], at: number) =>
    parts.forEach((x, i) => {
      const v = parseInt(x, 16);
      out[at + i * 2] = v >> 8;
      out[at + i * 2 + 1] = v & 255;
    });
  put(hp, 0);
  put(tp, 16 - tp.length * 2);
  return out;
}

function inCidr(ip: Uint8Array | null, c: NonNullable<PersistRule["cidr"]>): boolean {
  if (ip === null || ip.length !== c.addr.length) return false;
  let bits = c.bits;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 255 : (0xff << (8 - bits)) & 255;
    if ((ip[i] & mask) !== (c.addr[i] & mask)) return false;
  }
  return true;
}

export function matchRules(
  rules: readonly PersistRule[],
  buf: Buffer,
  h: Head,
  pathStart: number,
  client: { ipBytes(): Uint8Array | null },
): boolean {
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i];
    let ok = true;
    if (r.header !== undefined) {
      const k = findHeader(buf, h, r.header.nameLower);
      ok = k >= 0 && (r.header.contains.length === 0 || indexIn(buf, r.header.contains, h.vs[k], h.ve[k]));
    }
    if (ok && r.pathPrefix !== undefined) ok = startsWith(buf, pathStart, h.targetEnd, r.pathPrefix);
    if (ok && r.cidr !== undefined) ok = inCidr(client.ipBytes(), r.cidr);
    if (ok) return true;
  }
  return false;
}

function indexIn(buf: Buffer, needle: Uint8Array, s: number, e: number): boolean {
  const i = buf.indexOf(needle, s);
  return i >= 0 && i + needle.length <= e;
}

export function startsWith(buf: Uint8Array, s: number, e: number, prefix: string): boolean {
  const n = prefix.length;
  if (e - s < n) return false;
  for (let i = 0; i < n; i++) if (buf[s + i] !== prefix.charCodeAt(i)) return false;
  return true;
}
