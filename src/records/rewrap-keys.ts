import { keyContext, type KeyProvider } from '../crypto/keys/provider.ts';
import { inKeyTransaction, type KeyAdmin } from './key-admin.ts';

interface Wrapped {
  purpose: string;
  scope: string;
  version: number;
  wrapped: Buffer;
}

// The tables whose rows the master key wraps directly; patient keys are wrapped by data keys and
// values by patient keys, so neither changes.
const TABLES = [
  {
    select: 'SELECT purpose, scope, version, wrapped, provider, key_ref FROM phigate.keyring',
    update: `UPDATE phigate.keyring SET wrapped = $1, provider = $2, key_ref = $3
             WHERE purpose = $4 AND scope = $5 AND version = $6 AND provider = $7 AND key_ref = $8`,
  },
  {
    select: `SELECT 'api-key-pepper' AS purpose, '*' AS scope, version, wrapped, provider, key_ref FROM phigate.api_key_peppers`,
    update: `UPDATE phigate.api_key_peppers SET wrapped = $1, provider = $2, key_ref = $3
             WHERE $4 = 'api-key-pepper' AND $5 = '*' AND version = $6 AND provider = $7 AND key_ref = $8`,
  },
] as const;

/**
 * Master-key rotation: every key wrapped by `from` (the old local master key or KMS key) is
 * unwrapped and wrapped again by `to`, with the same encryption context; no row of PHI is read or
 * written. One short transaction per key, which only replaces a wrapping still made by `from`, so
 * a run stopped or repeated is harmless. Each is a `key` audit event.
 */
export async function rewrapKeys(admin: KeyAdmin, from: KeyProvider, to: KeyProvider): Promise<{ rewrapped: number; alreadyDone: number }> {
  let rewrapped = 0;
  let alreadyDone = 0;
  for (const t of TABLES) {
    const rows = await inKeyTransaction(admin, async (c) => (await c.query<Wrapped & { provider: string; key_ref: string }>(t.select)).rows);
    for (const row of rows) {
      if (row.provider === to.name && row.key_ref === to.keyRef) {
        alreadyDone++;
        continue;
      }
      if (row.provider !== from.name || row.key_ref !== from.keyRef) continue;
      const context = keyContext(row.purpose, row.scope, row.version);
      const plaintext = await from.decryptDataKey(row.wrapped, context);
      let wrapped: Buffer;
      try {
        wrapped = await to.wrapDataKey(plaintext, context);
      } finally {
        plaintext.fill(0);
      }
      const done = await inKeyTransaction(admin, async (c, record) => {
        const r = await c.query(t.update, [wrapped, to.name, to.keyRef, row.purpose, row.scope, row.version, from.name, from.keyRef]);
        if (r.rowCount === 1) record({ typeName: 'MasterKey', field: row.purpose, patientId: null, recordId: null, detail: `rewrapped:v${row.version}` });
        return r.rowCount === 1;
      });
      if (done) rewrapped++;
    }
  }
  return { rewrapped, alreadyDone };
}
