import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { parsePolicy } from '../../src/policy/load.ts';
import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';
import type { SeedPatient } from '../../src/seed/dataset.ts';
import { POLICY_FILE, startTestGateway, type GqlResponse, type TestGateway } from '../support/gateway.ts';
import { asApp as asAppIn } from './as-app.ts';
import { codesOf } from '../support/gql-expect.ts';

// Issue 11, item 2 (visit dates and kinds are PHI) and the data side of item 8 (an MRN existence
// oracle, a second patient with an existing SSN, a clinic admin putting itself on a care team,
// analytics reading patient-level visit dates).
//
// Billing's limits are lowered here to 6 values a request, so that a page of visit dates reaches them.

function testPolicy() {
  const tree = parse(readFileSync(POLICY_FILE, 'utf8')) as { roles: Record<string, Record<string, unknown>> };
  tree.roles.billing!.limits = { rowsPerRequest: 100, phiValuesPerRequest: 6, rowsPerMinute: 1000, phiValuesPerMinute: 1000 };
  return parsePolicy(stringify(tree), PHI_FIELDS);
}

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 36, gatewayOptions: { policy: testPolicy() } });
});
afterAll(async () => gw?.close());

const north = (): SeedPatient[] => gw.data.patients.filter((p) => p.clinicId === 'c-north');

async function send(token: string, query: string, variables?: Record<string, unknown>): Promise<GqlResponse & { requestId: string }> {
  const r = await gw.gql(token, query, variables);
  // The gateway's own id, the one its audit rows carry.
  return { ...r, requestId: r.headers.get('x-request-id')! };
}
const auditOf = (requestId: string) => gw.auditRows('request_id = $1', [requestId]);
const decryptsOf = (column: string) => gw.cipher.stats.decryptsByColumn.get(column) ?? 0;

const asApp = (ctx: { roles: string; actor: string }, sql: string, params: unknown[]) => asAppIn(gw, { ...ctx, clinics: 'c-north' }, sql, params);

const ENCOUNTERS = `query($id: ID!) { patient(id: $id) { id encounters { id occurredAt kind } } }`;
/**
 * The ids of a patient's encounters as stored now: other tests of this file add encounters to
 * c-north's patients (through the gateway and planted below it), so a check of what a read shows
 * compares with the table, not with the seed alone, whatever order the tests run in.
 */
/** Encounters that tests of this file plant below the gateway with a plaintext kind (kind_legacy), on purpose. */
const planted = new Set<string>();

const encounterIdsOf = async (patientId: string): Promise<string[]> =>
  (await gw.admin((c) => c.query<{ id: string }>('SELECT id FROM phigate.encounters WHERE patient_id = $1', [patientId]))).rows.map((r) => r.id).sort();

describe('visit dates and kinds are PHI', () => {
  it('every stored kind is ciphertext: the seeded ones and a new one, none in plaintext', async () => {
    const p = north().find((x) => x.careTeam.includes('dr-north-1'))!;
    const r = await send(await gw.tokenFor('dr-north-1'), `mutation($id: ID!) { addEncounter(patientId: $id, input: { occurredAt: "2026-02-03T04:05:06Z", kind: "telehealth" }) { id kind occurredAt } }`, { id: p.id });
    expect(r.body.errors, r.text).toBeUndefined();
    expect(r.body.data!.addEncounter).toMatchObject({ kind: 'telehealth', occurredAt: '2026-02-03T04:05:06.000Z' });
    // Every row, whichever tests ran before, but those that other tests plant with a plaintext kind on purpose.
    const { rows: all } = await gw.admin((c) => c.query<{ id: string; kind: Buffer | null; kind_legacy: string | null }>('SELECT id, kind, kind_legacy FROM phigate.encounters'));
    const rows = all.filter((row) => !planted.has(row.id));
    const ids = new Set(rows.map((row) => row.id));
    for (const id of [...gw.data.patients.flatMap((x) => x.encounters.map((e) => e.id)), r.body.data!.addEncounter.id as string]) expect(ids.has(id), id).toBe(true);
    for (const row of rows) {
      expect(row.kind_legacy).toBeNull();
      expect(Buffer.isBuffer(row.kind)).toBe(true);
      for (const k of ['visit', 'telehealth', 'follow_up', 'lab', 'vaccination']) expect(row.kind!.includes(Buffer.from(k))).toBe(false);
    }
  });

  it('each date and kind shown is one audited read', async () => {
    const p = north()[4]!;
    const r = await send(await gw.tokenFor('reg-north'), ENCOUNTERS, { id: p.id });
    expect(r.body.errors, r.text).toBeUndefined();
    const shown = r.body.data!.patient.encounters as { id: string; occurredAt: string; kind: string }[];
    expect(shown.map((e) => e.id).sort()).toEqual(await encounterIdsOf(p.id));
    for (const e of p.encounters) expect(shown).toContainEqual({ id: e.id, occurredAt: new Date(e.occurredAt).toISOString(), kind: e.kind });
    const reads = (await auditOf(r.requestId)).filter((a) => a.type_name === 'Encounter').map((a) => `${a.action}:${a.field}:${a.record_id}`);
    expect(reads.sort()).toEqual(shown.flatMap((e) => [`read:kind:${e.id}`, `read:occurredAt:${e.id}`]).sort());
  });

  it.each([
    ['clinic_admin', ['clinic_admin']],
    ['clinic_admin and compliance', ['clinic_admin', 'compliance']],
  ])('%s: dates and kinds denied, audited, kinds never decrypted, the rest stands', async (_name, roles) => {
    const p = north()[1]!;
    const before = decryptsOf('encounters.kind');
    const r = await send(await gw.tokenFor('admin-north', { roles }), ENCOUNTERS, { id: p.id });
    expect(r.body.data!.patient.id).toBe(p.id);
    for (const e of r.body.data!.patient.encounters) expect(e).toMatchObject({ occurredAt: null, kind: null });
    expect(new Set(codesOf(r))).toEqual(new Set(['FIELD_DENIED']));
    expect(decryptsOf('encounters.kind')).toBe(before);
    for (const e of p.encounters) expect(r.text).not.toContain(new Date(e.occurredAt).toISOString());
    const stored = await encounterIdsOf(p.id);
    expect(r.body.data!.patient.encounters.map((e: { id: string }) => e.id).sort()).toEqual(stored);
    const denied = (await auditOf(r.requestId)).filter((a) => a.action === 'denied').map((a) => a.field);
    expect(denied.filter((f) => f === 'occurredAt')).toHaveLength(stored.length);
    expect(denied.filter((f) => f === 'kind')).toHaveLength(stored.length);
  });

  it('dates and kinds count against the per-request cap: past it the request is refused whole, no more decrypted', async () => {
    const before = decryptsOf('encounters.kind');
    const r = await send(await gw.tokenFor('bill-north'), `{ patients(first: 10) { edges { node { id encounters { occurredAt kind } } } } }`);
    expect(r.status, r.text).toBe(429);
    expect(r.body.data ?? null).toBeNull();
    expect(codesOf(r)).toEqual(['RATE_LIMITED']);
    expect(decryptsOf('encounters.kind') - before).toBeLessThanOrEqual(6);
    const audit = await auditOf(r.requestId);
    expect(audit.map((a) => a.action)).toEqual(['limited']);
    expect(audit[0]!.detail).toMatch(/^phi_request_cap:[1-9]\d*$/);
  });

  it('encounters are still listed newest first (the index on the plaintext date)', async () => {
    const p = north().find((x) => x.careTeam.includes('dr-north-2'))!;
    const token = await gw.tokenFor('dr-north-2');
    for (const at of ['2020-01-01T00:00:00Z', '2030-01-01T00:00:00Z']) {
      const r = await send(token, `mutation($id: ID!, $at: String!) { addEncounter(patientId: $id, input: { occurredAt: $at, kind: "lab" }) { id } }`, { id: p.id, at });
      expect(r.body.errors, r.text).toBeUndefined();
    }
    const dates = (await send(token, ENCOUNTERS, { id: p.id })).body.data!.patient.encounters.map((e: any) => e.occurredAt);
    expect(dates[0]).toBe('2030-01-01T00:00:00.000Z');
    // Not necessarily the last: another test plants visits of 1990 on c-north's patients.
    expect(dates).toContain('2020-01-01T00:00:00.000Z');
    expect([...dates].sort().reverse()).toEqual(dates);
  });

  it('a kind written before encryption (kind_legacy) is served through the same policy, caps and audit', async () => {
    const p = north()[2]!;
    const id = randomUUID();
    planted.add(id);
    await gw.admin((c) =>
      c.query(`INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind_legacy) VALUES ($1, $2, 'c-north', '2019-05-05T05:05:05Z', 'legacy_visit')`, [id, p.id]),
    );
    const reg = await send(await gw.tokenFor('reg-north'), ENCOUNTERS, { id: p.id });
    expect(reg.body.data!.patient.encounters).toContainEqual({ id, occurredAt: '2019-05-05T05:05:05.000Z', kind: 'legacy_visit' });
    expect((await auditOf(reg.requestId)).filter((a) => a.record_id === id).map((a) => `${a.action}:${a.field}`).sort()).toEqual(['read:kind', 'read:occurredAt']);
    const admin = await send(await gw.tokenFor('admin-north'), ENCOUNTERS, { id: p.id });
    expect(admin.text).not.toContain('legacy_visit');
    expect(admin.body.data!.patient.encounters).toContainEqual({ id, occurredAt: null, kind: null });
  });

  it.each([
    ['a plaintext kind', `INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind_legacy) VALUES (gen_random_uuid(), $1, 'c-north', now(), 'visit')`],
    ['an update of the plaintext kind', `UPDATE phigate.encounters SET kind_legacy = 'visit' WHERE patient_id = $1`],
  ])('the app role cannot write %s', async (_name, sql) => {
    const p = north()[3]!;
    const err = await asApp({ roles: 'physician', actor: p.careTeam[0]! }, sql, [p.id]);
    expect(err?.code).toBe('42501');
  });
});

describe('an identifier write is no existence oracle', () => {
  const UPDATE = `mutation($id: ID!, $input: UpdatePatientInput!) { updatePatient(id: $id, input: $input) { id } }`;

  it.each([
    ['an MRN of a patient off its care team', (other: SeedPatient) => other.mrn],
    ['the same MRN in lower case', (other: SeedPatient) => other.mrn.toLowerCase()],
    ['an MRN nobody has', () => `MRN-FREE-${randomBytes(3).toString('hex')}`],
  ])('a physician setting %s is refused alike, before the database compares it, and nothing changes', async (_name, mrn) => {
    const token = await gw.tokenFor('dr-north-1');
    const mine = north().find((p) => p.careTeam.includes('dr-north-1'))!;
    const other = north().find((p) => !p.careTeam.includes('dr-north-1'))!;
    const r = await send(token, UPDATE, { id: mine.id, input: { mrn: mrn(other) } });
    expect(codesOf(r)).toEqual(['FORBIDDEN']);
    expect(r.body.errors![0]!.message).toBe('You may not write Patient.mrn.');
    expect(r.text).not.toMatch(/exist/i);
    // Nothing about the record: only the refusal itself is traced (refusals.test.ts), the same for every MRN.
    expect((await auditOf(r.requestId)).map((a) => [a.action, a.type_name, a.field, a.patient_id, a.detail])).toEqual([['refused', 'Mutation', 'updatePatient', null, 'forbidden']]);
    const stored = await send(await gw.tokenFor('reg-north'), `query($id: ID!) { patient(id: $id) { mrn } }`, { id: mine.id });
    expect(stored.body.data!.patient.mrn).toBe(mine.mrn);
  });

  it('a registrar, who may search the whole clinic, is told the MRN is taken, and that is audited as a search', async () => {
    const [p, other] = north();
    const r = await send(await gw.tokenFor('reg-north'), UPDATE, { id: p!.id, input: { mrn: other!.mrn } });
    expect(codesOf(r)).toEqual(['BAD_USER_INPUT']);
    expect(r.body.errors![0]!.message).toBe('A patient with this mrn already exists in the clinic.');
    expect(await auditOf(r.requestId)).toMatchObject([{ action: 'search', type_name: 'Mutation', field: 'updatePatient', detail: 'mrn:conflict', patient_id: p!.id, role: 'registrar' }]);
  });
});

describe('one SSN, one patient per clinic', () => {
  const CREATE = `mutation($input: CreatePatientInput!) { createPatient(input: $input) { id } }`;
  const BY_SSN = `query($s: String!) { patientBySsn(ssn: $s) { id } }`;

  it.each([
    ['as stored', (ssn: string) => ssn],
    ['digits only', (ssn: string) => ssn.replace(/-/g, '')],
    ['with spaces', (ssn: string) => ssn.replace(/-/g, ' ')],
  ])('a second patient with an existing SSN (%s) is refused, and the real patient is still found', async (_name, form) => {
    const real = north()[5]!;
    const token = await gw.tokenFor('reg-north');
    const count = async () => (await gw.admin((c) => c.query<{ n: number }>(`SELECT count(*)::int AS n FROM phigate.patients WHERE clinic_id = 'c-north'`))).rows[0]!.n;
    const before = await count();
    const r = await send(token, CREATE, { input: { clinicId: 'c-north', mrn: `MRN-DUP-${randomBytes(3).toString('hex')}`, ssn: form(real.ssn) } });
    expect(codesOf(r)).toEqual(['BAD_USER_INPUT']);
    expect(r.body.errors![0]!.message).toBe('A patient with this ssn already exists in the clinic.');
    expect(await count()).toBe(before);
    expect((await auditOf(r.requestId)).map((a) => a.detail)).toEqual(['ssn:conflict']);
    expect((await send(token, BY_SSN, { s: real.ssn })).body).toEqual({ data: { patientBySsn: { id: real.id } } });
  });

  it('moving another patient onto an existing SSN is refused too', async () => {
    const [real, other] = [north()[6]!, north()[7]!];
    const token = await gw.tokenFor('reg-north');
    const r = await send(token, `mutation($id: ID!, $s: String!) { updatePatient(id: $id, input: { ssn: $s }) { id } }`, { id: other.id, s: real.ssn });
    expect(codesOf(r)).toEqual(['BAD_USER_INPUT']);
    expect((await send(token, BY_SSN, { s: real.ssn })).body.data).toEqual({ patientBySsn: { id: real.id } });
    expect((await send(token, BY_SSN, { s: other.ssn })).body.data).toEqual({ patientBySsn: { id: other.id } });
  });

  it('below the gateway, the database refuses the pair (unique index)', async () => {
    const real = north()[8]!;
    const err = await gw.admin(async (c) => {
      try {
        await c.query(`INSERT INTO phigate.patients (id, clinic_id, mrn_bidx, mrn, ssn_bidx) SELECT gen_random_uuid(), clinic_id, '\\x01', '\\x00', ssn_bidx FROM phigate.patients WHERE id = $1`, [real.id]);
        return null;
      } catch (e) {
        return e as pg.DatabaseError;
      }
    });
    expect(err).toMatchObject({ code: '23505', constraint: 'patients_clinic_ssn' });
  });

  it('the same person may be a patient of another clinic', async () => {
    const r = await send(await gw.tokenFor('reg-south'), CREATE, { input: { clinicId: 'c-south', mrn: `MRN-X-${randomBytes(3).toString('hex')}`, ssn: north()[9]!.ssn } });
    expect(r.body.errors, r.text).toBeUndefined();
  });
});

describe('separation of duties: nobody puts themselves on a care team', () => {
  const SET = `mutation($id: ID!, $s: [String!]!) { setCareTeam(patientId: $id, subjects: $s) { id } }`;
  const NOTES = `query($id: ID!) { patient(id: $id) { id encounters { notes } } }`;
  const teamOf = async (id: string) =>
    (await gw.admin((c) => c.query<{ subject: string }>('SELECT subject FROM phigate.care_team WHERE patient_id = $1 ORDER BY subject', [id]))).rows.map((r) => r.subject);

  it.each([
    ['alone', (self: string) => [self]],
    ['among the existing team', (self: string, team: string[]) => [...team, self]],
    ['with surrounding spaces', (self: string) => [`  ${self} `]],
  ])('a clinic admin who is also a physician adding itself (%s) is refused, audited, and reads no notes', async (_name, subjects) => {
    const self = `dual-${randomBytes(4).toString('hex')}`;
    const token = await gw.tokenFor(self, { roles: ['clinic_admin', 'physician'], clinics: ['c-north'] });
    const p = north()[10]!;
    const team = await teamOf(p.id);
    const r = await send(token, SET, { id: p.id, s: subjects(self, team) });
    expect(codesOf(r)).toEqual(['FORBIDDEN']);
    expect(r.body.errors![0]!.extensions!.reason).toBe('separation_of_duties');
    expect(await teamOf(p.id)).toEqual(team);
    const refusals = await auditOf(r.requestId);
    expect(refusals.filter((a) => a.field === 'careTeam')).toMatchObject([{ action: 'refused', field: 'careTeam', patient_id: p.id, detail: 'self_care_team', actor: self }]);
    const notes = await send(token, NOTES, { id: p.id });
    expect(notes.text).not.toContain('Synthetic note');
  });

  it('another admin adds it; then it may keep itself on the team, or leave, and it reads the notes', async () => {
    const self = `dual-${randomBytes(4).toString('hex')}`;
    const token = await gw.tokenFor(self, { roles: ['clinic_admin', 'physician'], clinics: ['c-north'] });
    const p = north()[11]!;
    const team = await teamOf(p.id);
    expect((await send(await gw.tokenFor('admin-north'), SET, { id: p.id, s: [...team, self] })).body.errors).toBeUndefined();
    const notes = await send(token, NOTES, { id: p.id });
    expect(notes.body.data!.patient.encounters[0].notes).toContain('Synthetic note');
    expect((await send(token, SET, { id: p.id, s: [self, ...team] })).body.errors).toBeUndefined();
    expect((await send(token, SET, { id: p.id, s: team })).body.errors).toBeUndefined();
    expect(await teamOf(p.id)).toEqual(team);
  });

  it('below the gateway, row security refuses a care-team row naming the actor', async () => {
    const p = north()[3]!;
    const err = await asApp({ roles: 'clinic_admin', actor: 'admin-north' }, `INSERT INTO phigate.care_team (patient_id, subject, clinic_id) VALUES ($1, 'admin-north', 'c-north')`, [p.id]);
    expect(err?.code).toBe('42501');
    expect(await asApp({ roles: 'clinic_admin', actor: 'admin-north' }, `INSERT INTO phigate.care_team (patient_id, subject, clinic_id) VALUES ($1, 'someone-else', 'c-north')`, [p.id])).toBeNull();
  });
});

describe('analytics gets aggregates, never patient-level visit dates', () => {
  const asAnalytics = (sql: string) =>
    gw.admin(async (c) => {
      await c.query('BEGIN');
      try {
        await c.query('SET LOCAL ROLE phigate_analytics');
        return await c.query(sql);
      } finally {
        await c.query('ROLLBACK');
      }
    });

  it.each([
    'SELECT occurred_at FROM phigate.encounters',
    'SELECT patient_id, kind FROM phigate.encounters',
    'SELECT id, clinic_id FROM phigate.patients',
    'SELECT created_at FROM phigate.patients',
  ])('%s: permission denied', async (sql) => {
    await expect(asAnalytics(sql)).rejects.toThrow(/permission denied/);
  });

  it('the monthly view has no patient column, whole months only, and no cell of fewer than 11 patients', async () => {
    // 12 patients of c-north visited in one month: a cell just over the threshold; two others in another: suppressed.
    await gw.admin(async (c) => {
      const plant = async (patientId: string, at: string) => {
        const id = randomUUID();
        planted.add(id);
        await c.query(`INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind_legacy) VALUES ($1, $2, 'c-north', $3, 'visit')`, [id, patientId, at]);
      };
      for (const [i, p] of north().slice(0, 12).entries()) await plant(p.id, `1990-03-${String(i + 1).padStart(2, '0')}T10:00:00Z`);
      for (const p of north().slice(0, 2)) await plant(p.id, '1990-07-07T10:00:00Z');
    });
    expect((await asAnalytics('SELECT * FROM phigate.analytics_encounters_by_month')).fields.map((f) => f.name)).toEqual(['clinic_id', 'month', 'encounters', 'patients']);
    const { rows } = await asAnalytics(`SELECT clinic_id, month::text, encounters, patients FROM phigate.analytics_encounters_by_month WHERE month < '1991-01-01'`);
    expect(rows).toEqual([{ clinic_id: 'c-north', month: '1990-03-01', encounters: 12, patients: 12 }]);
    const clinics = await asAnalytics('SELECT * FROM phigate.analytics_patients_by_clinic');
    expect(clinics.fields.map((f) => f.name)).toEqual(['clinic_id', 'patients']);
    expect(clinics.rows.length).toBeGreaterThan(0);
    for (const row of clinics.rows) expect(row.patients).toBeGreaterThanOrEqual(11);
  });

  it("the views' owner reads nothing itself: its policies admit only analytics callers", async () => {
    const n = await gw.admin(async (c) => {
      await c.query('BEGIN');
      await c.query('SET LOCAL ROLE phigate_owner');
      const r = await c.query<{ n: number }>('SELECT (SELECT count(*) FROM phigate.encounters)::int + (SELECT count(*) FROM phigate.patients)::int AS n');
      await c.query('ROLLBACK');
      return r.rows[0]!.n;
    });
    expect(n).toBe(0);
  });
});
