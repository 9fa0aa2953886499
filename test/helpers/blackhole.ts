// A loopback address where connect() hangs, for connect-timeout tests without leaving the
// machine: a listening socket (made through libc, since Bun.listen accepts by itself) with a
// backlog of 0 that never accepts. Once its accept queue holds one connection, the kernel
// drops further SYNs, so the next connect() stays in SYN_SENT until the caller gives up.
// Linux only.

import { dlopen, FFIType, ptr } from "bun:ffi";
import type { Socket } from "bun";

const AF_INET = 2;
const SOCK_STREAM = 1;

function libc() {
  return dlopen("libc.so.6", {
    socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    bind: { args: [FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
    listen: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    getsockname: { args: [FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
    close: { args: [FFIType.i32], returns: FFIType.i32 },
  });
}

export interface Blackhole {
  port: number;
  close(): void;
}

/** Opens the blackhole on 127.0.0.1 and fills its accept queue; connect() to `port` then hangs. */
export async function blackhole(): Promise<Blackhole> {
  const lib = libc();
  const c = lib.symbols;
  const fd = c.socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw new Error("socket() failed");
  const sa = new Uint8Array(16); // sockaddr_in: family (host order), port (network order), 127.0.0.1
  sa[0] = AF_INET;
  sa[4] = 127;
  sa[7] = 1;
  if (c.bind(fd, ptr(sa), 16) !== 0 || c.listen(fd, 0) !== 0) {
    c.close(fd);
    throw new Error("bind/listen failed");
  }
  const len = new Uint32Array([16]);
  c.getsockname(fd, ptr(sa), ptr(len));
  const port = (sa[2] << 8) | sa[3];
  // fill the accept queue: these complete (the kernel answers them), later ones hang
  const fillers: Socket[] = [];
  for (let i = 0; i < 2; i++) {
    void Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(s) {
          fillers.push(s);
        },
        data() {},
        connectError() {},
      },
    }).catch(() => {});
  }
  await Bun.sleep(100);
  if (fillers.length === 0) {
    c.close(fd);
    lib.close();
    throw new Error("could not fill the accept queue");
  }
  return {
    port,
    close() {
      for (const s of fillers) s.terminate();
      c.close(fd);
      lib.close();
    },
  };
}
