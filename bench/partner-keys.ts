import { createPeppers } from '../src/auth/api-key-pepper.ts';
import { createLocalKeyProvider } from '../src/crypto/keys/local.ts';
import { createPool } from '../src/db/pool.ts';
import { loadPolicy } from '../src/policy/load.ts';
import { PHI_FIELDS } from '../src/policy/phi-fields.ts';
import { createApiKey } from '../src/records/api-keys.ts';

/**
 * Issues one partner key per clinic, as `phigate apikey create` would: every Patient field, a rate
 * limit out of the way of the measurement (the bucket itself is still taken on every request).
 * The keys are minted lazily, through the gateway's own role and the bench's master key.
 */
export async function partnerKeys(appUrl: string, masterKey: Buffer, policyFile: string): Promise<(clinic: string) => Promise<string>> {
  const policy = await loadPolicy(policyFile, PHI_FIELDS);
  return async (clinic) => {
    const pool = createPool(appUrl, { max: 1 });
    try {
      const created = await createApiKey(
        pool,
        createPeppers(pool, createLocalKeyProvider(masterKey)),
        policy,
        { ratePerMinute: 1_000_000, burst: 1_000_000 },
        { actor: 'bench', clinics: null, role: null, purpose: 'HSYSADMIN', audit: () => undefined },
        { partner: `bench-${clinic}`, clinics: [clinic], fields: [...PHI_FIELDS.Patient], purpose: 'TREAT' },
      );
      return created.key;
    } finally {
      await pool.end();
    }
  };
}
