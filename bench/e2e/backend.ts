// Minimal HTTP/1.1 keep-alive backend for the end-to-end benchmarks.
//
//   bun bench/e2e/backend.ts PORT [PORT...]
//
// One process, one raw `Bun.listen` listener per port (so the backends' CPU is
// never mixed with the proxy's). Every request head (up to "\r\n\r\n") gets a
// fixed `200 OK` with a ~100-byte body naming the server ("ap01" for the first
// port, "ap02" for the second, ...) and a Content-Length. Request bodies are not
// supported (the load generator only sends GETs). Pipelined requests are answered
// in one write. Prints "ready <ports>" on stdout once every port listens, and exits
// by itself when its parent goes away.

const ports = process.argv.slice(2).map(Number);
if (ports.length === 0 || ports.some((p) => !Number.isInteger(p) || p <= 0 || p > 65535)) {
  console.error("usage: bun bench/e2e/backend.ts PORT [PORT...]");
  process.exit(2);
}

const CRLFCRLF = Buffer.from("\r\n\r\n");

function responseFor(id: string): Buffer {
  // ~100-byte body that names the server, so routing can be checked from outside.
  let body = `server=${id} ` + "x".repeat(100);
  body = body.slice(0, 99) + "\n";
  return Buffer.from(
    "HTTP/1.1 200 OK\r\n" +
      "Content-Type: text/plain\r\n" +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      "\r\n" +
      body,
    "latin1",
  );
}

type State = { pending: Buffer | null; out: Buffer | null; resp: Buffer };

for (let i = 0; i < ports.length; i++) {
  const id = `ap${String(i + 1).padStart(2, "0")}`;
  const resp = responseFor(id);
  Bun.listen<State>({
    hostname: "127.0.0.1",
    port: ports[i]!,
    socket: {
      binaryType: "buffer",
      open(s) {
        s.data = { pending: null, out: null, resp };
      },
      data(s, chunk: Buffer) {
        const st = s.data;
        let buf = chunk;
        let from = 0;
        if (st.pending) {
          from = Math.max(0, st.pending.length - 3);
          buf = Buffer.concat([st.pending, chunk]);
          st.pending = null;
        }
        let count = 0;
        let start = 0;
        for (;;) {
          const at = buf.indexOf(CRLFCRLF, from);
          if (at < 0) break;
          count++;
          start = at + 4;
          from = start;
        }
        if (start < buf.length) st.pending = Buffer.from(buf.subarray(start)); // copy: don't pin the chunk
        if (count === 0) return;
        let out: Buffer = count === 1 ? st.resp : Buffer.concat(Array(count).fill(st.resp));
        if (st.out) out = Buffer.concat([st.out, out]);
        const n = s.write(out);
        st.out = n < out.length ? Buffer.from(out.subarray(n)) : null;
      },
      drain(s) {
        const st = s.data;
        if (!st.out) return;
        const n = s.write(st.out);
        st.out = n < st.out.length ? Buffer.from(st.out.subarray(n)) : null;
      },
      error() {},
      close() {},
    },
  });
}

console.log(`ready ${ports.join(" ")}`);

// Never outlive the benchmark that started us.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(0);
}, 500).unref?.();
