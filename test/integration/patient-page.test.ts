import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENCOUNTER_PHI_COLUMNS, encounterById, encountersByPatientIds, patientPage, patientPageWithEncounters, patientsByIds, type PageWalk } from '../../src/db/patients.ts';
import { createPool, type Pool } from '../../src/db/pool.ts';
import { openRequestTransaction, withRequestTransaction, type SecurityContext } from '../../src/db/transaction.ts';
import { createTestDatabase, preparedStatements, withClient, type TestDatabase } from '../support/db.ts';
import { firstStatementOf, planOfExecute, underRequestContext } from '../support/statement-plan.ts';

// patients(first, after) reads its candidates clinic by clinic, or a care-team reach's from its
// care teams (src/db/patients.ts, PAGE_CANDIDATES), instead of walking every patient in id order: the pages must hold exactly the rows, in the order,
// that row security shows to `WHERE id > $1 ORDER BY id LIMIT $2`, for every kind of principal.

let db: TestDatabase;
let pool: Pool;
const CLINICS = ['c-a', 'c-b', 'c-c'];
// 150 patients, clinics interleaved in id order as random uuids leave them.
const patients = Array.from({ length: 150 }, (_, i) => ({ id: randomUUID(), clinic: CLINICS[i % 3]! }));
const inClinic = (clinic: string) => patients.filter((p) => p.clinic === clinic).map((p) => p.id);

const admin = <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => withClient(db.adminUrl, fn);

const ctx = (actor: string, roles: string[], clinics: string[]): SecurityContext => ({
  actor,
  actorKind: 'user',
  roles,
  clinics,
  requestId: randomUUID(),
  purpose: 'test',
});

const PRINCIPALS: Record<string, SecurityContext> = {
  'registrar of one clinic': ctx('reg-a', ['registrar'], ['c-a']),
  'registrar of two clinics, one named twice': ctx('reg-ab', ['registrar'], ['c-b', 'c-a', 'c-b']),
  'physician on a care team, with grants inside and outside the clinic': ctx('dr', ['physician'], ['c-a']),
  'physician whose clinics the token leaves empty': ctx('dr', ['physician'], []),
  'physician of two clinics, its care team in one': ctx('dr', ['physician'], ['c-b', 'c-a']),
  'physician who is also a registrar': ctx('dr', ['physician', 'registrar'], ['c-a']),
  'nurse with a grant opened as a physician': ctx('dr', ['nurse'], ['c-a']),
  'compliance (no rows)': ctx('audit', ['compliance'], ['c-a', 'c-b']),
  'registrar of an unknown clinic': ctx('reg-x', ['registrar'], ['c-x']),
};

// Both walks give every principal the same rows, whichever its reach: the gateway picks one by cost.
const WALKS: readonly PageWalk[] = ['reach', 'clinics'];

/** The pages of `c` at page size `size`, each as its ids, following the cursor to the end. */
async function pagesOf(c: SecurityContext, size: number, walk: PageWalk): Promise<string[][]> {
  const pages: string[][] = [];
  let after: string | null = null;
  for (;;) {
    const rows = await withRequestTransaction(pool, c, (tx) => patientPage(tx, after, size + 1, walk), { preparedStatements: preparedStatements() });
    const page = rows.slice(0, size).map((r) => r.id);
    pages.push(page);
    if (rows.length <= size) return pages;
    after = page[page.length - 1]!;
  }
}

/** What row security shows `c`, as the plain keyset scan reads it. */
async function visibleInOrder(c: SecurityContext): Promise<string[]> {
  return withRequestTransaction(pool, c, async (tx) => (await tx.query<{ id: string }>('SELECT id FROM phigate.patients ORDER BY id')).rows.map((r) => r.id), {
    preparedStatements: preparedStatements(),
  });
}

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.appUrl, { max: 2 });
  await admin(async (c) => {
    await c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-a', 'A'), ('c-b', 'B'), ('c-c', 'C')`);
    await c.query(
      `INSERT INTO phigate.patients (id, clinic_id, mrn_bidx, mrn) SELECT id, clinic, convert_to(id::text, 'UTF8'), '\\x00' FROM unnest($1::uuid[], $2::text[]) AS x(id, clinic)`,
      [patients.map((p) => p.id), patients.map((p) => p.clinic)],
    );
    // Every third patient of c-a on dr's care team.
    const team = inClinic('c-a').filter((_, i) => i % 3 === 0);
    await c.query(`INSERT INTO phigate.care_team (patient_id, subject, clinic_id) SELECT id, 'dr', 'c-a' FROM unnest($1::uuid[]) id`, [team]);
    const grant = `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, clinic_id, cross_clinic, reason, request_id, granted_at, expires_at, revoked_at)
                   VALUES ('dr', $1, $2, $3, $4, 'test', 'r', $5, $6, $7)`;
    const hour = (h: number) => new Date(Date.now() + h * 3_600_000);
    const [b0, b1, b2] = inClinic('c-b');
    const [c0] = inClinic('c-c');
    // Live: one inside c-a off the care team, two outside dr's clinics (one of them cross-clinic).
    await c.query(grant, ['physician', inClinic('c-a')[1], 'c-a', false, hour(-1), hour(1), null]);
    await c.query(grant, ['physician', b0, 'c-b', true, hour(-1), hour(1), null]);
    await c.query(grant, ['physician', c0, 'c-c', true, hour(-1), hour(1), null]);
    // Live, on a patient of dr's care team: brought once, not by both the team and the grants.
    await c.query(grant, ['physician', team[0], 'c-a', false, hour(-1), hour(1), null]);
    // Not live: revoked, expired.
    await c.query(grant, ['physician', b1, 'c-b', true, hour(-1), hour(1), hour(-0.5)]);
    await c.query(grant, ['physician', b2, 'c-b', true, hour(-3), hour(-2), null]);
    // Two visits a patient, in the patient's clinic (053's key).
    await c.query(
      `INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind)
       SELECT gen_random_uuid(), id, clinic, now() - make_interval(days => n), '\\x00' FROM unnest($1::uuid[], $2::text[]) AS x(id, clinic), generate_series(1, 2) n`,
      [patients.map((p) => p.id), patients.map((p) => p.clinic)],
    );
    await c.query('ANALYZE phigate.patients, phigate.care_team, phigate.break_glass_grants, phigate.encounters');
  });
});

afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

describe('patients(first, after) reads its candidates clinic by clinic', () => {
  for (const [name, c] of Object.entries(PRINCIPALS)) for (const walk of WALKS) {
    it(`pages exactly the rows row security shows, in id order, walking by ${walk}: ${name}`, async () => {
      const visible = await visibleInOrder(c);
      for (const size of [1, 7, 50, 200]) {
        const pages = await pagesOf(c, size, walk);
        expect(pages.flat()).toEqual(visible);
        for (const page of pages.slice(0, -1)) expect(page).toHaveLength(size);
      }
    });
  }

  it('sees what the grid expects of it', async () => {
    // Guards the grid above against passing on empty pages.
    expect(await visibleInOrder(PRINCIPALS['registrar of one clinic']!)).toHaveLength(50);
    expect(await visibleInOrder(PRINCIPALS['registrar of two clinics, one named twice']!)).toHaveLength(100);
    expect(await visibleInOrder(PRINCIPALS['physician on a care team, with grants inside and outside the clinic']!)).toHaveLength(17 + 1 + 2);
    // Only the two live cross-clinic grants.
    expect(await visibleInOrder(PRINCIPALS['physician whose clinics the token leaves empty']!)).toHaveLength(2);
    expect(await visibleInOrder(PRINCIPALS['physician of two clinics, its care team in one']!)).toHaveLength(17 + 1 + 2);
    expect(await visibleInOrder(PRINCIPALS['physician who is also a registrar']!)).toHaveLength(50 + 2);
    expect(await visibleInOrder(PRINCIPALS['compliance (no rows)']!)).toEqual([]);
  });

  const registrarPlan = (walk: PageWalk) =>
    admin(async (c) => {
      await c.query('BEGIN');
      try {
        await underRequestContext(c, { actor: 'reg-a', roles: 'registrar', clinics: 'c-a' });
        await c.query(`PREPARE page(uuid, int) AS ${await firstStatementOf((client) => patientPage(client, null, 11, walk))}`);
        return await planOfExecute(c, `page('00000000-0000-0000-0000-000000000000', 11)`);
      } finally {
        await c.query('ROLLBACK');
      }
    });

  for (const walk of WALKS) {
    it(`walks the request's clinics on patients_clinic_id, never the rows of the others, walking by ${walk}`, async () => {
      const plan = await registrarPlan(walk);
      // The clinic's first 11 rows and no more; no scan of patients in id order across clinics.
      // PostgreSQL 18 prints row counts with two decimals (11.00), 15 as integers.
      expect(plan).toMatch(/Index Scan using patients_clinic_id on patients \w+ \(actual rows=11(\.00)? loops=1\)/);
      expect(plan).not.toMatch(/Seq Scan on patients|patients_pkey on patients/);
    });
  }

  it('leaves the care-team branch out of the plan when walking by clinics', async () => {
    // The reach's plan holds the reach (CTE r) and the care-team branch behind its test, set up on
    // every execution though a registrar's never runs it; the clinics' plan holds neither.
    // PostgreSQL 15 names an InitPlan's value $n, 18 (InitPlan n).col1.
    const careTeamBranch = /One-Time Filter: \((\$\d+|\(InitPlan \d+\)\.col1) = 'care_team'::text\)/;
    expect(await registrarPlan('reach')).toMatch(careTeamBranch);
    expect(await registrarPlan('reach')).toMatch(/CTE r\b/);
    expect(await registrarPlan('clinics')).not.toMatch(careTeamBranch);
    expect(await registrarPlan('clinics')).not.toMatch(/CTE r\b/);
  });

  // A page's statements ask the care team and the grants once per statement (src/db/patients.ts,
  // LIVE_GRANT and onCareTeamOf); a read by id asks them per row with a probe. Both must give every
  // row the same facts, which decide the row's roles and whether its audit rows are break-glass ones.
  const facts = (r: { id: string; on_care_team: boolean; grant_id: string | null; grant_role: string | null }) => [r.id, r.on_care_team, r.grant_id, r.grant_role];
  for (const [name, c] of Object.entries(PRINCIPALS)) for (const walk of WALKS) {
    it(`gives a page's rows and their encounters the facts a read by id gives them, walking by ${walk}: ${name}`, async () => {
      const { page, byId, encounters, encountersById, withEncounters } = await withRequestTransaction(
        pool,
        c,
        async (tx) => {
          const page = await patientPage(tx, null, 200, walk);
          const byId = (await Promise.all(page.map((r) => patientsByIds(tx, [r.id])))).flat();
          const encounters = await encountersByPatientIds(tx, page.map((r) => r.id), { first: 10, after: null, byDate: true });
          const encountersById = await Promise.all(encounters.map((e) => encounterById(tx, e.id)));
          const withEncounters = await patientPageWithEncounters(tx, null, 200, ENCOUNTER_PHI_COLUMNS, { first: 10, after: null, byDate: true }, walk);
          return { page, byId, encounters, encountersById, withEncounters };
        },
        { preparedStatements: preparedStatements() },
      );
      expect(page.map(facts)).toEqual(byId.map(facts));
      expect(encounters.map(facts)).toEqual(encountersById.map((e) => facts(e!)));
      expect(encounters).toHaveLength(2 * page.length);
      // The page read with its encounters in one statement: the same rows, each encounter with
      // the facts its read by id gives it (its patient's, as 053's key makes them), and its own id.
      expect(withEncounters.rows.map(facts)).toEqual(byId.map(facts));
      const together = withEncounters.rows.flatMap((_, i) => withEncounters.encountersOf(i));
      expect(together.map(facts)).toEqual(encountersById.map((e) => facts(e!)));
      expect(together.map((e) => [e.facts.rowId, e.facts.clinicId, e.facts.onCareTeam, e.facts.grant])).toEqual(
        encountersById.map((e) => [e!.facts.rowId, e!.facts.clinicId, e!.facts.onCareTeam, e!.facts.grant]),
      );
    });
  }

  it('holds grants and care-team rows among those facts', async () => {
    // Guards the case above against comparing nothing but nulls and falses.
    const c = PRINCIPALS['physician on a care team, with grants inside and outside the clinic']!;
    const page = await withRequestTransaction(pool, c, (tx) => patientPage(tx, null, 200), { preparedStatements: preparedStatements() });
    expect(page.filter((r) => r.on_care_team)).toHaveLength(17);
    expect(page.filter((r) => r.grant_id !== null).map((r) => r.grant_role)).toEqual(['physician', 'physician', 'physician', 'physician']);
  });

  it("probes a grant only for a patient the actor holds a live grant on, and reads a page's care team once", async () => {
    const plans = await admin(async (c) => {
      await c.query('BEGIN');
      try {
        await underRequestContext(c, { actor: 'dr', roles: 'physician', clinics: 'c-a' });
        await c.query(`PREPARE page(uuid, int) AS ${await firstStatementOf((client) => patientPage(client, null, 201))}`);
        const ids = (await c.query<{ id: string }>(`EXECUTE page('00000000-0000-0000-0000-000000000000', 201)`)).rows.map((r) => r.id);
        await c.query(`PREPARE encounters(uuid[], int) AS ${await firstStatementOf((client) => encountersByPatientIds(client, ids, { first: 10, after: null, byDate: true }))}`);
        return {
          page: await planOfExecute(c, `page('00000000-0000-0000-0000-000000000000', 201)`),
          encounters: await planOfExecute(c, `encounters('{${ids.join(',')}}', 10)`),
        };
      } finally {
        await c.query('ROLLBACK');
      }
    });
    // 20 rows, 4 of them under a live grant: the grant join's probe runs for those 4 only.
    // Index or sequential scans by the tables' size; PostgreSQL 18 prints rows with two decimals, and buffers.
    expect(plans.page).toMatch(/One-Time Filter: \(p\.id = ANY \([^\n]*\)\)\s+(Buffers: [^\n]*\s+)?->  [^\n]* on break_glass_grants g \(actual rows=1(\.00)? loops=4\)/);
    // Each patient's encounters in its own window (LIMIT per patient): the grant is probed once a
    // patient under a live grant (memoized over its encounters), or once an encounter.
    expect(plans.encounters).toMatch(/One-Time Filter: \(e\.patient_id = ANY \([^\n]*\)\)\s+(Buffers: [^\n]*\s+)?->  [^\n]* on break_glass_grants g(_1)? \(actual rows=1(\.00)? loops=(4|8)\)/);
    // The 40 encounters' care team in one scan, none probed per encounter.
    expect(plans.encounters).toMatch(/ on care_team ct \(actual rows=17(\.00)? loops=1\)/);
    expect(plans.encounters).not.toMatch(/ on care_team \w+ \(actual rows=\S+ loops=40\)/);
    // Each patient's encounters in its window: a Limit per patient on encounters_patient, in the
    // window's order; the statement's own order then sorts at most ids x `first` rows.
    expect(plans.encounters).toMatch(/Limit \(actual rows=2(\.00)? loops=20\)/);
    expect(plans.encounters).toMatch(/on encounters e(_\d+)? \(actual rows=2(\.00)? loops=20\)/);
  });

  it("reads a page's encounters in the page's statement, a patient's by its id, its grant probed once for the patient", async () => {
    const plan = await admin(async (c) => {
      await c.query('BEGIN');
      try {
        await underRequestContext(c, { actor: 'dr', roles: 'physician', clinics: 'c-a' });
        await c.query(`PREPARE page(uuid, int, int) AS ${await firstStatementOf((client) => patientPageWithEncounters(client, null, 201, ENCOUNTER_PHI_COLUMNS, { first: 10, after: null, byDate: true }))}`);
        return await planOfExecute(c, `page('00000000-0000-0000-0000-000000000000', 201, 10)`);
      } finally {
        await c.query('ROLLBACK');
      }
    });
    // 20 rows, 4 under a live grant: the grant is probed for those 4 only, once a patient, never per encounter.
    expect(plan).toMatch(/One-Time Filter: \(p\.id = ANY \([^\n]*\)\)\s+(Buffers: [^\n]*\s+)?->  [^\n]* on break_glass_grants g \(actual rows=1(\.00)? loops=4\)/);
    expect(plan).not.toMatch(/ on break_glass_grants g \(actual rows=\S+ loops=(8|40)\)/);
    // Each page row's encounters by its id on encounters_patient, once a row (the page's 20, not
    // before its sort and limit), under encounters' row security, with no uuid[] of the page's ids.
    expect(plan).toMatch(/ on encounters e \(actual rows=2(\.00)? loops=20\)/);
    expect(plan).toMatch(/Index Cond: \(patient_id = p\.id\)/);
    expect(plan).not.toMatch(/patient_id = ANY/);
  });

  // Written from the fixture, not from what row security shows: a policy made looser (another
  // clinic's rows, a patient off the care team, a revoked or expired grant) fails here.
  it.each([
    ['physician on a care team, with grants inside and outside the clinic', ctx('dr', ['physician'], ['c-a']), 'team and live grants'],
    ['the same physician with a token of another clinic', ctx('dr', ['physician'], ['c-b']), 'cross-clinic grants'],
    ['the same physician with no clinics', ctx('dr', ['physician'], []), 'cross-clinic grants'],
    ['another physician of the clinic, on no team and holding no grant', ctx('dr-2', ['physician'], ['c-a']), 'nothing'],
    ['a registrar of the clinic', ctx('reg-a', ['registrar'], ['c-a']), 'the clinic'],
  ] as const)('a page with its encounters shows %s exactly the patients it may see, by either walk', async (_, c, sees) => {
    const a = inClinic('c-a');
    const [b0] = inClinic('c-b');
    const [c0] = inClinic('c-c');
    const team = a.filter((_, i) => i % 3 === 0);
    const expected = { 'team and live grants': [...team, a[1]!, b0!, c0!], 'cross-clinic grants': [b0!, c0!], nothing: [], 'the clinic': a }[sees];
    for (const walk of WALKS) {
      const read = await withRequestTransaction(pool, c, (tx) => patientPageWithEncounters(tx, null, 200, ENCOUNTER_PHI_COLUMNS, { first: 10, after: null, byDate: true }, walk), {
        preparedStatements: preparedStatements(),
      });
      expect(read.rows.map((r) => r.id)).toEqual([...expected].sort());
      read.rows.forEach((r, i) => expect(read.encountersOf(i).map((e) => e.patient_id)).toEqual([r.id, r.id]));
    }
  });

  it('reads a page and its encounters in a read-only transaction that is never given a transaction id (no WAL)', async () => {
    const tx = openRequestTransaction(pool, PRINCIPALS['physician on a care team, with grants inside and outside the clinic']!, { preparedStatements: preparedStatements() });
    tx.readOnly();
    try {
      const page = await patientPage(tx, null, 200);
      expect(await encountersByPatientIds(tx, page.map((r) => r.id), { first: 10, after: null, byDate: true })).toHaveLength(2 * page.length);
      const together = await patientPageWithEncounters(tx, null, 200, ENCOUNTER_PHI_COLUMNS, { first: 10, after: null, byDate: true });
      expect(together.rows.flatMap((_, i) => together.encountersOf(i))).toHaveLength(2 * page.length);
      const { rows } = await tx.query<{ xid: string | null; ro: string }>(`SELECT pg_current_xact_id_if_assigned()::text AS xid, current_setting('transaction_read_only') AS ro`);
      expect(rows[0]).toEqual({ xid: null, ro: 'on' });
    } finally {
      await tx.rollback();
    }
  });
});
