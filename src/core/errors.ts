// Error answers, prebuilt once: a status line, a short body and `Connection: close`
// (the connection is closed after them, so no request of unknown framing can follow).
// Which failure maps to which status (Pingora's fail-to-proxy, in one table):
//   400 malformed or smuggling-shaped request, 405 CONNECT, 408 head not completed in time,
//   414 target too long, 431 head too large or too many headers, 404 no route,
//   502 backend refused/closed/spoke nonsense, 503 no server available, 504 backend timeout,
//   505 not HTTP/1.x.

const REASONS: Record<number, string> = {
  301: "Moved Permanently",
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Content Too Large",
  414: "URI Too Long",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

const BODIES: Record<number, string> = {
  400: "bad request\n",
  404: "no route for this host and path\n",
  405: "method not allowed\n",
  408: "request head not received in time\n",
  414: "request target too long\n",
  431: "request head too large\n",
  502: "bad gateway: the backend failed to answer\n",
  503: "service unavailable: no server is available\n",
  504: "gateway timeout: the backend did not answer in time\n",
  505: "only HTTP/1.0 and HTTP/1.1 are supported\n",
};

const cache = new Map<number, Buffer>();

export function reasonPhrase(status: number): string {
  return REASONS[status] ?? "Error";
}

export function errorResponse(status: number): Buffer {
  let r = cache.get(status);
  if (r === undefined) {
    const body = BODIES[status] ?? `${status} ${reasonPhrase(status)}\n`;
    r = Buffer.from(
      `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n` +
        `cache-control: no-cache\r\nconnection: close\r\n\r\n${body}`,
      "latin1",
    );
    cache.set(status, r);
  }
  return r;
}
