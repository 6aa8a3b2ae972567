import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';
import { ACTORS, CLINIC_SETS, ROLE_SETS, seedPolicyGrid, visibleGrid } from '../support/policy-grid.ts';

// 035 rewrote patients' row security for speed and claims the same rows for every request. This
// holds it to that: the visible rows under 035's policy and under 034's, read from 034's own file,
// over a grid of actors, role sets and clinic sets, with care teams, break-glass grants (live,
// revoked, expired, cross-clinic) and partner keys (live, revoked, expired, covering or not).

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const POLICY_034 = /CREATE POLICY patients_select ON phigate\.patients[\s\S]*?\n\);/.exec(
  readFileSync(path.join(ROOT, 'schema/migrations/034_break_glass_clinic.sql'), 'utf8'),
)![0];

let db: TestDatabase;

const admin = <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => withClient(db.adminUrl, fn);

const PATIENTS = "SELECT string_agg(id::text, ',' ORDER BY id) AS v FROM phigate.patients";

beforeAll(async () => {
  db = await createTestDatabase();
  await admin((c) => seedPolicyGrid(c, { encounters: false }));
});

afterAll(async () => {
  await db?.drop();
});

describe("035's patients policy against 034's", () => {
  it('shows exactly the rows 034 showed, for every context of the grid, under two policies of roles', async () => {
    // Another policy file's role scopes (migrate writes role_scopes from it): the partner role
    // sees nothing, a physician a whole clinic, the nurse is not a role at all.
    const otherScopes = async (c: pg.Client) => {
      await c.query(`UPDATE phigate.role_scopes SET row_scope = 'none' WHERE role = 'partner'`);
      await c.query(`UPDATE phigate.role_scopes SET row_scope = 'clinic' WHERE role = 'physician'`);
      await c.query(`DELETE FROM phigate.role_scopes WHERE role = 'nurse'`);
    };
    const { now, before } = await admin(async (c) => {
      await c.query('BEGIN');
      try {
        const now = await visibleGrid(c, PATIENTS);
        await c.query('SAVEPOINT scopes');
        await otherScopes(c);
        now.push(...(await visibleGrid(c, PATIENTS)));
        await c.query('ROLLBACK TO SAVEPOINT scopes');
        await c.query('DROP POLICY patients_select ON phigate.patients');
        await c.query(POLICY_034);
        const before = await visibleGrid(c, PATIENTS);
        await otherScopes(c);
        before.push(...(await visibleGrid(c, PATIENTS)));
        return { now, before };
      } finally {
        await c.query('ROLLBACK');
      }
    });
    expect(now.length).toBe(2 * ACTORS.length * ROLE_SETS.length * CLINIC_SETS.length);
    expect(now).toEqual(before);
    // The grid is not vacuous: it sees nothing, something and everything somewhere.
    const seen = new Set(now.map((l) => l.split(' -> ')[1]));
    expect(seen.has('')).toBe(true);
    expect(seen.size).toBeGreaterThan(5);
  });
});
