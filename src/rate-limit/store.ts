/** One key's token bucket: `burst` tokens at most, refilled at `ratePerMinute`; a request takes one. */
export interface RateLimit {
  readonly ratePerMinute: number;
  readonly burst: number;
}

export type RateDecision = { readonly allowed: true } | { readonly allowed: false; readonly retryAfterSeconds: number };

/**
 * Where buckets live: in this process, or in Redis so that every replica draws from one bucket.
 * `take` rejects when the store cannot answer: the caller refuses the request (fail closed).
 */
export interface RateLimitStore {
  readonly name: 'memory' | 'redis';
  /** Synchronous for the in-process store: a keyed request then waits for nothing. */
  take(bucket: string, limit: RateLimit): RateDecision | Promise<RateDecision>;
  /** Readiness: resolves when the store answers. */
  check(): Promise<void>;
  close(): Promise<void>;
}

/** Whole seconds until one token is back: what `Retry-After` says, never 0. */
export const retryAfterSeconds = (missingTokens: number, limit: RateLimit): number =>
  Math.max(1, Math.ceil((missingTokens * 60) / limit.ratePerMinute));
