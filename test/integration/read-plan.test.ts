import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { patientsByIds } from '../../src/db/patients.ts';
import type { RequestTransaction } from '../../src/db/transaction.ts';
import { TEST_APP_ROLE } from '../support/global-setup.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';

// 043: a read by id asks the care team about its one patient, whatever the care team's size. Under
// 035's policy the generic plan read the actor's whole care team into a hash table on every
// statement (bench/README.md, "A smaller row-security plan for a read").

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MIGRATION_035 = readFileSync(path.join(ROOT, 'schema/migrations/035_read_cpu.sql'), 'utf8');
const POLICY_035 = /CREATE POLICY patients_select ON phigate\.patients[\s\S]*?\n\);/.exec(MIGRATION_035)![0];
// 035's ctx_patient_reach(): PL/pgSQL, a query of role_scopes on every statement.
const REACH_035 = /CREATE FUNCTION phigate\.ctx_patient_reach\(\)[\s\S]*?\n\$\$;/.exec(MIGRATION_035)![0].replace('CREATE FUNCTION', 'CREATE OR REPLACE FUNCTION');

let db: TestDatabase;
const ids = Array.from({ length: 300 }, () => randomUUID());
// Patients of two other clinics, so that the clinic test of patients_select narrows the table
// (patients_clinic_id) as much as in the bench's data set of 2,000 patients in three clinics.
const others = Array.from({ length: 1_400 }, (_, i) => ({ id: randomUUID(), clinic: i % 2 === 0 ? 'c-b' : 'c-c' }));

/** The text patientsByIds sends for `ids`: the gateway's own statement, not a copy of it. */
async function sentFor(ids: readonly string[]): Promise<string> {
  let text = '';
  const tx = { query: async (t: string) => ((text = t), { rows: [] }) } as unknown as RequestTransaction;
  await patientsByIds(tx, ids);
  return text;
}

/** The generic plan of one of the gateway's statements for a physician on the care team. */
async function gatewayPlan(c: pg.Client, text: string, types: string, arg: string, verbose = false): Promise<string> {
  await c.query(`SELECT set_config('phigate.actor', 'dr', true), set_config('phigate.actor_kind', 'user', true), set_config('phigate.roles', 'physician', true),
                        set_config('phigate.clinics', 'c-a', true), set_config('plan_cache_mode', 'force_generic_plan', true)`);
  await c.query(`SET LOCAL ROLE ${TEST_APP_ROLE}`);
  await c.query(`PREPARE gateway_read(${types}) AS ${text}`);
  const { rows } = await c.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, VERBOSE ${verbose}, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE gateway_read(${arg})`);
  await c.query('DEALLOCATE gateway_read');
  await c.query('RESET ROLE');
  return rows.map((r) => r['QUERY PLAN']).join('\n');
}

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
    await c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-b', 'B'), ('c-c', 'C')`);
    await c.query(`INSERT INTO phigate.patients (id, clinic_id, mrn_bidx, mrn) SELECT id, clinic, convert_to(id::text, 'UTF8'), '\\x00' FROM unnest($1::uuid[], $2::text[]) AS o(id, clinic)`, [
      others.map((o) => o.id),
      others.map((o) => o.clinic),
    ]);
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
    // By the patient on care_team's key, which holds the clinic care_team's own row security asks for (064).
    expect(now.plan).toMatch(/Index Only Scan using care_team_pkey on care_team ct\b[^\n]*\(actual rows=1(\.00)? loops=1\)/);
    // The same check sees 035's hash, so it would see one come back.
    expect(before.rows).toBe(1);
    expect(before.plan).toMatch(/hashed SubPlan/);
  });
});

describe("the gateway's read of one patient by id", () => {
  it('probes an index on the id for its one row, not a bitmap scan as = ANY($1) of one id was planned', async () => {
    const one = await sentFor([ids[7]!]);
    const many = await sentFor([ids[7]!, ids[8]!]);
    expect(one).not.toBe(many);
    const { byId, byAny } = await admin(async (c) => {
      await c.query('BEGIN');
      try {
        return {
          byId: await gatewayPlan(c, one, 'uuid', `'${ids[7]}'`),
          byAny: await gatewayPlan(c, many, 'uuid[]', `ARRAY['${ids[7]}']::uuid[]`),
        };
      } finally {
        await c.query('ROLLBACK');
      }
    });
    expect(byId).toMatch(/Index Scan using patients_(pkey|id_clinic) on patients p\b[^\n]*\(actual rows=1(\.00)? loops=1\)/);
    expect(byId).not.toMatch(/Bitmap Heap Scan on patients p\b|patients_clinic_id/);
    // The same check sees the bitmap scan of the statement a read of several ids still sends
    // (on PostgreSQL 18 with the bench's 2,000 patients, through patients_clinic_id).
    expect(byAny).toMatch(/Bitmap Heap Scan on patients p\b/);
  });

  it('asks how far the request reaches as an expression over its roles, not a function call with a query of its own (056)', async () => {
    const one = await sentFor([ids[7]!]);
    const { now, before } = await admin(async (c) => {
      await c.query('BEGIN');
      try {
        const now = await gatewayPlan(c, one, 'uuid', `'${ids[7]}'`, true);
        await c.query(REACH_035);
        return { now, before: await gatewayPlan(c, one, 'uuid', `'${ids[7]}'`, true) };
      } finally {
        await c.query('ROLLBACK');
      }
    });
    expect(now).toMatch(/\(actual rows=1(\.00)? loops=1\)/);
    expect(now).not.toMatch(/ctx_patient_reach/);
    expect(now).toMatch(/&& '\{nurse,physician\}'::text\[\]\) THEN 'care_team'::text/);
    // The same check sees 035's PL/pgSQL function called in the plan.
    expect(before).toMatch(/phigate\.ctx_patient_reach\(\)/);
  });
});
