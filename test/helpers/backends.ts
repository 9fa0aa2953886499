// Scripted backends for integration tests that need more than recordingBackend: answers that
// come later (per-connection order kept), access to the socket (to close it, to send interim
// responses), and the parsed requests. Like recordingBackend, it records every byte received.

import { takeRequest } from "./raw.ts";
import type { Socket, TCPSocketListener } from "bun";

export interface BackendReq {
  head: string;
  body: Buffer;
  /** connection index (0 = first accepted) */
  conn: number;
  /** index of this request on its connection */
  n: number;
  method: string;
  target: string;
  /** header lines in order, names as sent */
  headers: [string, string][];
  /** values of a header (case-insensitive), in order */
  all(name: string): string[];
  get(name: string): string | undefined;
}

interface ConnState {
  id: number;
  buf: Buffer;
  n: number;
  chain: Promise<void>;
}

export type Respond = (
  req: BackendReq,
  sock: Socket<ConnState>,
) => string | Uint8Array | null | Promise<string | Uint8Array | null>;

export interface ScriptedBackend {
  port: number;
  /** every byte received, per connection */
  conns: Buffer[];
  requests: BackendReq[];
  sockets: Socket<ConnState>[];
  server: TCPSocketListener<ConnState>;
  stop(): void;
}

function parseReq(head: string, body: Buffer, conn: number, n: number): BackendReq {
  const lines = head.split("\r\n");
  const [method, target] = lines[0].split(" ");
  const headers = lines.slice(1).map((l) => {
    const i = l.indexOf(":");
    return [l.slice(0, i), l.slice(i + 1).trim()] as [string, string];
  });
  const all = (name: string) => headers.filter(([k]) => k.toLowerCase() === name.toLowerCase()).map(([, v]) => v);
  return { head, body, conn, n, method, target, headers, all, get: (name) => all(name)[0] };
}

/**
 * A backend that splits requests (Content-Length / chunked) and answers each with `respond`
 * (sync or async); answers on one connection go out in request order. `null` = no answer.
 */
export function scriptedBackend(respond: Respond): ScriptedBackend {
  const conns: Buffer[] = [];
  const requests: BackendReq[] = [];
  const sockets: Socket<ConnState>[] = [];
  const server = Bun.listen<ConnState>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        s.data = { id: conns.length, buf: Buffer.alloc(0), n: 0, chain: Promise.resolve() };
        conns.push(Buffer.alloc(0));
        sockets.push(s);
      },
      data(s, d) {
        const st = s.data;
        conns[st.id] = Buffer.concat([conns[st.id], d]);
        st.buf = Buffer.concat([st.buf, d]);
        for (;;) {
          const got = takeRequest(st.buf);
          if (got === null) return;
          const { head, body } = got;
          st.buf = got.rest;
          const req = parseReq(head, body, st.id, st.n++);
          requests.push(req);
          st.chain = st.chain.then(async () => {
            const out = await respond(req, s);
            if (out !== null) s.write(typeof out === "string" ? Buffer.from(out, "latin1") : out);
          });
        }
      },
    },
  });
  return { port: server.port, conns, requests, sockets, server, stop: () => server.stop(true) };
}

/** "HTTP/1.1 200 OK" response with a Content-Length body and extra header lines. */
export function ok(body: string, extra = "", status = "200 OK"): string {
  return `HTTP/1.1 ${status}\r\nContent-Length: ${Buffer.byteLength(body, "latin1")}\r\n${extra}\r\n${body}`;
}

/** Wait until pred() holds (polling), or throw after ms. */
export async function until(pred: () => boolean, ms = 5000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timeout waiting for ${what}`);
    await Bun.sleep(10);
  }
}
