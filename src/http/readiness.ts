export type ReadinessCheck = () => Promise<unknown>;

export interface Readiness {
  readonly ready: boolean;
  /** Per dependency, `ok` or `unavailable`; never the error itself (it can name hosts, roles or keys). */
  readonly checks: Readonly<Record<string, 'ok' | 'unavailable'>>;
}

/** A hung dependency must not hang the probe: the orchestrator would time it out and learn nothing. */
const TIMEOUT_MS = 3_000;

function within<T>(ms: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('readiness check timed out')), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

/** Runs every check at once; ready only when all pass. */
export async function checkReadiness(checks: Readonly<Record<string, ReadinessCheck>>, timeoutMs = TIMEOUT_MS): Promise<Readiness> {
  const entries = Object.entries(checks);
  const outcomes = await Promise.allSettled(entries.map(([, check]) => within(timeoutMs, Promise.resolve().then(check))));
  const results = Object.fromEntries(entries.map(([name], i) => [name, outcomes[i]?.status === 'fulfilled' ? 'ok' : 'unavailable'] as const));
  return { ready: outcomes.every((o) => o.status === 'fulfilled'), checks: results };
}

/**
 * The last outcome of `check` for `ttlMs`, shared by every caller meanwhile, and one call in
 * flight at most: an unauthenticated /readyz flood must not become a flood of requests to the
 * identity provider.
 */
export function cachedCheck(check: ReadinessCheck, ttlMs: number, now: () => number = () => Date.now()): ReadinessCheck {
  let last: { outcome: Promise<unknown>; at: number } | null = null;
  return () => {
    const at = now();
    if (last === null || at - last.at >= ttlMs) {
      const outcome = Promise.resolve().then(check);
      outcome.catch(() => undefined);
      last = { outcome, at };
    }
    return last.outcome;
  };
}
