import { createHash } from 'node:crypto';
import { createClient } from 'redis';
import type { Logger } from '../log.ts';
import { retryAfterSeconds, type RateLimitStore } from './store.ts';

// One atomic step per request: refill by the time elapsed on Redis's own clock (replicas' clocks
// never disagree about it), take a token if there is one, and keep the bucket only as long as it
// takes to fill up again. Tokens are kept in thousandths so the arithmetic stays integral.
const TAKE = `
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2]) * 1000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.floor((now - at) * rate / 60))
local allowed = 0
if tokens >= 1000 then
  tokens = tokens - 1000
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 60 / rate) + 1000)
return {allowed, 1000 - tokens}`;
const TAKE_SHA = createHash('sha1').update(TAKE).digest('hex');

/** A Redis that does not answer within this is treated as down: keyed requests are refused, not queued. */
const COMMAND_TIMEOUT_MS = 1_000;

function within<T>(work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('redis command timed out')), COMMAND_TIMEOUT_MS);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Buckets in Redis, shared by every replica. Commands are never queued while disconnected: a
 * request either gets an answer from Redis now or is refused. Connection state changes are logged
 * once each, without the URL (it can carry a password).
 */
export function createRedisRateLimitStore(url: string, prefix: string, logger: Logger): RateLimitStore {
  const client = createClient({
    url,
    disableOfflineQueue: true,
    socket: { connectTimeout: 2_000, reconnectStrategy: (retries) => Math.min(100 * 2 ** retries, 2_000) },
  });
  let down = false;
  client.on('error', (e: Error) => {
    if (down) return;
    down = true;
    logger.error({ err: { name: e.name, code: (e as NodeJS.ErrnoException).code ?? null } }, 'rate-limit store (redis) unavailable: requests with API keys are refused with 503 until it is back');
  });
  client.on('ready', () => {
    if (!down) return;
    down = false;
    logger.info('rate-limit store (redis) available again');
  });
  const connecting = client.connect().catch(() => undefined);

  const run = async (args: string[]): Promise<[number, number]> => {
    try {
      return await within(client.sendCommand(['EVALSHA', TAKE_SHA, ...args]));
    } catch (e) {
      if (!(e instanceof Error) || !e.message.startsWith('NOSCRIPT')) throw e;
      return within(client.sendCommand(['EVAL', TAKE, ...args]));
    }
  };

  return {
    name: 'redis',
    async take(bucket, limit) {
      const [allowed, missing] = await run(['1', `${prefix}bucket:${bucket}`, String(limit.ratePerMinute), String(limit.burst)]);
      return allowed === 1 ? { allowed: true } : { allowed: false, retryAfterSeconds: retryAfterSeconds(missing / 1000, limit) };
    },
    async check() {
      await within(client.sendCommand(['PING']));
    },
    async close() {
      // A Redis that never answered must not hold up shutdown: drop the connection attempt.
      if (client.isReady) await client.close();
      else client.destroy();
      await connecting;
    },
  };
}
