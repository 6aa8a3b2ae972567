import { createApiKeyVerifier } from '../src/auth/api-key.ts';
import { createPeppers } from '../src/auth/api-key-pepper.ts';
import { createAuthenticator } from '../src/auth/authenticate.ts';
import { createOidcVerifier } from '../src/auth/oidc.ts';
import { createLocalKeyProvider } from '../src/crypto/keys/local.ts';
import { createPool } from '../src/db/pool.ts';
import { createLogger } from '../src/log.ts';
import { createMemoryRateLimitStore } from '../src/rate-limit/memory.ts';

export interface AuthCost {
  readonly tries: number;
  /** Median microseconds of one `authenticate(header)`, in steady state (token cached, key row cached). */
  readonly cachedJwtUs: number;
  readonly apiKeyUs: number;
}

/**
 * Authentication alone, in this process: the gateway's authenticator for a token it has already
 * verified once (the cached-JWT path every user request takes) against a partner key whose row
 * is cached (the path every keyed request takes, its in-process rate-limit bucket included).
 * Interleaved, so both meet the same machine state; medians.
 */
export async function measureAuthCost(opts: { appUrl: string; issuer: string; masterKey: Buffer; token: string; apiKey: string; tries: number }): Promise<AuthCost> {
  const pool = createPool(opts.appUrl, { max: 1 });
  const apiKeys = createApiKeyVerifier({
    db: pool,
    peppers: createPeppers(pool, createLocalKeyProvider(opts.masterKey)),
    rateLimits: createMemoryRateLimitStore(),
    logger: createLogger('silent'),
    cacheTtlMs: 3_600_000,
  });
  const oidc = createOidcVerifier({ issuer: opts.issuer, audience: 'phigate', algorithms: ['ES256'], clockToleranceSeconds: 30, rolesClaim: 'roles', clinicsClaim: 'clinics', mfaAcrValues: [] });
  const authenticate = createAuthenticator({ oidc, apiKeys });
  const headers = { jwt: `Bearer ${opts.token}`, key: `ApiKey ${opts.apiKey}` };
  const times = { jwt: [] as number[], key: [] as number[] };
  try {
    await authenticate(headers.jwt);
    await authenticate(headers.key);
    for (let i = 0; i < opts.tries; i++) {
      for (const which of i % 2 === 0 ? (['jwt', 'key'] as const) : (['key', 'jwt'] as const)) {
        const started = process.hrtime.bigint();
        await authenticate(headers[which]);
        times[which].push(Number(process.hrtime.bigint() - started) / 1000);
      }
    }
  } finally {
    await apiKeys.close();
    await pool.end();
  }
  const median = (xs: number[]) => Math.round([...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! * 10) / 10;
  return { tries: opts.tries, cachedJwtUs: median(times.jwt), apiKeyUs: median(times.key) };
}
