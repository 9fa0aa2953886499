// One coarse clock and one deadline sweep for every connection, instead of a timer per
// socket: connections carry a `deadline` (ms since epoch, 0 = none) and a sweep every
// TICK ms calls `expire()` on the ones past it. 100 ms granularity is plenty for
// connect/server/idle timeouts counted in seconds.

export const TICK = 100;

export interface Timed {
  deadline: number;
  expire(): void;
}

export const clock = { now: Date.now(), sec: Math.floor(Date.now() / 1000) };

const watched = new Set<Timed>();
let timer: ReturnType<typeof setInterval> | null = null;

function sweep(): void {
  const now = Date.now();
  clock.now = now;
  clock.sec = Math.floor(now / 1000);
  for (const t of watched) {
    if (t.deadline !== 0 && t.deadline <= now) {
      t.deadline = 0;
      t.expire();
    }
  }
}

export function watch(t: Timed): void {
  watched.add(t);
  if (timer === null) {
    timer = setInterval(sweep, TICK);
    timer.unref();
  }
}

export function unwatch(t: Timed): void {
  watched.delete(t);
}

/** Fresh time for the rare places that need better than TICK (none on the hot path). */
export function tickNow(): number {
  clock.now = Date.now();
  clock.sec = Math.floor(clock.now / 1000);
  return clock.now;
}
