// WebSocket echo backend for bench/ws/ws-bench.ts.
//
//   bun bench/ws/ws-backend.ts PORT [PORT...]
//
// One `Bun.serve` per port, in one process: every WebSocket message comes back as it came
// (binary stays binary, text stays text). No compression, no idle timeout, no automatic pings
// (the bench's clients hold tunnels idle and count frames). Plain HTTP requests get 426.
// Prints "ready <ports>" once every port listens; exits by itself when its parent goes away.

export {};

const ports = process.argv.slice(2).map(Number);
if (ports.length === 0 || ports.some((p) => !Number.isInteger(p) || p <= 0 || p > 65535)) {
  console.error("usage: bun bench/ws/ws-backend.ts PORT [PORT...]");
  process.exit(2);
}

for (const port of ports) {
  Bun.serve({
    hostname: "127.0.0.1",
    port,
    idleTimeout: 0,
    fetch(req, server) {
      if (server.upgrade(req)) return;
      return new Response("websocket only\n", { status: 426 });
    },
    websocket: {
      perMessageDeflate: false,
      idleTimeout: 0,
      sendPings: false,
      maxPayloadLength: 16 * 1024 * 1024,
      backpressureLimit: 1024 * 1024,
      message(ws, msg) {
        ws.send(msg);
      },
    },
  });
}

console.log(`ready ${ports.join(" ")}`);

// Never outlive the benchmark that started us.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 500).unref?.();
