import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_APP_ROLE } from '../support/global-setup.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';

// 043: a read by id asks the care team about its one patient, whatever the care team's size. Under
// 035's policy the generic plan read the actor's whole care team into a hash table on every
// statement (bench/README.md, "A smaller row-security plan for a read").

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const POLICY_035 = /CREATE POLICY patients_select ON phigate\.patients[\s\S]*?\n\);/.exec(
  readFileSync(path.join(ROOT, 'schema/migrations/035_read_cpu.sql'), 'utf8'),
)![0];

let db: TestDatabase;
const ids = Array.from({ length: 300 }, () => randomUUID());

const admin = <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => withClient(db.adminUrl, fn);

/** The generic plan of a read by id as a physician on the care team, and what it returns. */
async function byIdPlan(c: pg.Client): Promise<{ plan: string; rows: number }> {
  await c.query(`SELECT set_config('phigate.actor', 'dr', true), set_config('phigate.roles', 'physician', true),
                        set_config('phigate.clinics', 'c-a', true), set_config('plan_cache_mode', 'force_generic_plan', true)`);
  await c.query(`SET LOCAL ROLE ${TEST_APP_ROLE}`);
  await c.query('PREPARE by_id(uuid[]) AS SELECT id FROM phigate.patients WHERE id = ANY($1)');
  // EXPLAIN EXECUTE takes no bind parameters; the id is one of ours.
  const { rows } = await c.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE by_id(ARRAY['${ids[7]}']::uuid[])`);
  await c.query('DEALLOCATE by_id');
  await c.query('RESET ROLE');
  const plan = rows.map((r) => r['QUERY PLAN']).join('\n');
  return { plan, rows: Number(/rows=(\d+)/.exec(plan)![1]) };
}

beforeAll(async () => {
  db = await createTestDatabase();
  await admin(async (c) => {
    await c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-a', 'A')`);
    await c.query(`INSERT INTO phigate.patients (id, clinic_id, mrn_bidx, mrn) SELECT id, 'c-a', convert_to(id::text, 'UTF8'), '\\x00' FROM unnest($1::uuid[]) id`, [ids]);
    await c.query(`INSERT INTO phigate.care_team (patient_id, subject, clinic_id) SELECT id, 'dr', 'c-a' FROM unnest($1::uuid[]) id`, [ids]);
    await c.query('ANALYZE phigate.patients, phigate.care_team');
  });
});

afterAll(async () => {
  await db?.drop();
});

describe('the care-team test of a read by id', () => {
  it('probes the care team for the one patient instead of hashing the whole care team', async () => {
    const { now, before } = await admin(async (c) => {
      await c.query('BEGIN');
      try {
        const now = await byIdPlan(c);
        await c.query('DROP POLICY patients_select ON phigate.patients');
        await c.query(POLICY_035);
        return { now, before: await byIdPlan(c) };
      } finally {
        await c.query('ROLLBACK');
      }
    });
    expect(now.rows).toBe(1);
    expect(now.plan).not.toMatch(/hashed SubPlan/);
    expect(now.plan).toMatch(/Index (Only )?Scan using care_team_subject on care_team ct\b[^\n]*\(actual rows=1(\.00)? loops=1\)/);
    // The same check sees 035's hash, so it would see one come back.
    expect(before.rows).toBe(1);
    expect(before.plan).toMatch(/hashed SubPlan/);
  });
});
