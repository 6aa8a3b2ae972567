import type { Config } from '../config.ts';
import type { KeyProvider } from '../crypto/keys/provider.ts';
import type { Pool } from '../db/pool.ts';
import type { Logger } from '../log.ts';
import { createMemoryRateLimitStore } from '../rate-limit/memory.ts';
import type { RateLimitStore } from '../rate-limit/store.ts';
import type { ApiKeyService } from '../records/api-keys.ts';
import { createApiKeyVerifier, type ApiKeyVerifier } from './api-key.ts';
import { createPeppers } from './api-key-pepper.ts';

export interface PartnerKeys {
  readonly verifier: ApiKeyVerifier;
  readonly service: ApiKeyService;
  readonly rateLimits: RateLimitStore;
  /** For /readyz: the shared rate-limit store, when there is one. */
  readonly readiness: Readonly<Record<string, () => Promise<unknown>>>;
  close(): Promise<void>;
}

/**
 * Everything partner API keys need in a gateway: pepper, verifier, rate-limit store (Redis when
 * configured). `db` is the pre-authentication pool, not the requests' (see ApiKeyVerifierOptions).
 */
export async function createPartnerKeys(deps: { config: Config; db: Pool; provider: KeyProvider; logger: Logger }): Promise<PartnerKeys> {
  const { config, db, provider, logger } = deps;
  const peppers = createPeppers(db, provider);
  // The Redis client is loaded only with REDIS_URL: otherwise ~3.8 MB of live heap for the process's life, up to 1.5x that at the old space's peak (src/heap.ts).
  const rateLimits =
    config.redisUrl === null
      ? createMemoryRateLimitStore()
      : (await import('../rate-limit/redis.ts')).createRedisRateLimitStore(config.redisUrl, config.redisKeyPrefix, logger);
  const verifier = createApiKeyVerifier({ db, peppers, rateLimits, logger, cacheTtlMs: config.apiKeys.cacheSeconds * 1000 });
  return {
    verifier,
    service: { peppers, defaults: config.apiKeys, forget: (id) => verifier.forget(id) },
    rateLimits,
    readiness: rateLimits.name === 'redis' ? { rateLimits: () => rateLimits.check() } : {},
    async close() {
      await verifier.close();
      await rateLimits.close();
    },
  };
}
