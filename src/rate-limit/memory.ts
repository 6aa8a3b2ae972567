import { createLru } from '../cache/lru.ts';
import { retryAfterSeconds, type RateLimitStore } from './store.ts';

/**
 * Buckets in this process, for a single replica (no REDIS_URL). Bounded: a bucket forgotten under
 * pressure starts full again, which only matters with more live keys than entries.
 */
export function createMemoryRateLimitStore(maxBuckets = 100_000, now: () => number = () => performance.now()): RateLimitStore {
  const buckets = createLru<{ tokens: number; at: number }>(maxBuckets);
  return {
    name: 'memory',
    take(bucket, limit) {
      const t = now();
      const b = buckets.get(bucket) ?? { tokens: limit.burst, at: t };
      const tokens = Math.min(limit.burst, b.tokens + ((t - b.at) * limit.ratePerMinute) / 60_000);
      const allowed = tokens >= 1;
      buckets.set(bucket, { tokens: allowed ? tokens - 1 : tokens, at: t });
      return allowed ? { allowed } : { allowed, retryAfterSeconds: retryAfterSeconds(1 - tokens, limit) };
    },
    check: async () => undefined,
    close: async () => undefined,
  };
}
