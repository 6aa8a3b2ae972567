import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_APP_ROLE } from '../support/global-setup.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';

// 035 rewrote patients' row security for speed and claims the same rows for every request. This
// holds it to that: the visible rows under 035's policy and under 034's, read from 034's own file,
// over a grid of actors, role sets and clinic sets, with care teams, break-glass grants (live,
// revoked, expired, cross-clinic) and partner keys (live, revoked, expired, covering or not).

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const POLICY_034 = /CREATE POLICY patients_select ON phigate\.patients[\s\S]*?\n\);/.exec(
  readFileSync(path.join(ROOT, 'schema/migrations/034_break_glass_clinic.sql'), 'utf8'),
)![0];

let db: TestDatabase;
const p = Array.from({ length: 6 }, () => randomUUID());
const keys = { liveA: randomUUID(), liveAB: randomUUID(), revoked: randomUUID(), expired: randomUUID() };

const ROLE_SETS = [
  [],
  ['physician'],
  ['nurse', 'billing'],
  ['registrar'],
  ['compliance'],
  ['no_such_role'],
  ['partner'],
  ['partner', 'physician'],
  ['compliance', 'physician'],
  ['physician', 'registrar'],
];
const CLINIC_SETS = [[], ['c-a'], ['c-b'], ['c-a', 'c-b'], ['c-c']];
const ACTORS = ['dr', 'nobody', '', ...Object.values(keys)];

const admin = <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => withClient(db.adminUrl, fn);

/** Every context of the grid and the patients it sees, as the app role, in `c`'s transaction. */
async function visibleGrid(c: pg.Client): Promise<string[]> {
  const out: string[] = [];
  for (const actor of ACTORS) {
    for (const roles of ROLE_SETS) {
      for (const clinics of CLINIC_SETS) {
        await c.query(`SELECT set_config('phigate.actor', $1, true), set_config('phigate.roles', $2, true), set_config('phigate.clinics', $3, true)`, [
          actor,
          roles.join(','),
          clinics.join(','),
        ]);
        await c.query(`SET LOCAL ROLE ${TEST_APP_ROLE}`);
        const { rows } = await c.query<{ ids: string | null }>('SELECT string_agg(id::text, \',\' ORDER BY id) AS ids FROM phigate.patients');
        await c.query('RESET ROLE');
        out.push(`${actor}|${roles.join(',')}|${clinics.join(',')} -> ${rows[0]!.ids ?? ''}`);
      }
    }
  }
  return out;
}

beforeAll(async () => {
  db = await createTestDatabase();
  await admin(async (c) => {
    await c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-a', 'A'), ('c-b', 'B'), ('c-c', 'C')`);
    const clinicOf = ['c-a', 'c-a', 'c-a', 'c-b', 'c-b', 'c-c'];
    for (const [i, id] of p.entries()) {
      await c.query(`INSERT INTO phigate.patients (id, clinic_id, mrn_bidx, mrn) VALUES ($1, $2, $3, '\\x00')`, [id, clinicOf[i], Buffer.from(`p${i}`)]);
    }
    await c.query(`INSERT INTO phigate.care_team (patient_id, subject, clinic_id) VALUES ($1, 'dr', 'c-a'), ($2, 'dr', 'c-b')`, [p[0], p[3]]);
    const grant = `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, clinic_id, cross_clinic, reason, request_id, granted_at, expires_at, revoked_at)
                   VALUES ('dr', $1, $2, $3, $4, 'test', 'r', $5, $6, $7)`;
    const hour = (h: number) => new Date(Date.now() + h * 3_600_000);
    await c.query(grant, ['physician', p[1], 'c-a', false, hour(-1), hour(1), null]);
    await c.query(grant, ['physician', p[4], 'c-b', true, hour(-1), hour(1), null]);
    await c.query(grant, ['nurse', p[5], 'c-c', true, hour(-1), hour(1), null]);
    await c.query(grant, ['physician', p[2], 'c-a', false, hour(-1), hour(1), hour(-0.5)]);
    await c.query(grant, ['physician', p[5], 'c-c', true, hour(-3), hour(-2), null]);
    await c.query(`INSERT INTO phigate.api_key_peppers (version, wrapped, provider, key_ref) VALUES (1, '\\x00', 'local', 'test')`);
    const key = `INSERT INTO phigate.api_keys (id, partner, clinics, fields, purpose, secret_hash, pepper_version, rate_per_minute, burst, created_by, expires_at, revoked_at)
                 VALUES ($1, 'lab', $2, '{Patient.mrn}', 'TREAT', $3, 1, 60, 10, 'test', $4, $5)`;
    await c.query(key, [keys.liveA, ['c-a'], Buffer.alloc(32), null, null]);
    await c.query(key, [keys.liveAB, ['c-a', 'c-b'], Buffer.alloc(32), hour(1), null]);
    await c.query(key, [keys.revoked, ['c-a'], Buffer.alloc(32), null, hour(-1)]);
    await c.query(key, [keys.expired, ['c-a'], Buffer.alloc(32), hour(-1), null]);
  });
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
        const now = await visibleGrid(c);
        await c.query('SAVEPOINT scopes');
        await otherScopes(c);
        now.push(...(await visibleGrid(c)));
        await c.query('ROLLBACK TO SAVEPOINT scopes');
        await c.query('DROP POLICY patients_select ON phigate.patients');
        await c.query(POLICY_034);
        const before = await visibleGrid(c);
        await otherScopes(c);
        before.push(...(await visibleGrid(c)));
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
