import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PHI_CATALOGUE } from '../../src/policy/phi-fields.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';

// The SQL side of the PHI catalogue (src/policy/phi-fields.ts): each field's column exists in its
// table, holds ciphertext exactly when the catalogue says it is encrypted, sits under forced row
// security, and is out of the analytics role's reach.

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

describe('the PHI catalogue and the migrated schema agree', () => {
  it.each(PHI_CATALOGUE.map((s) => [`${s.type}.${s.field}`, s] as const))('%s', async (_name, spec) => {
    const row = await withClient(db.adminUrl, async (c) =>
      (
        await c.query<{ data_type: string; forced: boolean; analytics: boolean }>(
          `SELECT col.data_type, cls.relforcerowsecurity AS forced,
                  has_column_privilege('phigate_analytics', format('phigate.%I', $1::text), $2, 'SELECT') AS analytics
           FROM information_schema.columns col
           JOIN pg_catalog.pg_class cls ON cls.relname = col.table_name AND cls.relnamespace = 'phigate'::regnamespace
           WHERE col.table_schema = 'phigate' AND col.table_name = $1 AND col.column_name = $2`,
          [spec.table, spec.column],
        )
      ).rows[0],
    );
    expect(row, `phigate.${spec.table}.${spec.column} exists`).toBeDefined();
    expect(row!.data_type === 'bytea', 'ciphertext exactly when encrypted').toBe(spec.encrypted);
    expect(row!.forced).toBe(true);
    expect(row!.analytics).toBe(false);
  });
});
