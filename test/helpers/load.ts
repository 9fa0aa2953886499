// A bounded load for failover and reload tests: a few concurrent clients, each sending
// requests one after another for a fixed time, over keep-alive connections or a new
// connection per request. Every outcome is recorded (status 0 = no HTTP answer at all, with
// the reason), with the time it was sent, so a test can say which requests came after an event.

import { RawClient, type RawResponse } from "./raw.ts";

export interface Outcome {
  client: number;
  n: number;
  /** Date.now() just before the request was written, and when its answer (or failure) came */
  sent: number;
  done: number;
  keepAlive: boolean;
  /** 0 when no response came (connect refused, reset, closed without an answer, timeout) */
  status: number;
  /** the backend that answered (X-Server), or "" */
  server: string;
  res: RawResponse | null;
  error: string;
}

export interface LoadOptions {
  port: number;
  /** how long new requests are started */
  ms: number;
  clients: number;
  /** client i uses one keep-alive connection (reopened when closed) or a new one per request */
  keepAlive?: (client: number) => boolean;
  /** the request bytes for request n of client i (Connection: close is added for new-connection clients) */
  request?: (client: number, n: number) => { method?: string; path: string; headers?: string; body?: string };
  /** a pause between two requests of one client */
  gapMs?: number;
  /** stop early */
  stop?: () => boolean;
  /** client i starts with these cookies ("A=1; B=2") and keeps what Set-Cookie gives it, as a browser */
  cookies?: (client: number) => string | null;
}

function build(r: { method?: string; path: string; headers?: string; body?: string }, keepAlive: boolean): string {
  const body = r.body ?? "";
  return (
    `${r.method ?? "GET"} ${r.path} HTTP/1.1\r\nHost: load.example\r\n${r.headers ?? ""}` +
    (body.length > 0 ? `Content-Length: ${Buffer.byteLength(body, "latin1")}\r\n` : "") +
    (keepAlive ? "" : "Connection: close\r\n") +
    `\r\n${body}`
  );
}

export async function runLoad(o: LoadOptions): Promise<Outcome[]> {
  const out: Outcome[] = [];
  const end = Date.now() + o.ms;
  const worker = async (i: number) => {
    const ka = o.keepAlive?.(i) ?? i % 2 === 0;
    let conn: RawClient | null = null;
    const initial = o.cookies?.(i) ?? null;
    const jar: Map<string, string> | null = initial === null ? null : new Map();
    if (jar !== null && initial !== "") {
      for (const p of initial!.split(/;\s*/)) jar.set(p.slice(0, p.indexOf("=")), p.slice(p.indexOf("=") + 1));
    }
    for (let n = 0; Date.now() < end && !(o.stop?.() ?? false); n++) {
      const spec = { ...(o.request?.(i, n) ?? { path: `/load/${i}/${n}` }) };
      if (jar !== null && jar.size > 0) spec.headers = `${spec.headers ?? ""}Cookie: ${[...jar].map(([k, v]) => `${k}=${v}`).join("; ")}\r\n`;
      const rec: Outcome = { client: i, n, sent: Date.now(), done: 0, keepAlive: ka, status: 0, server: "", res: null, error: "" };
      out.push(rec);
      try {
        if (conn === null || conn.closed) conn = await RawClient.connect(o.port);
        conn.write(build(spec, ka));
        const res = await conn.response({ ms: 10_000, head: spec.method === "HEAD" });
        rec.status = res.status;
        rec.server = res.get("x-server") ?? "";
        rec.res = res;
        if (jar !== null) {
          for (const sc of res.all("set-cookie")) {
            const pair = sc.split(";")[0];
            jar.set(pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1));
          }
        }
        if (!ka || res.get("connection") === "close") {
          conn.close();
          conn = null;
        }
      } catch (e) {
        rec.error = (e as Error).message.split("\n")[0];
        conn?.close();
        conn = null;
      }
      rec.done = Date.now();
      if (o.gapMs) await Bun.sleep(o.gapMs);
    }
    conn?.close();
  };
  await Promise.all(Array.from({ length: o.clients }, (_, i) => worker(i)));
  return out.sort((a, b) => a.sent - b.sent);
}

/** A one-line summary of the failures, for expect messages. */
export function failures(outcomes: Outcome[], ok: (o: Outcome) => boolean = (o) => o.status === 200): string[] {
  return outcomes
    .filter((o) => !ok(o))
    .map((o) => `client ${o.client} #${o.n} (${o.keepAlive ? "keep-alive" : "new conn"}) sent +${o.sent % 100000}: ${o.status || o.error}`);
}
