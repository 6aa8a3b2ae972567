import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unpackPhi } from '../../src/db/packed-phi.ts';
import { fromPgBase64 } from '../../src/db/pg-base64.ts';
import { PATIENT_PACKED_COLUMNS, searchByBlindIndex } from '../../src/db/patients.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';
import { firstStatementOf, planOfExecute, underRequestContext } from '../support/statement-plan.ts';

// 052: the newest patient key that a patient read joins (src/db/patients.ts, KEY_JOIN) comes from
// patient_keys' primary key alone, an index-only scan, not the index and then the table's page.

let db: TestDatabase;
const patients = Array.from({ length: 200 }, () => randomUUID());
const target = patients[17]!;
const admin = <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => withClient(db.adminUrl, fn);

beforeAll(async () => {
  db = await createTestDatabase();
  await admin(async (c) => {
    await c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-a', 'A')`);
    await c.query(
      `INSERT INTO phigate.patients (id, clinic_id, mrn_bidx, mrn, ssn_bidx) SELECT id, 'c-a', convert_to(id::text, 'UTF8'), '\\x00', convert_to('ssn-' || id::text, 'UTF8') FROM unnest($1::uuid[]) id`,
      [patients],
    );
    // Every patient has version 1; the one looked up was rotated to 2, and 3 is someone else's.
    await c.query(`INSERT INTO phigate.patient_keys (patient_id, version, clinic_id, clinic_version, wrapped) SELECT id, 1, 'c-a', 1, '\\x0101' FROM unnest($1::uuid[]) id`, [patients]);
    await c.query(`INSERT INTO phigate.patient_keys (patient_id, version, clinic_id, clinic_version, wrapped) VALUES ($1, 2, 'c-a', 2, '\\x0202'), ($2, 3, 'c-a', 2, '\\x0303')`, [
      target,
      patients[18],
    ]);
    // As autovacuum leaves keys, which are written once: all-visible.
    await c.query('VACUUM (ANALYZE) phigate.patient_keys, phigate.patients');
  });
});

afterAll(async () => {
  await db?.drop();
});

describe("a patient read's newest key", () => {
  it('is read from the primary key alone, and is the newest version', async () => {
    const { plan, row } = await admin(async (c) => {
      await c.query('BEGIN');
      try {
        await underRequestContext(c, { actor: 'reg-a', roles: 'registrar', clinics: 'c-a' });
        const quota = { take: async () => ({ allowed: true as const }) };
        const search = await firstStatementOf((client) => searchByBlindIndex(client, 'ssn_bidx', [], quota, { kind: 'user', subject: 'reg-a' }, 30));
        await c.query(`PREPARE search(bytea[]) AS ${search}`);
        const wanted = `ARRAY[convert_to('ssn-${target}', 'UTF8')]`;
        const plan = await planOfExecute(c, `search(${wanted})`);
        const found = await c.query<{ id: string; key_version: number; key_clinic_version: number; phi: string }>(`EXECUTE search(${wanted})`);
        // The wrapped key is packed after the row's ciphertexts.
        return { plan, row: found.rows.map((r) => ({ ...r, key_wrapped: unpackPhi(fromPgBase64(r.phi), PATIENT_PACKED_COLUMNS.length + 1).at(-1) })) };
      } finally {
        await c.query('ROLLBACK');
      }
    });
    expect(row).toEqual([expect.objectContaining({ id: target, key_version: 2, key_clinic_version: 2, key_wrapped: Buffer.from([2, 2]) })]);
    expect(plan).toMatch(/Index Only Scan Backward using patient_keys_pkey on patient_keys k \(actual rows=1(\.00)? loops=1\)/);
    expect(plan).toMatch(/Heap Fetches: 0/);
  });
});
