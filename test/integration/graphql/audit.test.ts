import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { PolicySet } from '../../../src/policy/types.ts';
import type { SeedPatient } from '../../../src/seed/dataset.ts';
import { startTestGateway, type GqlResponse, type TestGateway } from '../../support/gateway.ts';
import {
  ENCOUNTER_PHI,
  expectCleanErrors,
  expectedEffect,
  expectNoPhiInErrors,
  loadDefaultPolicy,
  PATIENT_PHI,
  PATIENT_SELECTION,
  seededSecrets,
  type PhiTypeName,
} from '../../support/phi-expect.ts';

// Audit rows over GraphQL against the real gateway and database: one row per PHI value resolved
// and per denied field, written in the request's own transaction; no row for a request that
// touches no PHI; no data at all when the rows cannot be written; writes name fields, never values.

let gw: TestGateway;
let policy: PolicySet;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 24 });
  policy = await loadDefaultPolicy();
});
afterAll(async () => gw?.close());

const ONE = `query One($id: ID!) { patient(id: $id) { ${PATIENT_SELECTION} } }`;
const PAGE = `query Page { patients(first: 100) { edges { node { ${PATIENT_SELECTION} } } } }`;
const LOOPBACK = /^(::ffff:)?127\.0\.0\.1$|^::1$/;

interface Sent {
  readonly r: GqlResponse;
  readonly requestId: string;
  readonly startedAt: Date;
  readonly endedAt: Date;
}

async function send(token: string, query: string, variables?: Record<string, unknown>): Promise<Sent> {
  const startedAt = new Date();
  const r = await gw.gql(token, query, variables);
  // The gateway's own id, the one its audit rows carry (a client's X-Request-Id never replaces it).
  return { r, requestId: r.headers.get('x-request-id') ?? '', startedAt, endedAt: new Date() };
}

const rowsOf = (requestId: string) => gw.auditRows('request_id = $1', [requestId]);

type Key = string;
const key = (typeName: string, field: string | null, patientId: string | null, recordId: string | null, action: string): Key =>
  [typeName, field, patientId, recordId, action].join('|');

interface ExpectedRow {
  readonly typeName: PhiTypeName;
  readonly field: string;
  readonly patientId: string;
  readonly recordId: string | null;
  readonly action: 'read' | 'masked' | 'denied';
  /** Roles that may be named (the granting roles); empty: denied, no role. */
  readonly roles: readonly string[];
}

/** The rows a read of these patients with PATIENT_SELECTION must write, from the policy file. */
function expectedReadRows(patients: readonly SeedPatient[], sub: string, roles: readonly string[]): ExpectedRow[] {
  const out: ExpectedRow[] = [];
  const action = (e: string) => (e === 'allow' ? 'read' : e === 'mask' ? 'masked' : 'denied') as ExpectedRow['action'];
  for (const p of patients) {
    const onTeam = p.careTeam.includes(sub);
    for (const f of PATIENT_PHI) {
      const x = expectedEffect(policy, roles, onTeam, 'Patient', f);
      out.push({ typeName: 'Patient', field: f, patientId: p.id, recordId: null, action: action(x.effect), roles: x.grantingRoles });
    }
    for (const e of p.encounters) {
      for (const f of ENCOUNTER_PHI) {
        const x = expectedEffect(policy, roles, onTeam, 'Encounter', f);
        out.push({ typeName: 'Encounter', field: f, patientId: p.id, recordId: e.id, action: action(x.effect), roles: x.grantingRoles });
      }
    }
  }
  return out;
}

const purposeOf = (role: string) => policy.roles.get(role)!.purpose;

/** The request's rows are exactly `expected`, each with the request's actor, address, time, role and purpose. */
async function expectRows(sent: Sent, sub: string, heldRoles: readonly string[], expected: readonly ExpectedRow[]) {
  const rows = await rowsOf(sent.requestId);
  expect(rows.length, 'one audit row per PHI value resolved plus one per denied field').toBe(expected.length);
  expect(rows.map((r) => key(r.type_name, r.field, r.patient_id, r.record_id, r.action)).sort()).toEqual(
    expected.map((e) => key(e.typeName, e.field, e.patientId, e.recordId, e.action)).sort(),
  );
  const byKey = new Map(expected.map((e) => [key(e.typeName, e.field, e.patientId, e.recordId, e.action), e]));
  for (const row of rows) {
    const exp = byKey.get(key(row.type_name, row.field, row.patient_id, row.record_id, row.action))!;
    expect(row.request_id).toBe(sent.requestId);
    expect(row.actor).toBe(sub);
    expect(row.actor_kind).toBe('user');
    expect(row.break_glass).toBe(false);
    expect(row.client_addr).toMatch(LOOPBACK);
    expect(row.occurred_at).toBeInstanceOf(Date);
    expect(row.occurred_at.getTime()).toBeGreaterThanOrEqual(sent.startedAt.getTime() - 5_000);
    expect(row.occurred_at.getTime()).toBeLessThanOrEqual(sent.endedAt.getTime() + 5_000);
    if (exp.action === 'denied') {
      // No role granted the field; the row names the held role the attempt was made in, and its purpose.
      expect(heldRoles, `${row.type_name}.${row.field} denied`).toContain(row.role);
      expect(row.purpose).toBe(purposeOf(row.role));
    } else {
      expect(exp.roles, `${row.type_name}.${row.field}`).toContain(row.role);
      expect(row.purpose, `${row.type_name}.${row.field} as ${row.role}`).toBe(purposeOf(row.role));
    }
  }
  // The request log counts the same events.
  const log = gw.logs.filter((l) => l.msg === 'request' && l.requestId === sent.requestId);
  expect(log).toHaveLength(1);
  expect(log[0]!.auditEvents).toBe(expected.length);
  expect(log[0]!.outcome).toBe('committed');
  return rows;
}

const onTeamOf = (sub: string, clinic = 'c-north') =>
  gw.data.patients.filter((p) => p.clinicId === clinic && p.careTeam.includes(sub)).sort((a, b) => b.encounters.length - a.encounters.length);

describe('one audit row per PHI value resolved and per denied field', () => {
  it('physician reading one patient: read rows, a masked ssn row, encounter rows carry the encounter id', async () => {
    const seed = onTeamOf('dr-north-1')[0]!;
    const sent = await send(await gw.tokenFor('dr-north-1'), ONE, { id: seed.id });
    expect(sent.r.body.errors).toBeUndefined();
    expect(sent.r.body.data!.patient.id).toBe(seed.id);
    const expected = expectedReadRows([seed], 'dr-north-1', ['physician']);
    // Hard-coded cross-check of what the policy file gives here.
    expect(expected.filter((e) => e.action === 'masked').map((e) => e.field)).toEqual(['ssn']);
    expect(expected.filter((e) => e.action === 'denied')).toEqual([]);
    expect(expected).toHaveLength(PATIENT_PHI.length + ENCOUNTER_PHI.length * seed.encounters.length);

    const rows = await expectRows(sent, 'dr-north-1', ['physician'], expected);
    for (const row of rows) {
      expect(row.patient_id).toBe(seed.id);
      expect(row.role).toBe('physician');
      expect(row.purpose).toBe('treatment');
      if (row.type_name === 'Patient') expect(row.record_id).toBeNull();
      else expect(seed.encounters.map((e) => e.id)).toContain(row.record_id);
    }
  });

  it('nurse: notes are audited as denied, one row per encounter, with the encounter id', async () => {
    const seed = onTeamOf('rn-north-1')[0]!;
    const sent = await send(await gw.tokenFor('rn-north-1'), ONE, { id: seed.id });
    expect(sent.r.body.errors?.map((e) => e.extensions?.code)).toEqual(seed.encounters.map(() => 'FIELD_DENIED'));
    const expected = expectedReadRows([seed], 'rn-north-1', ['nurse']);
    const rows = await expectRows(sent, 'rn-north-1', ['nurse'], expected);
    const denied = rows.filter((r) => r.action === 'denied');
    expect(denied.map((r) => r.field)).toEqual(seed.encounters.map(() => 'notes'));
    expect(denied.map((r) => r.record_id).sort()).toEqual(seed.encounters.map((e) => e.id).sort());
    expect(denied.every((r) => r.type_name === 'Encounter' && r.patient_id === seed.id)).toBe(true);
    expect(rows.find((r) => r.field === 'ssn')!.action).toBe('masked');
  });

  it('billing reading a page: every visible patient, ssn / reason / notes denied, purpose payment', async () => {
    const seen = gw.data.patients.filter((p) => p.clinicId === 'c-north');
    const sent = await send(await gw.tokenFor('bill-north'), PAGE);
    expect(sent.r.body.data!.patients.edges).toHaveLength(seen.length);
    const expected = expectedReadRows(seen, 'bill-north', ['billing']);
    const rows = await expectRows(sent, 'bill-north', ['billing'], expected);
    const encounters = seen.reduce((n, p) => n + p.encounters.length, 0);
    expect(rows.filter((r) => r.action === 'denied')).toHaveLength(seen.length + 2 * encounters);
    expect(rows.filter((r) => r.action === 'read')).toHaveLength(7 * seen.length + 3 * encounters);
    expect(new Set(rows.filter((r) => r.action === 'read').map((r) => r.purpose))).toEqual(new Set(['payment']));
    expect(sent.r.body.errors).toHaveLength(seen.length + 2 * encounters);
  });

  it('clinic_admin: every PHI field of every visible patient is a denied row', async () => {
    const seen = gw.data.patients.filter((p) => p.clinicId === 'c-south');
    const sent = await send(await gw.tokenFor('admin-south'), PAGE);
    const expected = expectedReadRows(seen, 'admin-south', ['clinic_admin']);
    expect(expected.every((e) => e.action === 'denied')).toBe(true);
    const rows = await expectRows(sent, 'admin-south', ['clinic_admin'], expected);
    expect(rows.length).toBeGreaterThan(seen.length * PATIENT_PHI.length);
  });

  it('registrar + physician: each row names the role that granted it and that role\'s purpose', async () => {
    const sub = 'dr-north-1';
    const roles = ['registrar', 'physician'];
    const token = await gw.tokenFor(sub, { roles, clinics: ['c-north'] });
    const onTeam = onTeamOf(sub)[0]!;
    const offTeam = gw.data.patients.find((p) => p.clinicId === 'c-north' && !p.careTeam.includes(sub))!;

    const on = await send(token, ONE, { id: onTeam.id });
    const onRows = await expectRows(on, sub, roles, expectedReadRows([onTeam], sub, roles));
    const ssn = onRows.find((r) => r.field === 'ssn')!;
    expect([ssn.action, ssn.role, ssn.purpose]).toEqual(['read', 'registrar', 'healthcare_operations']);
    const notes = onRows.filter((r) => r.field === 'notes');
    expect(notes).toHaveLength(onTeam.encounters.length);
    for (const n of notes) expect([n.action, n.role, n.purpose]).toEqual(['read', 'physician', 'treatment']);

    const off = await send(token, ONE, { id: offTeam.id });
    const offRows = await expectRows(off, sub, roles, expectedReadRows([offTeam], sub, roles));
    // Off the care team only the registrar applies: visit dates and kinds it reads, clinical fields it may not.
    for (const r of offRows.filter((x) => x.type_name === 'Encounter')) {
      expect([r.action, r.role]).toEqual(r.field === 'occurredAt' || r.field === 'kind' ? ['read', 'registrar'] : ['denied', 'registrar']);
    }
    for (const r of offRows.filter((x) => x.type_name === 'Patient')) expect([r.action, r.role, r.purpose]).toEqual(['read', 'registrar', 'healthcare_operations']);
  });

  it('asking for the same field twice (aliases) resolves it twice and writes two rows', async () => {
    const seed = onTeamOf('dr-north-1')[0]!;
    const sent = await send(await gw.tokenFor('dr-north-1'), 'query($id: ID!) { patient(id: $id) { a: givenName b: givenName } }', { id: seed.id });
    expect(sent.r.body.data!.patient).toEqual({ a: seed.givenName, b: seed.givenName });
    const rows = await rowsOf(sent.requestId);
    expect(rows.map((r) => [r.field, r.action])).toEqual([
      ['givenName', 'read'],
      ['givenName', 'read'],
    ]);
  });

  it('a field through an alias, a fragment and itself: one row and one decryption per response key; a denied one never decrypted', async () => {
    const seed = onTeamOf('rn-north-1')[0]!;
    const query = `query($id: ID!) {
      patient(id: $id) { givenName a: givenName ...Name encounters { notes n: notes ...Notes kind } }
    }
    fragment Name on Patient { givenName }
    fragment Notes on Encounter { notes n: notes }`;
    const before = { given: gw.cipher.stats.decryptsByColumn.get('patients.given_name') ?? 0, notes: gw.cipher.stats.decryptsByColumn.get('encounters.notes') ?? 0 };
    const sent = await send(await gw.tokenFor('rn-north-1'), query, { id: seed.id });
    // givenName and the fragment's givenName are one response key: two keys, two resolutions.
    expect(sent.r.body.data!.patient).toMatchObject({ givenName: seed.givenName, a: seed.givenName });
    expect(gw.cipher.stats.decryptsByColumn.get('patients.given_name')! - before.given).toBe(2);
    expect((gw.cipher.stats.decryptsByColumn.get('encounters.notes') ?? 0) - before.notes).toBe(0);
    // A nurse may not see notes: null at each of its two paths per encounter, each with its own error.
    const encounters = sent.r.body.data!.patient.encounters as Array<Record<string, unknown>>;
    expect(encounters).toHaveLength(seed.encounters.length);
    for (const e of encounters) expect([e.notes, e.n]).toEqual([null, null]);
    const errors = sent.r.body.errors ?? [];
    expect(errors.map((e) => e.extensions?.code)).toEqual(seed.encounters.flatMap(() => ['FIELD_DENIED', 'FIELD_DENIED']));
    expect(new Set(errors.map((e) => e.path?.at(-1)))).toEqual(new Set(['notes', 'n']));
    const rows = await rowsOf(sent.requestId);
    const count = (field: string, action: string) => rows.filter((r) => r.field === field && r.action === action).length;
    expect(count('givenName', 'read')).toBe(2);
    expect(count('notes', 'denied')).toBe(2 * seed.encounters.length);
    expect(count('kind', 'read')).toBe(seed.encounters.length);
    expect(rows).toHaveLength(2 + 3 * seed.encounters.length);
    for (const r of rows.filter((x) => x.type_name === 'Encounter')) expect(seed.encounters.map((e) => e.id)).toContain(r.record_id);
  });
});

describe('no PHI field, no audit row', () => {
  const NO_PHI = [
    ['me', '{ me { subject kind roles clinics mfa } }'],
    ['patient ids and clinics', '{ patients(first: 100) { edges { node { id clinicId } } } }'],
    ['encounter ids', '{ patients(first: 100) { edges { node { id encounters { id patientId } } } } }'],
  ] as const;

  for (const [name, query] of NO_PHI) {
    it(`${name}: answered, and no audit row`, async () => {
      const sent = await send(await gw.tokenFor('reg-north'), query);
      expect(sent.r.body.errors).toBeUndefined();
      expect(sent.r.body.data).toBeTruthy();
      if (sent.r.body.data!.patients) expect(sent.r.body.data!.patients.edges.length).toBe(gw.data.patients.filter((p) => p.clinicId === 'c-north').length);
      // The request id did reach the gateway (the log line carries it), so an empty result is meaningful.
      const log = gw.logs.filter((l) => l.msg === 'request' && l.requestId === sent.requestId);
      expect(log).toHaveLength(1);
      expect(log[0]!.auditEvents).toBe(0);
      expect(await rowsOf(sent.requestId)).toEqual([]);
    });
  }
});

describe('audit cannot be written: nothing leaves, nothing changes', () => {
  const TRIGGER = 'audit_test_refuse_insert';
  const installTrigger = () =>
    gw.admin(async (c) => {
      await c.query(`CREATE OR REPLACE FUNCTION public.${TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'audit sink refused by test (%)', TG_OP; END $$`);
      // Both tables the writer inserts into: a record of one patient, and of several (061).
      for (const table of ['audit_records', 'audit_records_v3']) {
        await c.query(`CREATE TRIGGER ${TRIGGER} BEFORE INSERT ON phigate.${table} FOR EACH ROW EXECUTE FUNCTION public.${TRIGGER}()`);
      }
    });
  const removeTrigger = () =>
    gw.admin(async (c) => {
      for (const table of ['audit_records', 'audit_records_v3']) await c.query(`DROP TRIGGER IF EXISTS ${TRIGGER} ON phigate.${table}`);
      await c.query(`DROP FUNCTION IF EXISTS public.${TRIGGER}()`);
    });
  afterEach(removeTrigger);

  const storedRow = (id: string) =>
    gw.admin(async (c) => (await c.query('SELECT phone, email, updated_at FROM phigate.patients WHERE id = $1', [id])).rows[0]);
  const patientCount = () => gw.admin(async (c) => Number((await c.query('SELECT count(*) AS n FROM phigate.patients')).rows[0].n));

  function expectWithheld(sent: Sent, given: Iterable<string>) {
    const secrets = [...given];
    const { r } = sent;
    expect(r.body.data ?? null).toBeNull();
    expect(r.body.errors?.map((e) => e.extensions?.code)).toEqual(['AUDIT_UNAVAILABLE']);
    expectCleanErrors(r);
    expectNoPhiInErrors(r, gw.data.patients);
    for (const s of secrets) expect(r.text.includes(s), 'a value left without its audit row').toBe(false);
    expect(r.text).not.toMatch(/audit sink refused|TG_OP|trigger|audit_events|audit_records/i);
    const log = gw.logs.filter((l) => l.requestId === sent.requestId);
    expect(log.filter((l) => l.msg === 'request').map((l) => l.outcome)).toEqual(['audit_failed']);
    // The gateway's own log of the failure carries neither the values nor the database's message.
    const logText = JSON.stringify(log);
    expect(logText).toMatch(/audit write failed/);
    for (const s of secrets) expect(logText.includes(s), 'a value in the log').toBe(false);
    expect(logText).not.toMatch(/audit sink refused|INSERT|phigate\.audit_(events|records)/);
  }

  it('a PHI query answers data: null with exactly one AUDIT_UNAVAILABLE and no PHI in the body', async () => {
    const seed = onTeamOf('dr-north-1')[0]!;
    const nurseSeed = onTeamOf('rn-north-1')[0]!;
    await installTrigger();
    const physician = await send(await gw.tokenFor('dr-north-1'), ONE, { id: seed.id });
    // A request that also had FIELD_DENIED errors still answers with the one audit error only.
    const nurse = await send(await gw.tokenFor('rn-north-1'), ONE, { id: nurseSeed.id });
    const page = await send(await gw.tokenFor('reg-north'), PAGE);
    await removeTrigger();

    expectWithheld(physician, seededSecrets([seed]).keys());
    expectWithheld(nurse, seededSecrets([nurseSeed]).keys());
    expectWithheld(page, seededSecrets(gw.data.patients.filter((p) => p.clinicId === 'c-north')).keys());
    // The masked form did not leave either.
    expect(physician.r.text).not.toContain(`***-**-${seed.ssn.slice(-4)}`);
    for (const s of [physician, nurse, page]) expect(await rowsOf(s.requestId)).toEqual([]);

    // Once the audit table accepts rows again, the same request is answered (the connection was not left poisoned).
    const again = await send(await gw.tokenFor('dr-north-1'), ONE, { id: seed.id });
    expect(again.r.body.errors).toBeUndefined();
    expect(again.r.body.data!.patient.givenName).toBe(seed.givenName);
    expect((await rowsOf(again.requestId)).length).toBe(PATIENT_PHI.length + ENCOUNTER_PHI.length * seed.encounters.length);
  });

  it('a mutation in the same state is rolled back: updatePatient leaves the stored row as it was', async () => {
    const seed = gw.data.patients.filter((p) => p.clinicId === 'c-north').at(-1)!;
    const before = await storedRow(seed.id);
    const newPhone = '+1 555 0777';
    const newEmail = 'rolled.back@example.invalid';
    await installTrigger();
    const sent = await send(
      await gw.tokenFor('reg-north'),
      'mutation($id: ID!, $input: UpdatePatientInput!) { updatePatient(id: $id, input: $input) { id phone email } }',
      { id: seed.id, input: { phone: newPhone, email: newEmail } },
    );
    await removeTrigger();

    expectWithheld(sent, [newPhone, newEmail, seed.phone, seed.email]);
    // The ciphertext bytes and the update time are untouched.
    const after = await storedRow(seed.id);
    expect(Buffer.compare(after.phone, before.phone)).toBe(0);
    expect(Buffer.compare(after.email, before.email)).toBe(0);
    expect(after.updated_at.getTime()).toBe(before.updated_at.getTime());
    // And a later read, audited normally, shows the old values.
    const read = await send(await gw.tokenFor('reg-north'), 'query($id: ID!) { patient(id: $id) { phone email } }', { id: seed.id });
    expect(read.r.body.data!.patient).toEqual({ phone: seed.phone, email: seed.email });
    expect(await rowsOf(sent.requestId)).toEqual([]);
  });

  it('a createPatient in the same state creates nothing', async () => {
    // In c-east, as every patient this file creates: the pages of c-north and c-south that other
    // tests check patient by patient stay the seeded ones, whatever order the tests run in.
    const count = await patientCount();
    await installTrigger();
    const sent = await send(
      await gw.tokenFor('reg-east'),
      'mutation($input: CreatePatientInput!) { createPatient(input: $input) { id } }',
      { input: { clinicId: 'c-east', mrn: 'MRN-EAST-ROLLBACK01', givenName: 'Rollo', familyName: 'Backwell' } },
    );
    await removeTrigger();
    expectWithheld(sent, ['Rollo', 'Backwell', 'MRN-EAST-ROLLBACK01']);
    expect(await patientCount()).toBe(count);
    // The mrn is free: creating it now succeeds (a committed first attempt would make it a duplicate).
    const retry = await send(await gw.tokenFor('reg-east'), 'mutation($input: CreatePatientInput!) { createPatient(input: $input) { id } }', {
      input: { clinicId: 'c-east', mrn: 'MRN-EAST-ROLLBACK01', givenName: 'Rollo', familyName: 'Backwell' },
    });
    expect(retry.r.body.errors).toBeUndefined();
    expect(await patientCount()).toBe(count + 1);
  });
});

describe('audit rows of mutations name the changed fields, never their values', () => {
  function expectNoValues(rows: Record<string, any>[], values: readonly string[]) {
    expect(rows.length).toBeGreaterThan(0);
    for (const row of rows) {
      for (const [column, v] of Object.entries(row)) {
        const text = v instanceof Date ? v.toISOString() : v === null ? '' : String(v);
        for (const value of values) expect(text.includes(value), `audit column ${column} carries a value`).toBe(false);
      }
    }
  }

  it('createPatient as registrar: one create row per given field, naming field and patient only', async () => {
    const input = {
      clinicId: 'c-east',
      mrn: 'MRN-EAST-AUDIT00001',
      ssn: '987-65-4320',
      givenName: 'Zephyrine',
      familyName: 'Auditmore',
      birthDate: '1991-02-03',
      phone: '+1 555 0911',
      email: 'zephyrine.auditmore@example.invalid',
    };
    const sent = await send(await gw.tokenFor('reg-east'), 'mutation($input: CreatePatientInput!) { createPatient(input: $input) { id clinicId } }', { input });
    expect(sent.r.body.errors).toBeUndefined();
    const id = sent.r.body.data!.createPatient.id as string;
    expect(sent.r.body.data!.createPatient.clinicId).toBe('c-east');

    const rows = await rowsOf(sent.requestId);
    const given = Object.keys(input).filter((k) => k !== 'clinicId');
    expect(rows.map((r) => r.field).sort()).toEqual([...given].sort());
    for (const r of rows) {
      expect(r.action).toBe('create');
      expect(r.type_name).toBe('Patient');
      expect(r.patient_id).toBe(id);
      expect(r.record_id).toBeNull();
      expect(r.actor).toBe('reg-east');
      expect(r.actor_kind).toBe('user');
      expect(r.role).toBe('registrar');
      expect(r.purpose).toBe(purposeOf('registrar'));
      expect(r.client_addr).toMatch(LOOPBACK);
      expect(r.break_glass).toBe(false);
    }
    expectNoValues(rows, [...given.map((k) => input[k as keyof typeof input]), '987654320', 'MRN-EAST-AUDIT00001'.toLowerCase()]);
  });

  it('updatePatient: one update row per changed field, plus read rows for what the answer shows', async () => {
    const seed = gw.data.patients.filter((p) => p.clinicId === 'c-north')[1]!;
    const input = { phone: '+1 555 0922', address: '7 Audit Row, Testville' };
    expect(seed.phone).not.toBe(input.phone);
    const sent = await send(
      await gw.tokenFor('reg-north'),
      'mutation($id: ID!, $input: UpdatePatientInput!) { updatePatient(id: $id, input: $input) { id phone } }',
      { id: seed.id, input },
    );
    expect(sent.r.body.errors).toBeUndefined();
    expect(sent.r.body.data!.updatePatient).toEqual({ id: seed.id, phone: input.phone });

    const rows = await rowsOf(sent.requestId);
    expect(rows.map((r) => `${r.action}:${r.field}`).sort()).toEqual(['read:phone', 'update:address', 'update:phone']);
    for (const r of rows) {
      expect([r.type_name, r.patient_id, r.record_id, r.actor, r.role, r.purpose]).toEqual(['Patient', seed.id, null, 'reg-north', 'registrar', purposeOf('registrar')]);
    }
    expectNoValues(rows, [input.phone, input.address, seed.phone, seed.address]);

    // The change is real: a later read shows it.
    const read = await send(await gw.tokenFor('reg-north'), 'query($id: ID!) { patient(id: $id) { phone address givenName } }', { id: seed.id });
    expect(read.r.body.data!.patient).toEqual({ phone: input.phone, address: input.address, givenName: seed.givenName });
  });

  it('a refused mutation (physician createPatient: FORBIDDEN) writes nothing but its refusal', async () => {
    const sent = await send(await gw.tokenFor('dr-north-1'), 'mutation($input: CreatePatientInput!) { createPatient(input: $input) { id } }', {
      input: { clinicId: 'c-north', mrn: 'MRN-NORTH-REFUSED01', givenName: 'Nobody' },
    });
    expect(sent.r.body.errors?.map((e) => e.extensions?.code)).toEqual(['FORBIDDEN']);
    expect(sent.r.body.data ?? null).toBeNull();
    expect(await rowsOf(sent.requestId)).toEqual([
      expect.objectContaining({ action: 'refused', detail: 'forbidden', actor: 'dr-north-1', type_name: 'Mutation', field: 'createPatient', patient_id: null }),
    ]);
  });
});
