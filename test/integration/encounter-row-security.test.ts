import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_APP_ROLE } from '../support/global-setup.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';

// 053 judges an encounter on its own (patient_id, clinic_id) with patients' policy, instead of
// reading its patient through patients' row security, and claims the same rows for every request
// because a foreign key keeps an encounter's clinic its patient's. This holds it to that: the
// encounters visible under 053's policy and under 012's, read from 012's own file, over a grid of
// actors, role sets and clinic sets, with care teams, break-glass grants (live, revoked, expired,
// cross-clinic) and partner keys (live, revoked, expired, covering or not); that the key refuses
// every way an encounter's clinic could part from its patient's, to the owner as well; and that the
// two policies cannot drift apart unseen.

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const POLICY_012 = /CREATE POLICY encounters_select ON phigate\.encounters[\s\S]*?\n\);/.exec(
  readFileSync(path.join(ROOT, 'schema/migrations/012_break_glass.sql'), 'utf8'),
)![0];

let db: TestDatabase;
const p = Array.from({ length: 6 }, () => randomUUID());
const clinicOf = ['c-a', 'c-a', 'c-a', 'c-b', 'c-b', 'c-c'];
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

/**
 * What the app role sees of `sql` (one text column `v`) under the context, in `c`'s transaction:
 * one round trip (the grid asks 700 times), so the context's values go into the text, quoted.
 */
async function asApp(c: pg.Client, context: { actor: string; roles: readonly string[]; clinics: readonly string[] }, sql: string): Promise<string> {
  const set = (name: string, value: string) => `set_config('${name}', ${c.escapeLiteral(value)}, true)`;
  const results = (await c.query(
    `SELECT ${set('phigate.actor', context.actor)}, ${set('phigate.roles', context.roles.join(','))}, ${set('phigate.clinics', context.clinics.join(','))};
     SET LOCAL ROLE ${TEST_APP_ROLE}; ${sql}; RESET ROLE`,
  )) as unknown as pg.QueryResult<{ v: string | null }>[];
  return results[2]!.rows[0]!.v ?? '';
}

const ENCOUNTERS = "SELECT string_agg(patient_id::text || '@' || clinic_id, ',' ORDER BY patient_id) AS v FROM phigate.encounters";

/** Every context of the grid and the encounters it sees, as the app role, in `c`'s transaction. */
async function visibleGrid(c: pg.Client): Promise<string[]> {
  const out: string[] = [];
  for (const actor of ACTORS) {
    for (const roles of ROLE_SETS) {
      for (const clinics of CLINIC_SETS) {
        out.push(`${actor}|${roles.join(',')}|${clinics.join(',')} -> ${await asApp(c, { actor, roles, clinics }, ENCOUNTERS)}`);
      }
    }
  }
  return out;
}

beforeAll(async () => {
  db = await createTestDatabase();
  await admin(async (c) => {
    await c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-a', 'A'), ('c-b', 'B'), ('c-c', 'C')`);
    for (const [i, id] of p.entries()) {
      await c.query(`INSERT INTO phigate.patients (id, clinic_id, mrn_bidx, mrn) VALUES ($1, $2, $3, '\\x00')`, [id, clinicOf[i], Buffer.from(`p${i}`)]);
      await c.query(`INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind) VALUES ($1, $2, $3, now(), '\\x00')`, [randomUUID(), id, clinicOf[i]]);
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

describe("053's encounters policy", () => {
  it("shows exactly the encounters 012's showed, for every context of the grid", async () => {
    const { now, before } = await admin(async (c) => {
      await c.query('BEGIN');
      try {
        const now = await visibleGrid(c);
        await c.query('DROP POLICY encounters_select ON phigate.encounters');
        await c.query(POLICY_012);
        return { now, before: await visibleGrid(c) };
      } finally {
        await c.query('ROLLBACK');
      }
    });
    expect(now.length).toBe(ACTORS.length * ROLE_SETS.length * CLINIC_SETS.length);
    expect(now).toEqual(before);
    // The grid is not vacuous: nothing, one clinic's and a grant's encounters across clinics.
    expect(now).toContain('dr|physician|c-a -> ' + [`${p[0]}@c-a`, `${p[1]}@c-a`, `${p[4]}@c-b`].sort().join(','));
    expect(now).toContain(`${keys.liveA}|partner|c-a -> ` + p.slice(0, 3).map((id) => `${id}@c-a`).sort().join(','));
    expect(now).toContain(`${keys.revoked}|partner|c-a -> `);
    expect(new Set(now.map((l) => l.split(' -> ')[1])).size).toBeGreaterThan(5);
    // Generous for a loaded machine: 700 contexts, each one round trip.
  }, 180_000);

  it("is patients_select on the encounter's own patient and clinic, and patients has no other policy the app reads through", async () => {
    const { rows } = await admin((c) =>
      c.query<{ tablename: string; qual: string }>(
        `SELECT tablename, qual FROM pg_policies
         WHERE schemaname = 'phigate' AND tablename IN ('patients', 'encounters') AND cmd IN ('SELECT', 'ALL')
           AND 'phigate_app' = ANY (roles) ORDER BY tablename`,
      ),
    );
    expect(rows.map((r) => r.tablename)).toEqual(['encounters', 'patients']);
    const [encounters, patients] = rows.map((r) => r.qual);
    expect(encounters).toBe(patients!.replaceAll('patients.id', 'encounters.patient_id').replaceAll('patients.clinic_id', 'encounters.clinic_id'));
    expect(encounters).not.toContain('patients');
  });

  it("refuses an encounter whose clinic is not its patient's, to the owner as well, so no encounter is judged by another clinic", async () => {
    await admin(async (c) => {
      const refused = async (sql: string, params: unknown[]) => {
        await c.query('BEGIN');
        try {
          await expect(c.query(sql, params)).rejects.toMatchObject({ code: '23503' });
        } finally {
          await c.query('ROLLBACK');
        }
      };
      // Filed under another clinic than its patient's.
      await refused(`INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind) VALUES ($1, $2, 'c-b', now(), '\\x00')`, [randomUUID(), p[0]]);
      // Moved to another clinic after it was written.
      await refused(`UPDATE phigate.encounters SET clinic_id = 'c-b' WHERE patient_id = $1`, [p[0]]);
      // Its patient moved to another clinic (only the owner may): refused while the patient has
      // encounters, so the encounter is never left in, or judged by, the clinic its patient left.
      // The care team goes first: its own key (005) would refuse the move as well.
      await c.query('BEGIN');
      try {
        await c.query('DELETE FROM phigate.care_team WHERE patient_id = $1', [p[0]]);
        await expect(c.query(`UPDATE phigate.patients SET clinic_id = 'c-b' WHERE id = $1`, [p[0]])).rejects.toMatchObject({ code: '23503' });
      } finally {
        await c.query('ROLLBACK');
      }
    });
  });

  it("keeps another clinic's patient's encounter from a registrar, which the policy alone would not", async () => {
    await admin(async (c) => {
      await c.query('BEGIN');
      try {
        // Without the key, an encounter of c-b's patient filed under c-a would pass 053's policy
        // for c-a; with it, the row cannot exist. Drop the key inside this transaction only, to
        // show what the key is for: the policy alone then shows the stray row.
        await c.query('ALTER TABLE phigate.encounters DROP CONSTRAINT encounters_patient_clinic');
        await c.query(`INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind) VALUES ($1, $2, 'c-a', now(), '\\x00')`, [randomUUID(), p[3]]);
        const seen = await asApp(c, { actor: 'reg', roles: ['registrar'], clinics: ['c-a'] }, ENCOUNTERS);
        expect(seen).toContain(`${p[3]}@c-a`);
      } finally {
        await c.query('ROLLBACK');
      }
      // With the key in place, a registrar of c-a sees c-a's encounters and none of c-b's patient.
      await c.query('BEGIN');
      try {
        const seen = await asApp(c, { actor: 'reg', roles: ['registrar'], clinics: ['c-a'] }, ENCOUNTERS);
        expect(seen).toBe(p.slice(0, 3).map((id) => `${id}@c-a`).sort().join(','));
        expect(seen).not.toContain(p[3]!);
      } finally {
        await c.query('ROLLBACK');
      }
    });
  });
});
