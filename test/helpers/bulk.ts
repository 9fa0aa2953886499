// Large transfers for memory tests: deterministic 1 MiB blocks (random bytes, each stamped
// with its index so a lost, repeated or reordered block changes the checksum), a sender that
// honours backpressure (write() takes what the kernel takes; the rest goes on drain), and
// slow readers built on pause()/resume() with Bun.sleep.

import type { Socket } from "bun";

export const BLOCK = 1 << 20;

const base = Buffer.from(crypto.getRandomValues(new Uint8Array(BLOCK)));

/** Block i of the stream: the random base with i written every 64 KiB. */
export function block(i: number): Buffer {
  const b = Buffer.from(base);
  for (let o = 0; o < BLOCK; o += 65536) b.writeUInt32BE(i, o);
  return b;
}

/** sha256 (hex) of blocks 0..n-1 */
export function expectedDigest(n: number): string {
  const h = new Bun.CryptoHasher("sha256");
  for (let i = 0; i < n; i++) h.update(block(i));
  return h.digest("hex");
}

/** Writes `blocks` blocks to a socket as fast as it takes them; call onDrain() from the drain handler. */
export class BulkSender {
  private i = 0;
  private pending: Buffer | null = null;
  private resolve!: () => void;
  readonly done: Promise<void>;
  stopped = false;

  constructor(
    private readonly sock: { write(b: Uint8Array): number },
    private readonly blocks: number,
  ) {
    this.done = new Promise((r) => (this.resolve = r));
  }

  /** write as much as the socket takes now */
  pump(): void {
    while (!this.stopped) {
      if (this.pending === null) {
        if (this.i >= this.blocks) {
          this.stopped = true;
          this.resolve();
          return;
        }
        this.pending = block(this.i++);
      }
      const n = this.sock.write(this.pending);
      if (n < this.pending.length) {
        this.pending = this.pending.subarray(n > 0 ? n : 0);
        return; // the rest on drain
      }
      this.pending = null;
    }
  }

  onDrain(): void {
    this.pump();
  }
}

/**
 * Consumes bytes into a sha256 and a count; after every `every` bytes it pauses the socket for
 * `pauseMs` (a reader much slower than loopback, which still finishes).
 */
export class SlowReader {
  readonly hash = new Bun.CryptoHasher("sha256");
  count = 0;
  private nextPause: number;

  constructor(
    private readonly every = BLOCK,
    private readonly pauseMs = 40,
  ) {
    this.nextPause = every;
  }

  take(sock: Socket<unknown>, data: Uint8Array): void {
    this.hash.update(data);
    this.count += data.length;
    if (this.count >= this.nextPause) {
      this.nextPause = this.count + this.every;
      sock.pause();
      void Bun.sleep(this.pauseMs).then(() => sock.resume());
    }
  }

  digest(): string {
    return this.hash.digest("hex");
  }
}

/** Samples a value (e.g. a process's RSS) every `ms` until stopped; returns the maximum. */
export function sampler(read: () => number, ms = 50): { stop(): number; max(): number } {
  let max = read();
  const t = setInterval(() => {
    try {
      max = Math.max(max, read());
    } catch {
      // the process may be gone at the very end
    }
  }, ms);
  return {
    stop() {
      clearInterval(t);
      return max;
    },
    max: () => max,
  };
}
