import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENCOUNTER_PHI_COLUMNS, patientPageWithEncounters } from '../../src/db/patients.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';
import { firstStatementOf, planOfExecute, underRequestContext } from '../support/statement-plan.ts';

// Row security asks, of every patient and every encounter a physician's page reads, whether the
// actor is on the patient's care team (patients_select, encounters_select). Migration 064 made
// care_team's primary key (patient_id, subject) carry the clinic, so that probe descends by the
// patient's uuid and is answered from the key, where it descended care_team_subject by a subject
// compared under the database's collation; 065 keeps every version's planner from taking
// care_team_subject for it (bench/README.md, branch pgpage). Care teams large enough
// that PostgreSQL reads care_team by an index at all: 12 subjects on 600 patients each.

let db: TestDatabase;
const TEAM = 40;
const ids = Array.from({ length: 1_200 }, () => randomUUID());

beforeAll(async () => {
  db = await createTestDatabase();
  await withClient(db.adminUrl, async (c) => {
    await c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-a', 'A')`);
    await c.query(`INSERT INTO phigate.patients (id, clinic_id, mrn_bidx, mrn) SELECT id, 'c-a', convert_to(id::text, 'UTF8'), '\\x00' FROM unnest($1::uuid[]) id`, [ids]);
    // dr's team is TEAM patients; eleven others each hold 600 patients' teams.
    await c.query(`INSERT INTO phigate.care_team (patient_id, subject, clinic_id) SELECT id, 'dr', 'c-a' FROM unnest($1::uuid[]) id`, [ids.slice(0, TEAM)]);
    await c.query(
      `INSERT INTO phigate.care_team (patient_id, subject, clinic_id)
       SELECT id, 'dr-' || s, 'c-a' FROM unnest($1::uuid[]) WITH ORDINALITY AS x(id, n), generate_series(1, 11) s WHERE (n + s) % 2 = 0`,
      [ids],
    );
    await c.query(
      `INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind)
       SELECT gen_random_uuid(), id, 'c-a', now() - make_interval(days => n), '\\x00' FROM unnest($1::uuid[]) id, generate_series(1, 2) n`,
      [ids],
    );
    // Vacuumed, as autovacuum leaves a settled table: its visibility map lets an index answer alone.
    await c.query('VACUUM ANALYZE phigate.patients, phigate.care_team, phigate.encounters');
  });
});

afterAll(async () => {
  await db?.drop();
});

/** The generic plan of a physician's page with its encounters, executed as `actor`. */
async function pagePlan(c: pg.Client, actor: string): Promise<string> {
  await c.query('BEGIN');
  try {
    await underRequestContext(c, { actor, roles: 'physician', clinics: 'c-a' });
    await c.query(`PREPARE page(uuid, int, int) AS ${await firstStatementOf((client) => patientPageWithEncounters(client, null, 101, ENCOUNTER_PHI_COLUMNS, { first: 10, after: null, byDate: true }))}`);
    return await planOfExecute(c, `page('00000000-0000-0000-0000-000000000000', 101, 10)`);
  } finally {
    await c.query('ROLLBACK');
  }
}

describe("row security's care-team probe", () => {
  it("descends care_team's key by the patient, answered from the index, for each patient and encounter of a physician's page", async () => {
    const plan = await withClient(db.adminUrl, (c) => pagePlan(c, 'dr'));
    // The page walks dr's team on care_team_subject (subject first); the policies' probes of the
    // page's 40 patients and their 80 encounters use the key, which holds the clinic care_team's
    // own row security asks for.
    expect(plan).toMatch(/Index Only Scan using care_team_subject on care_team ct \(actual rows=40(\.00)? loops=1\)/);
    expect(plan).toMatch(/Index Only Scan using care_team_pkey on care_team \w+ \(actual rows=1(\.00)? loops=40\)/);
    expect(plan).toMatch(/Index Only Scan using care_team_pkey on care_team \w+ \(actual rows=1(\.00)? loops=80\)/);
    expect(plan).not.toMatch(/using care_team_subject on care_team \w+ \(actual rows=\S+ loops=(40|80)\)/);
    // By the patient alone (065: the actor compared under COLLATE "C", which no index's condition
    // can take), so no version's planner can prefer care_team_subject's subject-first descent.
    const probes = [...plan.matchAll(/using care_team_pkey on care_team \w+ \(actual rows=\S+ loops=\d+\)\n\s+Index Cond: ([^\n]*)\n\s+Filter: ([^\n]*)/g)];
    expect(probes.length).toBeGreaterThanOrEqual(2);
    for (const [, cond, filter] of probes) {
      expect(cond).toMatch(/^\(patient_id = \w+\.(id|patient_id)\)$/);
      expect(filter).toMatch(/subject = /);
    }
  });
});
