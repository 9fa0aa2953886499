// A client that sends its bytes, then half-closes (shutdown(SHUT_WR), as `printf ... | nc` does)
// and keeps reading until the server closes. RawClient cannot do this: Bun's end() on a
// socket without allowHalfOpen closes both directions.

/** Writes `raw`, sends FIN, returns every byte received until the server closed (or ms passed). */
export async function sendThenHalfClose(port: number, raw: string, ms = 5000): Promise<{ bytes: Buffer; closed: boolean }> {
  let bytes = Buffer.alloc(0);
  let closed = false;
  let wake = () => {};
  const done = new Promise<void>((r) => (wake = r));
  const sock = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    allowHalfOpen: true,
    socket: {
      data(_s, d) {
        bytes = Buffer.concat([bytes, d]);
      },
      end() {
        closed = true;
        wake();
      },
      close() {
        closed = true;
        wake();
      },
    },
  });
  sock.write(Buffer.from(raw, "latin1"));
  sock.shutdown();
  const timer = setTimeout(wake, ms);
  await done;
  clearTimeout(timer);
  sock.end();
  return { bytes, closed };
}
