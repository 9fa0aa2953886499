// Zero-copy head rewriting: a plan of cuts (byte ranges of the received head to drop,
// each optionally replaced by other bytes) and additions (placed before the final CRLF),
// then one buffer holding the new head and whatever body bytes came in the same chunk,
// so the forwarding path does exactly one write() per direction per event.
//
// The plan is module state: a head is planned and emitted synchronously, never interleaved.

const MAX_OPS = 64;
const cutS = new Int32Array(MAX_OPS);
const cutE = new Int32Array(MAX_OPS);
const cutRep: (Uint8Array | null)[] = new Array(MAX_OPS).fill(null);
let nCuts = 0;

const addBuf: Uint8Array[] = new Array(MAX_OPS).fill(null as unknown as Uint8Array);
const addS = new Int32Array(MAX_OPS);
const addE = new Int32Array(MAX_OPS);
let nAdds = 0;

const CRLF = Buffer.from("\r\n");

export function planReset(): void {
  for (let i = 0; i < nCuts; i++) cutRep[i] = null;
  nCuts = 0;
  nAdds = 0;
}

/** Drop buf[s, e) (cuts must be planned in ascending, non-overlapping order). */
export function planCut(s: number, e: number, replacement: Uint8Array | null): void {
  if (nCuts === MAX_OPS) return; // cannot happen with MAX_HEADERS-bounded plans of interest
  cutS[nCuts] = s;
  cutE[nCuts] = e;
  cutRep[nCuts++] = replacement;
}

/** Append src[s, e) to the head, before its final CRLF. */
export function planAdd(src: Uint8Array, s: number, e: number): void {
  if (nAdds === MAX_OPS) return;
  addBuf[nAdds] = src;
  addS[nAdds] = s;
  addE[nAdds++] = e;
}

export function planAddAll(src: Uint8Array): void {
  planAdd(src, 0, src.length);
}

/** True when nothing changes the head: the caller may forward the received bytes as they are. */
export function planEmpty(): boolean {
  return nCuts === 0 && nAdds === 0;
}

/**
 * Builds head' + buf[bodyStart, bodyEnd) from buf whose head ends at headEnd
 * (just after the final CRLFCRLF).
 */
export function emit(buf: Buffer, headEnd: number, bodyStart: number, bodyEnd: number): Buffer {
  let size = headEnd + (bodyEnd - bodyStart);
  for (let i = 0; i < nCuts; i++) {
    size -= cutE[i] - cutS[i];
    const r = cutRep[i];
    if (r !== null) size += r.length;
  }
  for (let i = 0; i < nAdds; i++) size += addE[i] - addS[i];
  const out = Buffer.allocUnsafe(size);
  let o = 0;
  let p = 0;
  const tail = headEnd - 2;
  for (let i = 0; i < nCuts; i++) {
    const s = cutS[i];
    if (s > p) o += buf.copy(out, o, p, s);
    const r = cutRep[i];
    if (r !== null) {
      out.set(r, o);
      o += r.length;
    }
    p = cutE[i];
  }
  if (tail > p) o += buf.copy(out, o, p, tail);
  for (let i = 0; i < nAdds; i++) {
    const src = addBuf[i], s = addS[i], e = addE[i];
    if (e - s === src.length) out.set(src, o);
    else out.set(src.subarray(s, e), o);
    o += e - s;
  }
  out[o++] = 13;
  out[o++] = 10;
  if (bodyEnd > bodyStart) buf.copy(out, o, bodyStart, bodyEnd);
  return out;
}

export { CRLF };
