// Building the access-log record of a request, in the forwarding path, only while a sink is
// set (src/core/access.ts). Strings are made here once per request for the log and nowhere
// else; the sink formats and writes them off the hot path.

import { access, type AccessRecord } from "./access.ts";
import type { Head } from "./h1-head.ts";
import { findHeader } from "./rules.ts";

/** What a record needs of the client connection. */
export interface RecordOwner {
  rec: AccessRecord | null;
  tStart: number;
  readonly ip: string;
  readonly sock: { readonly remotePort: number };
  readonly lst: { readonly cfg: { readonly name: string } };
}

const UA = Buffer.from("user-agent");
const REFERER = Buffer.from("referer");

function headerText(buf: Buffer, h: Head, name: Uint8Array): string {
  const k = findHeader(buf, h, name);
  return k < 0 ? "" : buf.latin1Slice(h.vs[k], h.ve[k]);
}

export function requestRecord(c: RecordOwner, buf: Buffer, h: Head): AccessRecord {
  const now = Date.now();
  const t0 = c.tStart > 0 ? c.tStart : now;
  return {
    time: t0,
    client: c.ip,
    clientPort: c.sock.remotePort,
    listener: c.lst.cfg.name,
    method: buf.latin1Slice(0, h.methodEnd),
    target: buf.latin1Slice(h.targetStart, h.targetEnd),
    version: h.minor === 0 ? "HTTP/1.0" : "HTTP/1.1",
    status: 0,
    bytesOut: 0,
    referer: headerText(buf, h, REFERER),
    userAgent: headerText(buf, h, UA),
    backend: "-",
    server: "-",
    persist: "--",
    sessionId: "-",
    tq: now - t0,
    tw: -1,
    tc: -1,
    tr: -1,
    tt: -1,
    note: "",
  };
}

/** A request Latch refused before it had a parsed head (400, 408, 414, 431). */
export function badRequestRecord(c: RecordOwner): AccessRecord {
  const now = Date.now();
  const t0 = c.tStart > 0 ? c.tStart : now;
  return {
    time: t0, client: c.ip, clientPort: c.sock.remotePort, listener: c.lst.cfg.name,
    method: "-", target: "-", version: "-", status: 0, bytesOut: 0, referer: "", userAgent: "",
    backend: "-", server: "-", persist: "--", sessionId: "-", tq: now - t0, tw: -1, tc: -1, tr: -1, tt: -1, note: "",
  };
}

export function logDone(c: RecordOwner, rec: AccessRecord): void {
  c.rec = null;
  c.tStart = 0;
  rec.tt = Date.now() - rec.time;
  const sink = access.sink;
  if (sink !== null) sink(rec);
}
