// The access-log hook of the forwarding path. The core fills one plain record per finished
// request and hands it to a sink set by the composition root; formatting and writing happen
// in src/log/, off the hot path, in batches. With no sink set nothing is recorded and the
// forwarding path pays one null check per request.

export interface AccessRecord {
  /** ms since the epoch when the first byte of the request head arrived */
  time: number;
  client: string;
  clientPort: number;
  listener: string;
  method: string;
  /** request target as received */
  target: string;
  /** "HTTP/1.1" or "HTTP/1.0" */
  version: string;
  /** status sent to the client, Latch's own errors included; 0 when nothing was sent */
  status: number;
  /** bytes sent to the client for this request, head included */
  bytesOut: number;
  referer: string;
  userAgent: string;
  backend: string;
  server: string;
  /**
   * Persistence decision in the spirit of HAProxy's cookie flags (`--II` in its log):
   * first char, what the request carried: N none, V valid (routed by it), D its server was
   * down (redispatched), I invalid/unknown, E expired, - persistence off or ignored;
   * second char, what the response did: N nothing, I inserted, U updated (dates),
   * P prefixed/rewritten, L learned (a table entry bound), - off.
   */
  persist: string;
  /** the persistence key (cookie value, learned key) or the proxy-managed session id; "-" */
  sessionId: string;
  /** ms: head received (Tq), queued (Tw), connecting (Tc), waiting for the response head (Tr), total (Tt); -1 = not reached */
  tq: number;
  tw: number;
  tc: number;
  tr: number;
  tt: number;
  /** why it ended if not normally: "" or a short reason ("server timeout", "client aborted", ...) */
  note: string;
}

export type AccessSink = (r: AccessRecord) => void;

export const access: { sink: AccessSink | null } = { sink: null };

export function setAccessSink(sink: AccessSink | null): void {
  access.sink = sink;
}
