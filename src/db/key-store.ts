import type { KeyPurpose, KeyStore, WrappedKeyRecord } from '../crypto/keys/keyring.ts';
import type { Pool } from './pool.ts';

interface Row {
  purpose: KeyPurpose;
  scope: string;
  version: number;
  wrapped: Buffer;
  provider: string;
  key_ref: string;
}

const toRecord = (r: Row): WrappedKeyRecord => ({
  purpose: r.purpose,
  scope: r.scope,
  version: r.version,
  wrapped: r.wrapped,
  provider: r.provider,
  keyRef: r.key_ref,
});

const COLUMNS = 'purpose, scope, version, wrapped, provider, key_ref';

/**
 * Wrapped keys live in phigate.keyring, outside any request transaction: a key created for a new
 * clinic must survive the request that needed it, even when that request rolls back.
 */
export function createPgKeyStore(pool: Pool): KeyStore {
  return {
    async latest(purpose, scope) {
      const { rows } = await pool.query<Row>(
        `SELECT ${COLUMNS} FROM phigate.keyring WHERE purpose = $1 AND scope = $2 ORDER BY version DESC LIMIT 1`,
        [purpose, scope],
      );
      return rows[0] ? toRecord(rows[0]) : null;
    },
    async get(purpose, scope, version) {
      const { rows } = await pool.query<Row>(
        `SELECT ${COLUMNS} FROM phigate.keyring WHERE purpose = $1 AND scope = $2 AND version = $3`,
        [purpose, scope, version],
      );
      return rows[0] ? toRecord(rows[0]) : null;
    },
    async insert(rec) {
      const res = await pool.query(
        `INSERT INTO phigate.keyring (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
        [rec.purpose, rec.scope, rec.version, rec.wrapped, rec.provider, rec.keyRef],
      );
      return res.rowCount === 1;
    },
  };
}
