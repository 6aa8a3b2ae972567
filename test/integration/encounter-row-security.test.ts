import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';
import { ACTORS, CLINIC_SETS, ROLE_SETS, asApp, keys, patients, seedPolicyGrid, visibleGrid } from '../support/policy-grid.ts';

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
const p = patients;

const admin = <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => withClient(db.adminUrl, fn);

const ENCOUNTERS = "SELECT string_agg(patient_id::text || '@' || clinic_id, ',' ORDER BY patient_id) AS v FROM phigate.encounters";

beforeAll(async () => {
  db = await createTestDatabase();
  await admin((c) => seedPolicyGrid(c, { encounters: true }));
});

afterAll(async () => {
  await db?.drop();
});

describe("053's encounters policy", () => {
  it("shows exactly the encounters 012's showed, for every context of the grid", async () => {
    const { now, before } = await admin(async (c) => {
      await c.query('BEGIN');
      try {
        const now = await visibleGrid(c, ENCOUNTERS);
        await c.query('DROP POLICY encounters_select ON phigate.encounters');
        await c.query(POLICY_012);
        return { now, before: await visibleGrid(c, ENCOUNTERS) };
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
