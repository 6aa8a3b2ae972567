import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKeyVerifier, type ApiKeyVerifier } from '../../src/auth/api-key.ts';
import { createPeppers } from '../../src/auth/api-key-pepper.ts';
import { parseApiKey } from '../../src/auth/api-key-secret.ts';
import { createLocalKeyProvider } from '../../src/crypto/keys/local.ts';
import { createPool, type Pool } from '../../src/db/pool.ts';
import { createLogger } from '../../src/log.ts';
import { loadPolicy } from '../../src/policy/load.ts';
import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';
import { createMemoryRateLimitStore } from '../../src/rate-limit/memory.ts';
import { createApiKey } from '../../src/records/api-keys.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';
import { POLICY_FILE } from '../support/gateway.ts';

// A wrong secret for a real key and a key id that does not exist must cost the same and answer
// the same, so that timing tells an attacker nothing about which key ids exist. Statistical, for
// a shared and noisy machine: many tries of each, interleaved so both meet the same noise, and
// their medians compared with a generous bound. Both are measured with the key's row cached (the
// steady state) and uncached (each try a database lookup, as for a never-seen id).

let db: TestDatabase;
let pool: Pool;
let verifier: ApiKeyVerifier;
let keyId: string;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.appUrl, { max: 2 });
  await withClient(db.adminUrl, (c) => c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-t', 'T')`));
  const peppers = createPeppers(pool, createLocalKeyProvider(randomBytes(32)));
  const created = await createApiKey(pool, peppers, await loadPolicy(POLICY_FILE, PHI_FIELDS), { ratePerMinute: 600, burst: 60 }, {
    actor: 'test',
    clinics: null,
    role: null,
    purpose: 'HSYSADMIN',
    audit: () => undefined,
  }, { partner: 'timing-lab', clinics: ['c-t'], fields: ['mrn'], purpose: 'TREAT' });
  keyId = parseApiKey(created.key)!.id;
  verifier = createApiKeyVerifier({ db: pool, peppers, rateLimits: createMemoryRateLimitStore(), logger: createLogger('silent') });
});
afterAll(async () => {
  await verifier?.close();
  await pool?.end();
  await db?.drop();
});

const secret = () => randomBytes(32).toString('base64url');

/** Nanoseconds until the verifier refused, and how it refused. */
async function attempt(credential: string): Promise<{ ns: number; answer: string }> {
  const started = process.hrtime.bigint();
  const answer = await verifier.verify(credential).then(
    () => 'accepted',
    (e: { code: string; reason: string; message: string }) => `${e.code}/${e.reason}/${e.message}`,
  );
  return { ns: Number(process.hrtime.bigint() - started), answer };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function compare(tries: number, wrongSecret: () => string, unknownId: () => string) {
  const times = { wrong: [] as number[], unknown: [] as number[] };
  const answers = new Set<string>();
  for (let i = 0; i < tries; i++) {
    // Alternate which goes first, so neither always runs right after the other's work.
    const order = i % 2 === 0 ? (['wrong', 'unknown'] as const) : (['unknown', 'wrong'] as const);
    for (const which of order) {
      const { ns, answer } = await attempt(which === 'wrong' ? wrongSecret() : unknownId());
      times[which].push(ns);
      answers.add(answer);
    }
  }
  return { ratio: median(times.wrong) / median(times.unknown), answers: [...answers], medians: { wrong: median(times.wrong), unknown: median(times.unknown) } };
}

describe('a wrong secret and an unknown key id', () => {
  it('cost the same and answer the same in the steady state (rows cached)', async () => {
    const unknown = randomUUID();
    const result = await compare(3_000, () => `phg_${keyId}_${secret()}`, () => `phg_${unknown}_${secret()}`);
    expect(result.answers).toEqual(['UNAUTHENTICATED/invalid_api_key/The API key is not valid.']);
    expect(result.ratio, JSON.stringify(result.medians)).toBeGreaterThan(0.5);
    expect(result.ratio, JSON.stringify(result.medians)).toBeLessThan(2);
  });

  it('cost the same and answer the same when each try looks the id up in the database', async () => {
    const result = await compare(
      300,
      () => {
        verifier.forget(keyId);
        return `phg_${keyId}_${secret()}`;
      },
      () => `phg_${randomUUID()}_${secret()}`,
    );
    expect(result.answers).toEqual(['UNAUTHENTICATED/invalid_api_key/The API key is not valid.']);
    expect(result.ratio, JSON.stringify(result.medians)).toBeGreaterThan(0.5);
    expect(result.ratio, JSON.stringify(result.medians)).toBeLessThan(2);
  });
});
