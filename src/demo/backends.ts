// Two demo backends for `latch run --demo`, so a fresh checkout shows Latch working with
// nothing else running. Each answers with its own name and what it was sent, which makes
// stickiness visible from curl.

export interface DemoBackend {
  name: string;
  port: number;
  stop(): void;
}

export function startDemoBackends(names: string[], ports: number[] = []): DemoBackend[] {
  return names.map((name, i) => {
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: ports[i] ?? 0,
      fetch(req) {
        const url = new URL(req.url);
        if (url.pathname === "/healthz") return new Response("ok\n");
        const body =
          `Hello from ${name}\n` +
          `  ${req.method} ${url.pathname}${url.search}\n` +
          `  cookies seen by the backend: ${req.headers.get("cookie") ?? "(none)"}\n` +
          `  x-forwarded-for: ${req.headers.get("x-forwarded-for") ?? "-"}\n`;
        return new Response(body, { headers: { "content-type": "text/plain", "x-served-by": name } });
      },
    });
    return { name, port: server.port as number, stop: () => server.stop(true) };
  });
}
