import type pg from 'pg';

// On loopback a write costs far more than its bytes (the kernel delivers it to the server inside
// the syscall): statements sent in the same tick leave in one write. process.nextTick runs after
// the microtasks queued meanwhile, so a query sent right after an `await` that has already
// settled still makes it.
const corked = new WeakSet<pg.Client>();

/** Holds the client's socket writes until the end of this tick, then sends them as one. */
export function coalesceWrites(c: pg.Client): void {
  if (corked.has(c)) return;
  corked.add(c);
  const { stream } = c.connection;
  stream.cork();
  process.nextTick(() => {
    corked.delete(c);
    stream.uncork();
  });
}
