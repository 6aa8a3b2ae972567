import { LRUCache } from 'lru-cache';
import { retryAfterSeconds, type RateDecision, type RateLimitStore } from './store.ts';

const ALLOWED: RateDecision = Object.freeze({ allowed: true });

/**
 * Buckets in this process, for a single replica (no REDIS_URL). Bounded: a bucket forgotten under
 * pressure starts full again, which only matters with more live keys than entries.
 */
export function createMemoryRateLimitStore(maxBuckets = 100_000, now: () => number = () => performance.now()): RateLimitStore {
  const buckets = new LRUCache<string, { tokens: number; at: number }>({ max: maxBuckets });
  return {
    name: 'memory',
    take(bucket, limit) {
      const t = now();
      let b = buckets.get(bucket);
      if (b === undefined) buckets.set(bucket, (b = { tokens: limit.burst, at: t }));
      // Updated in place: one map operation per request, on the path of every keyed request.
      const tokens = Math.min(limit.burst, b.tokens + ((t - b.at) * limit.ratePerMinute) / 60_000);
      b.at = t;
      if (tokens >= 1) {
        b.tokens = tokens - 1;
        return ALLOWED;
      }
      b.tokens = tokens;
      return { allowed: false, retryAfterSeconds: retryAfterSeconds(1 - tokens, limit) };
    },
    check: async () => undefined,
    close: async () => undefined,
  };
}
