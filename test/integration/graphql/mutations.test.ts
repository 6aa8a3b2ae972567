import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SeedPatient } from '../../../src/seed/dataset.ts';
import { startTestGateway, type GqlResponse, type TestGateway } from '../../support/gateway.ts';
import { arabicIndic, codesOf, expectBadInput, expectRefused } from '../../support/gql-expect.ts';

// The mutations end to end: who may change what (policies/default.yaml `operations`, and no
// writing a field one may not read in full), input checks that name the field and never echo the
// value, row security under every write, one audit row per written field, and a mutation document
// that fails anywhere leaves nothing behind (rows, ciphertext or audit rows).

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 30 });
});
afterAll(async () => gw?.close());

const CREATE = `mutation($input: CreatePatientInput!) {
  createPatient(input: $input) { id clinicId mrn ssn givenName familyName birthDate phone email address }
}`;
const UPDATE = `mutation($id: ID!, $input: UpdatePatientInput!) {
  updatePatient(id: $id, input: $input) { id clinicId mrn ssn givenName phone email }
}`;
const ADD = `mutation($id: ID!, $input: AddEncounterInput!) {
  addEncounter(patientId: $id, input: $input) { id patientId occurredAt kind reason diagnosisCodes notes }
}`;
const ADD_NO_NOTES = `mutation($id: ID!, $input: AddEncounterInput!) {
  addEncounter(patientId: $id, input: $input) { id patientId occurredAt kind reason diagnosisCodes }
}`;
const SET_TEAM = `mutation($id: ID!, $subjects: [String!]!) { setCareTeam(patientId: $id, subjects: $subjects) { id clinicId } }`;
const READ = `query($id: ID!) { patient(id: $id) { id clinicId mrn givenName phone email } }`;

// ---- helpers -------------------------------------------------------------------------------------

const north = (): SeedPatient[] => gw.data.patients.filter((p) => p.clinicId === 'c-north');
/** A seeded c-north patient no other test of this file touches. */
const patientFor = (k: number): SeedPatient => north()[k]!;
const physicianOn = (p: SeedPatient) => p.careTeam.find((s) => s.startsWith('dr-'))!;
const nurseOn = (p: SeedPatient) => p.careTeam.find((s) => s.startsWith('rn-'))!;
const physicianOff = (p: SeedPatient) => ['dr-north-1', 'dr-north-2'].find((s) => !p.careTeam.includes(s))!;

let mrnCounter = 0;
const freshMrn = () => `NEW-${process.pid}-${++mrnCounter}`;

/** Sends a request with a known X-Request-Id so its audit rows can be found. */
async function send(token: string, query: string, variables?: Record<string, unknown>): Promise<GqlResponse & { requestId: string }> {
  const response = await gw.gql(token, query, variables);
  // The gateway's own id, the one its audit rows carry (a client's X-Request-Id never replaces it).
  return { ...response, requestId: response.headers.get('x-request-id') ?? '' };
}

const storedRow = async (id: string): Promise<Record<string, any> | undefined> =>
  (await gw.admin((c) => c.query('SELECT * FROM phigate.patients WHERE id = $1', [id]))).rows[0];

const count = async (table: 'patients' | 'encounters' | 'audit_events' | 'care_team'): Promise<number> =>
  Number((await gw.admin((c) => c.query<{ n: string }>(`SELECT count(*) AS n FROM phigate.${table}`))).rows[0]!.n);

const careTeam = async (id: string): Promise<string[]> =>
  (await gw.admin((c) => c.query<{ subject: string }>('SELECT subject FROM phigate.care_team WHERE patient_id = $1 ORDER BY subject', [id]))).rows.map(
    (r) => r.subject,
  );

// A refusal's own `refused` row is the refusal trail's (test/security/refusals.test.ts): "no audit row" here
// means no row of a record touched.
const auditOf = (requestId: string) => gw.auditRows(`request_id = $1 AND action <> 'refused'`, [requestId]);
const writesOf = async (requestId: string) => (await auditOf(requestId)).filter((r) => r.action === 'create' || r.action === 'update');

/**
 * Row counts (patient keys too: a new patient's key is written with it, so a refused create leaves
 * none) and every stored byte of the given patients: compare before and after a refused change.
 * A write refused for a taken identifier leaves one `search` audit row (the refusal disclosed that
 * the identifier is taken); those are checked where they happen, not counted here.
 */
const snapshot = (ids: readonly string[]) =>
  gw.admin(async (c) => {
    const counts = (
      await c.query(`SELECT (SELECT count(*) FROM phigate.patients) AS patients, (SELECT count(*) FROM phigate.encounters) AS encounters,
                            (SELECT count(*) FROM phigate.care_team) AS care_team, (SELECT count(*) FROM phigate.audit_events WHERE action NOT IN ('refused', 'search', 'alert')) AS audit,
                            (SELECT count(*) FROM phigate.patient_keys) AS patient_keys`)
    ).rows[0];
    const rows = (await c.query('SELECT * FROM phigate.patients WHERE id = ANY($1::uuid[]) ORDER BY id', [ids])).rows;
    return { counts, rows };
  });

// ---- createPatient -------------------------------------------------------------------------------

describe('createPatient', () => {
  it('a registrar creates a patient in its clinic and gets it back as it may read it; each written field is audited', async () => {
    const token = await gw.tokenFor('reg-north');
    const mrn = freshMrn();
    const input = {
      clinicId: 'c-north',
      mrn: ` ${mrn.toLowerCase()} `,
      ssn: '900 12 3456',
      givenName: '  Rowan ',
      familyName: 'Testfield',
      birthDate: '1984-07-19',
      phone: '+1 555 0142',
      email: 'rowan.testfield@example.invalid',
      address: '12 Quarry Lane, Testville',
    };
    const before = await count('patients');
    const r = await send(token, CREATE, { input });
    expect(r.body.errors, r.text).toBeUndefined();
    const created = r.body.data!.createPatient;
    expect(created).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      clinicId: 'c-north',
      mrn, // normalised: trimmed, upper case
      ssn: '900-12-3456', // stored formatted
      givenName: 'Rowan',
      familyName: 'Testfield',
      birthDate: '1984-07-19',
      phone: '+1 555 0142',
      email: 'rowan.testfield@example.invalid',
      address: '12 Quarry Lane, Testville',
    });
    expect(await count('patients')).toBe(before + 1);

    // Stored as ciphertext only, in the clinic asked for.
    const row = (await storedRow(created.id))!;
    expect(row.clinic_id).toBe('c-north');
    const stored = Buffer.concat(['mrn', 'ssn', 'given_name', 'family_name', 'birth_date', 'phone', 'email', 'address'].map((c) => row[c] as Buffer));
    for (const plain of [mrn, '900-12-3456', '900123456', 'Rowan', 'Testfield', '1984-07-19', 'rowan.testfield', 'Quarry Lane']) {
      expect(stored.includes(Buffer.from(plain))).toBe(false);
    }

    // One create row per written field, naming the field and never its value; then the reads of the answer.
    const audit = await auditOf(r.requestId);
    const writes = audit.filter((a) => a.action === 'create');
    expect(writes.map((a) => a.field).sort()).toEqual(['address', 'birthDate', 'email', 'familyName', 'givenName', 'mrn', 'phone', 'ssn']);
    for (const a of writes) {
      expect(a).toMatchObject({ actor: 'reg-north', role: 'registrar', purpose: 'healthcare_operations', type_name: 'Patient', patient_id: created.id, record_id: null });
    }
    expect(audit.filter((a) => a.action === 'read').map((a) => a.field).sort()).toEqual(writes.map((a) => a.field).sort());
    const auditText = JSON.stringify(audit);
    for (const plain of ['Rowan', 'Testfield', '900-12-3456', '0142', 'rowan.testfield']) expect(auditText).not.toContain(plain);

    // Found through the blind indexes written with it.
    const byMrn = await gw.gql(token, `query($m: String!) { patientByMrn(mrn: $m) { id } }`, { m: mrn });
    expect(byMrn.body.data!.patientByMrn).toEqual({ id: created.id });
    const bySsn = await gw.gql(token, `query($s: String!) { patientBySsn(ssn: $s) { id } }`, { s: '900-12-3456' });
    expect(bySsn.body.data!.patientBySsn).toEqual({ id: created.id });
    // A physician of the clinic is not on its (empty) care team.
    const dr = await gw.gql(await gw.tokenFor('dr-north-1'), READ, { id: created.id });
    expect(dr.body).toEqual({ data: { patient: null } });
  });

  it('only the fields given are written and audited; omitted fields stay empty', async () => {
    const r = await send(await gw.tokenFor('reg-north'), CREATE, { input: { clinicId: 'c-north', mrn: freshMrn(), familyName: 'Solo', email: null } });
    expect(r.body.errors, r.text).toBeUndefined();
    expect(r.body.data!.createPatient).toMatchObject({ familyName: 'Solo', ssn: null, email: null, givenName: null });
    const row = (await storedRow(r.body.data!.createPatient.id))!;
    expect(row.ssn).toBeNull();
    expect(row.ssn_bidx).toBeNull();
    expect(row.email).toBeNull();
    expect((await writesOf(r.requestId)).map((a) => a.field).sort()).toEqual(['familyName', 'mrn']);
  });

  it('a second patient with the same MRN (any case or spacing) is BAD_USER_INPUT and nothing is written', async () => {
    const token = await gw.tokenFor('reg-north');
    const mrn = freshMrn();
    const first = await send(token, CREATE, { input: { clinicId: 'c-north', mrn, givenName: 'First' } });
    expect(first.body.errors).toBeUndefined();
    const before = await snapshot([]);
    for (const again of [mrn, mrn.toLowerCase(), `  ${mrn}\t`]) {
      const r = await send(token, CREATE, { input: { clinicId: 'c-north', mrn: again, givenName: 'Second' } });
      expectBadInput(r, 'createPatient', 'mrn', again);
      expect(await auditOf(r.requestId)).toMatchObject([{ action: 'search', type_name: 'Mutation', field: 'createPatient', detail: 'mrn:conflict', role: 'registrar', patient_id: null }]);
    }
    // The existing one is an MRN of a seeded patient, too.
    const seeded = await send(token, CREATE, { input: { clinicId: 'c-north', mrn: patientFor(0).mrn } });
    expectBadInput(seeded, 'createPatient', 'mrn', patientFor(0).mrn);
    expect(await snapshot([])).toEqual(before);
  });

  it('the same MRN in another clinic is a different patient', async () => {
    const r = await send(await gw.tokenFor('reg-south'), CREATE, { input: { clinicId: 'c-south', mrn: patientFor(0).mrn } });
    expect(r.body.errors, r.text).toBeUndefined();
    expect(r.body.data!.createPatient).toMatchObject({ clinicId: 'c-south', mrn: patientFor(0).mrn });
  });

  it('in a clinic the token does not name: FORBIDDEN, nothing written', async () => {
    const before = await snapshot([]);
    const r = await send(await gw.tokenFor('reg-north'), CREATE, { input: { clinicId: 'c-south', mrn: freshMrn(), givenName: 'Elsewhere' } });
    expectRefused(r, 'FORBIDDEN', 'createPatient', 'Elsewhere');
    // A clinic that does not exist at all answers the same.
    const r2 = await send(await gw.tokenFor('reg-north'), CREATE, { input: { clinicId: 'c-nowhere', mrn: freshMrn() } });
    expectRefused(r2, 'FORBIDDEN', 'createPatient');
    expect(await snapshot([])).toEqual(before);
  });

  it.each(['dr-north-1', 'rn-north-1', 'bill-north', 'admin-north', 'compliance-1'])('%s may not create patients: FORBIDDEN', async (sub) => {
    const before = await snapshot([]);
    const r = await send(await gw.tokenFor(sub), CREATE, { input: { clinicId: 'c-north', mrn: freshMrn(), givenName: 'Nobody' } });
    expectRefused(r, 'FORBIDDEN', 'createPatient', 'Nobody');
    expect(await snapshot([])).toEqual(before);
  });

  it('a registrar without MFA: MFA_REQUIRED, nothing written', async () => {
    const before = await snapshot([]);
    const r = await send(await gw.tokenFor('reg-north', { mfa: false }), CREATE, { input: { clinicId: 'c-north', mrn: freshMrn() } });
    expectRefused(r, 'MFA_REQUIRED', 'createPatient');
    expect(await snapshot([])).toEqual(before);
  });

  const twoDaysAhead = new Date(Date.now() + 2 * 86_400_000).toISOString().slice(0, 10);
  const invalid: [field: string, value: string][] = [
    ['birthDate', '1990-02-30'],
    ['birthDate', '12/31/1990'],
    ['birthDate', '1990-1-5'],
    ['birthDate', twoDaysAhead],
    ['birthDate', '2999-01-01'],
    ['birthDate', '1879-12-31'],
    ['email', 'not-an-email'],
    ['email', 'someone@localhost'],
    ['email', 'some one@example.invalid'],
    ['ssn', '90012345'],
    ['ssn', '9001234567'],
    ['ssn', '9001234x6'],
    ['ssn', arabicIndic('900-12-3456')],
    ['mrn', 'MRN 0001'],
    ['mrn', 'MRN-Ünïcode'],
    ['mrn', 'MRN-\u0131'], // dotless i: upper-cases onto ASCII I
    ['mrn', 'MRN-0001\u200b'],
    ['mrn', ''],
    ['givenName', 'Jo\u0000hn'],
    ['givenName', 'Jo\u0007hn'],
    ['givenName', 'Jo\u200bhn'],
    ['givenName', 'Jo\u202ehn'],
    ['givenName', 'Jo\ud800hn'], // a lone surrogate
    ['givenName', '   '],
    ['givenName', 'J'.repeat(101)],
    ['address', 'Long Street '.repeat(834)], // 10,008 characters
    ['phone', 'call me maybe'],
  ];

  it.each(invalid)('%s %j: BAD_USER_INPUT naming the field, not echoing the value, nothing written', async (field, value) => {
    const before = await snapshot([]);
    const input: Record<string, string> = { clinicId: 'c-north', mrn: freshMrn(), givenName: 'Valid', [field]: value };
    const r = await send(await gw.tokenFor('reg-north'), CREATE, { input });
    expectBadInput(r, 'createPatient', field, value);
    if (value.length > 20) expect(r.text).not.toContain(value.slice(0, 20));
    expect(await snapshot([])).toEqual(before);
  });
});

// ---- updatePatient -------------------------------------------------------------------------------

describe('updatePatient', () => {
  it('a registrar changes the phone; the answer and a later read show it; one update row is audited', async () => {
    const p = patientFor(1);
    const token = await gw.tokenFor('reg-north');
    const r = await send(token, UPDATE, { id: p.id, input: { phone: '+1 555 0177' } });
    expect(r.body.errors, r.text).toBeUndefined();
    expect(r.body.data!.updatePatient).toMatchObject({ id: p.id, clinicId: 'c-north', mrn: p.mrn, phone: '+1 555 0177', email: p.email });
    const again = await gw.gql(token, READ, { id: p.id });
    expect(again.body.data!.patient).toMatchObject({ phone: '+1 555 0177', givenName: p.givenName });
    const writes = await writesOf(r.requestId);
    expect(writes).toHaveLength(1);
    expect(writes[0]).toMatchObject({ action: 'update', field: 'phone', patient_id: p.id, role: 'registrar', actor: 'reg-north' });
  });

  it('null clears a field (and is audited as an update of it)', async () => {
    const p = patientFor(1);
    const r = await send(await gw.tokenFor('reg-north'), UPDATE, { id: p.id, input: { email: null } });
    expect(r.body.errors, r.text).toBeUndefined();
    expect(r.body.data!.updatePatient.email).toBeNull();
    expect((await storedRow(p.id))!.email).toBeNull();
    expect((await writesOf(r.requestId)).map((a) => a.field)).toEqual(['email']);
  });

  it('a new SSN moves the blind index: found by the new one, no longer by the old one', async () => {
    const p = patientFor(2);
    const token = await gw.tokenFor('reg-north');
    const r = await send(token, UPDATE, { id: p.id, input: { ssn: '900445566' } });
    expect(r.body.data!.updatePatient.ssn).toBe('900-44-5566');
    const BY = `query($s: String!) { patientBySsn(ssn: $s) { id } }`;
    expect((await gw.gql(token, BY, { s: '900-44-5566' })).body.data!.patientBySsn).toEqual({ id: p.id });
    expect((await gw.gql(token, BY, { s: p.ssn })).body.data!.patientBySsn).toBeNull();
  });

  it('mrn cannot be cleared, an empty change is refused, a taken MRN is refused: BAD_USER_INPUT, row unchanged', async () => {
    const p = patientFor(3);
    const token = await gw.tokenFor('reg-north');
    const before = await snapshot([p.id]);
    expectBadInput(await send(token, UPDATE, { id: p.id, input: { mrn: null } }), 'updatePatient', 'mrn');
    expectBadInput(await send(token, UPDATE, { id: p.id, input: {} }), 'updatePatient', 'input');
    const taken = patientFor(4).mrn;
    expectBadInput(await send(token, UPDATE, { id: p.id, input: { mrn: taken.toLowerCase(), phone: '+1 555 0100' } }), 'updatePatient', 'mrn', taken);
    expectBadInput(await send(token, UPDATE, { id: p.id, input: { birthDate: '2001-13-01' } }), 'updatePatient', 'birthDate', '2001-13-01');
    expectBadInput(await send(token, UPDATE, { id: 'not-a-uuid', input: { phone: '+1 555 0100' } }), 'updatePatient', 'id');
    expect(await snapshot([p.id])).toEqual(before);
  });

  it('a nurse on the care team may not update (no such operation): FORBIDDEN, row unchanged', async () => {
    const p = patientFor(3);
    const before = await snapshot([p.id]);
    const r = await send(await gw.tokenFor(nurseOn(p)), UPDATE, { id: p.id, input: { phone: '+1 555 0101' } });
    expectRefused(r, 'FORBIDDEN', 'updatePatient', '+1 555 0101');
    expect(await snapshot([p.id])).toEqual(before);
  });

  it('a physician on the care team may update the phone, audited as physician for treatment', async () => {
    const p = patientFor(5);
    const r = await send(await gw.tokenFor(physicianOn(p)), UPDATE, { id: p.id, input: { phone: '+1 555 0188' } });
    expect(r.body.errors, r.text).toBeUndefined();
    // Read back through policy: the SSN stays masked for the physician.
    expect(r.body.data!.updatePatient).toMatchObject({ id: p.id, phone: '+1 555 0188', ssn: `***-**-${p.ssn.slice(-4)}` });
    const writes = await writesOf(r.requestId);
    expect(writes.map((a) => [a.field, a.role, a.purpose])).toEqual([['phone', 'physician', 'treatment']]);
  });

  it('a physician may not write the SSN it only sees masked: FORBIDDEN, nothing changes (not even the other fields)', async () => {
    const p = patientFor(5);
    const token = await gw.tokenFor(physicianOn(p));
    const before = await snapshot([p.id]);
    const r = await send(token, UPDATE, { id: p.id, input: { ssn: '900-77-8888' } });
    expectRefused(r, 'FORBIDDEN', 'updatePatient', '900-77-8888');
    expect(r.body.errors![0]!.message).toContain('ssn');
    const both = await send(token, UPDATE, { id: p.id, input: { phone: '+1 555 0199', ssn: null } });
    expectRefused(both, 'FORBIDDEN', 'updatePatient');
    expect(await snapshot([p.id])).toEqual(before);
    expect(await auditOf(both.requestId)).toEqual([]);
  });

  it('a physician not on the care team: FORBIDDEN, the same answer as for a patient that does not exist, row unchanged', async () => {
    const p = patientFor(5);
    const before = await snapshot([p.id]);
    const token = await gw.tokenFor(physicianOff(p));
    const r = await send(token, UPDATE, { id: p.id, input: { phone: '+1 555 0102' } });
    expectRefused(r, 'FORBIDDEN', 'updatePatient', '+1 555 0102');
    const missing = await send(token, UPDATE, { id: randomUUID(), input: { phone: '+1 555 0102' } });
    expectRefused(missing, 'FORBIDDEN', 'updatePatient');
    expect(missing.body.errors![0]!.message).toBe(r.body.errors![0]!.message);
    // A registrar of another clinic: the same.
    const south = await send(await gw.tokenFor('reg-south'), UPDATE, { id: p.id, input: { phone: '+1 555 0102' } });
    expectRefused(south, 'FORBIDDEN', 'updatePatient');
    expect(south.body.errors![0]!.message).toBe(r.body.errors![0]!.message);
    expect(await snapshot([p.id])).toEqual(before);
  });

  it('a patient cannot be moved to another clinic: UpdatePatientInput has no clinicId (GraphQL validation)', async () => {
    const p = patientFor(6);
    const token = await gw.tokenFor('reg-north', { clinics: ['c-north', 'c-south'] });
    const before = await snapshot([p.id]);
    const inline = await send(token, `mutation { updatePatient(id: "${p.id}", input: { clinicId: "c-south", phone: "+1 555 0103" }) { id clinicId } }`);
    expect(inline.body.data ?? null).toBeNull();
    expect(inline.body.errors).toHaveLength(1);
    expect(inline.body.errors![0]!.message).toMatch(/"clinicId" is not defined by type "UpdatePatientInput"/);
    // Through a variable: the client's mistake (not INTERNAL), naming the field but not echoing the value.
    const viaVariables = await send(token, UPDATE, { id: p.id, input: { clinicId: 'c-south', phone: '+1 555 0103' } });
    expectBadInput(viaVariables, 'updatePatient', '"clinicId" is not defined by type "UpdatePatientInput"', '+1 555 0103');
    expect(await snapshot([p.id])).toEqual(before);
    expect((await storedRow(p.id))!.clinic_id).toBe('c-north');
  });

  it('a variable of the wrong type is named as the client declared it', async () => {
    // graphql-jit would name "$phone", a variable the client never declared; the gateway answers
    // with graphql-js's coercion message instead.
    const p = patientFor(6);
    const r = await send(await gw.tokenFor('reg-north'), UPDATE, { id: p.id, input: { phone: 5550104 } });
    expectBadInput(r, 'updatePatient', 'Variable "$input"', '5550104');
    expect(r.body.errors![0]!.message).not.toContain('$phone');
  });
});

describe('variables that do not fit their type', () => {
  it('are BAD_USER_INPUT naming the variable, and never repeat the value (it may be PHI)', async () => {
    const p = patientFor(6);
    const token = await gw.tokenFor('reg-north');
    const before = await snapshot([p.id]);
    for (const input of [{ givenName: ['Secretia'], email: 'secretia.q@example.invalid' }, { ssn: 900123456 }, { phone: { n: '+1 555 0104' } }]) {
      const r = await send(token, UPDATE, { id: p.id, input });
      expectBadInput(r, 'updatePatient', '$input');
      for (const v of ['Secretia', 'secretia.q', '900123456', '0104']) expect(r.text).not.toContain(v);
    }
    const lookup = await send(token, `query($s: String!) { patientBySsn(ssn: $s) { id } }`, { s: 900123456 });
    expectBadInput(lookup, 'patientBySsn', '$s');
    expect(lookup.text).not.toContain('900123456');
    expect(await snapshot([p.id])).toEqual(before);
  });
});

// ---- addEncounter --------------------------------------------------------------------------------

describe('addEncounter', () => {
  const valid = { occurredAt: '2025-03-04T09:15:00Z', kind: 'follow_up' };

  it('a physician on the care team adds one, with codes normalised; its PHI fields are audited as created', async () => {
    const p = patientFor(7);
    const before = await count('encounters');
    const input = { ...valid, occurredAt: '2025-03-04T10:15:00+01:00', reason: 'Knee pain', diagnosisCodes: ['m54.5', ' I10 '], notes: 'Synthetic: rest advised.' };
    const r = await send(await gw.tokenFor(physicianOn(p)), ADD, { id: p.id, input });
    expect(r.body.errors, r.text).toBeUndefined();
    const e = r.body.data!.addEncounter;
    expect(e).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      patientId: p.id,
      occurredAt: '2025-03-04T09:15:00.000Z',
      kind: 'follow_up',
      reason: 'Knee pain',
      diagnosisCodes: ['M54.5', 'I10'],
      notes: 'Synthetic: rest advised.',
    });
    expect(await count('encounters')).toBe(before + 1);
    const stored = (await gw.admin((c) => c.query('SELECT * FROM phigate.encounters WHERE id = $1', [e.id]))).rows[0];
    expect(stored.clinic_id).toBe('c-north');
    expect(Buffer.concat([stored.reason, stored.notes]).includes(Buffer.from('Knee'))).toBe(false);
    const writes = await writesOf(r.requestId);
    expect(writes.map((a) => a.field).sort()).toEqual(['diagnosisCodes', 'kind', 'notes', 'occurredAt', 'reason']);
    for (const a of writes) expect(a).toMatchObject({ action: 'create', type_name: 'Encounter', patient_id: p.id, record_id: e.id, role: 'physician' });
    // The patient's encounters now include it.
    const list = await gw.gql(await gw.tokenFor(physicianOn(p)), `query($id: ID!) { patient(id: $id) { encounters { id } } }`, { id: p.id });
    expect(list.body.data!.patient.encounters.map((x: any) => x.id)).toContain(e.id);
  });

  it('a nurse on the care team adds one without notes', async () => {
    const p = patientFor(7);
    const r = await send(await gw.tokenFor(nurseOn(p)), ADD_NO_NOTES, { id: p.id, input: { ...valid, reason: 'Dressing change', diagnosisCodes: ['Z00.00'] } });
    expect(r.body.errors, r.text).toBeUndefined();
    expect(r.body.data!.addEncounter).toMatchObject({ patientId: p.id, reason: 'Dressing change', diagnosisCodes: ['Z00.00'] });
    expect((await writesOf(r.requestId)).map((a) => `${a.field}:${a.role}`).sort()).toEqual(['diagnosisCodes:nurse', 'kind:nurse', 'occurredAt:nurse', 'reason:nurse']);
  });

  it('a nurse asking for the notes of what it added gets FIELD_DENIED for them, and the encounter still stands', async () => {
    const p = patientFor(7);
    const before = await count('encounters');
    const r = await send(await gw.tokenFor(nurseOn(p)), ADD, { id: p.id, input: { ...valid, reason: 'Check' } });
    expect(codesOf(r)).toEqual(['FIELD_DENIED']);
    expect(r.body.data!.addEncounter).toMatchObject({ reason: 'Check', notes: null });
    expect(await count('encounters')).toBe(before + 1);
  });

  it('a nurse may not write notes it could not read: FORBIDDEN, nothing written', async () => {
    const p = patientFor(7);
    const before = await snapshot([p.id]);
    const r = await send(await gw.tokenFor(nurseOn(p)), ADD_NO_NOTES, { id: p.id, input: { ...valid, notes: 'Nurse note' } });
    expectRefused(r, 'FORBIDDEN', 'addEncounter', 'Nurse note');
    expect(r.body.errors![0]!.message).toContain('notes');
    expect(await snapshot([p.id])).toEqual(before);
  });

  it.each([
    ['registrar', 'reg-north'],
    ['billing', 'bill-north'],
    ['clinic admin', 'admin-north'],
  ])('a %s may not add encounters: FORBIDDEN', async (_what, sub) => {
    const p = patientFor(7);
    const before = await snapshot([p.id]);
    expectRefused(await send(await gw.tokenFor(sub), ADD_NO_NOTES, { id: p.id, input: valid }), 'FORBIDDEN', 'addEncounter');
    expect(await snapshot([p.id])).toEqual(before);
  });

  it('a physician or nurse not on the care team: FORBIDDEN, nothing written', async () => {
    const p = patientFor(7);
    const before = await snapshot([p.id]);
    const otherNurse = ['rn-north-1', 'rn-north-2'].find((s) => !p.careTeam.includes(s))!;
    for (const sub of [physicianOff(p), otherNurse, 'dr-south-1']) {
      expectRefused(await send(await gw.tokenFor(sub), ADD_NO_NOTES, { id: p.id, input: { ...valid, reason: 'x' } }), 'FORBIDDEN', 'addEncounter');
    }
    expect(await snapshot([p.id])).toEqual(before);
  });

  const badEncounter: [field: string, input: Record<string, unknown>, echo?: string][] = [
    ['occurredAt', { occurredAt: '2025-03-04' }],
    ['occurredAt', { occurredAt: '2025-03-04T09:15:00' }], // no time zone
    ['occurredAt', { occurredAt: 'yesterday' }],
    ['occurredAt', { occurredAt: '2025-13-04T09:15:00Z' }],
    ['occurredAt', { occurredAt: '2025-02-30T09:15:00Z' }], // a day February does not have
    ['occurredAt', { occurredAt: '2025-03-04T24:00:00Z' }],
    ['occurredAt', { occurredAt: '0000-01-01T00:00:00Z' }],
    ['kind', { kind: 'Visit' }],
    ['kind', { kind: 'visit; drop table' }],
    ['kind', { kind: '' }],
    ['kind', { kind: 'k'.repeat(40) }],
    ['diagnosisCodes', { diagnosisCodes: ['E11.9', 'not-a-code'] }, 'not-a-code'],
    ['diagnosisCodes', { diagnosisCodes: ['11.9'] }],
    ['diagnosisCodes', { diagnosisCodes: ['E11.99999'] }],
    ['diagnosisCodes', { diagnosisCodes: Array.from({ length: 21 }, () => 'I10') }],
    ['reason', { reason: 'Pain\u0000' }],
    ['notes', { notes: 'n'.repeat(20_001) }],
  ];

  it.each(badEncounter)('%s %j: BAD_USER_INPUT naming the field, nothing written', async (field, over, echo) => {
    const p = patientFor(7);
    const before = await snapshot([p.id]);
    const r = await send(await gw.tokenFor(physicianOn(p)), ADD_NO_NOTES, { id: p.id, input: { ...valid, ...over } });
    const value = echo ?? (typeof over[field] === 'string' ? (over[field] as string) : undefined);
    expectBadInput(r, 'addEncounter', field, value);
    expect(await snapshot([p.id])).toEqual(before);
  });
});

// ---- setCareTeam ---------------------------------------------------------------------------------

describe('setCareTeam', () => {
  it('a clinic admin replaces the care team: the new physician sees the patient, the previous one does not', async () => {
    const p = patientFor(8);
    const previous = physicianOn(p);
    const next = physicianOff(p);
    const READ_NAME = `query($id: ID!) { patient(id: $id) { id givenName } }`;
    expect((await gw.gql(await gw.tokenFor(previous), READ_NAME, { id: p.id })).body.data!.patient).toEqual({ id: p.id, givenName: p.givenName });
    expect((await gw.gql(await gw.tokenFor(next), READ_NAME, { id: p.id })).body.data!.patient).toBeNull();

    const r = await send(await gw.tokenFor('admin-north'), SET_TEAM, { id: p.id, subjects: [next, ' rn-north-1 ', next] });
    expect(r.body.errors, r.text).toBeUndefined();
    expect(r.body.data!.setCareTeam).toEqual({ id: p.id, clinicId: 'c-north' });
    expect(await careTeam(p.id)).toEqual([next, 'rn-north-1'].sort());

    expect((await gw.gql(await gw.tokenFor(next), READ_NAME, { id: p.id })).body.data!.patient).toEqual({ id: p.id, givenName: p.givenName });
    expect((await gw.gql(await gw.tokenFor(previous), READ_NAME, { id: p.id })).body.data!.patient).toBeNull();
    // The new physician may now write where the old one no longer can.
    expect((await gw.gql(await gw.tokenFor(next), UPDATE, { id: p.id, input: { phone: '+1 555 0111' } })).body.errors).toBeUndefined();
    expect(codesOf(await gw.gql(await gw.tokenFor(previous), UPDATE, { id: p.id, input: { phone: '+1 555 0112' } }))).toEqual(['FORBIDDEN']);

    const writes = await writesOf(r.requestId);
    expect(writes).toHaveLength(1);
    expect(writes[0]).toMatchObject({ action: 'update', field: 'careTeam', patient_id: p.id, role: 'clinic_admin', actor: 'admin-north' });
  });

  it('a clinic admin sees no PHI of the patient it changed (FIELD_DENIED), and the change stands', async () => {
    const p = patientFor(8);
    const r = await send(await gw.tokenFor('admin-north'), `mutation($id: ID!, $s: [String!]!) { setCareTeam(patientId: $id, subjects: $s) { id givenName } }`, {
      id: p.id,
      s: [physicianOn(p), nurseOn(p)],
    });
    expect(codesOf(r)).toEqual(['FIELD_DENIED']);
    expect(r.body.data!.setCareTeam).toEqual({ id: p.id, givenName: null });
    expect(r.text).not.toContain(`"${p.givenName}"`);
    expect(await careTeam(p.id)).toEqual([...p.careTeam].sort());
  });

  it('an empty list clears the team: no physician or nurse sees the patient', async () => {
    const p = patientFor(9);
    const r = await send(await gw.tokenFor('admin-north'), SET_TEAM, { id: p.id, subjects: [] });
    expect(r.body.errors, r.text).toBeUndefined();
    expect(await careTeam(p.id)).toEqual([]);
    for (const sub of p.careTeam) expect((await gw.gql(await gw.tokenFor(sub), READ, { id: p.id })).body.data!.patient).toBeNull();
  });

  it('a clinic admin of c-south on a c-north patient: FORBIDDEN, team unchanged', async () => {
    const p = patientFor(4);
    const before = await snapshot([p.id]);
    const team = await careTeam(p.id);
    expectRefused(await send(await gw.tokenFor('admin-south'), SET_TEAM, { id: p.id, subjects: ['dr-south-1'] }), 'FORBIDDEN', 'setCareTeam');
    // Nor may anyone of c-north without the operation: physician, nurse, registrar.
    for (const sub of [physicianOn(p), nurseOn(p), 'reg-north']) {
      expectRefused(await send(await gw.tokenFor(sub), SET_TEAM, { id: p.id, subjects: [sub] }), 'FORBIDDEN', 'setCareTeam');
    }
    expect(await careTeam(p.id)).toEqual(team);
    expect(await snapshot([p.id])).toEqual(before);
  });

  it('bad subjects: BAD_USER_INPUT naming subjects, team unchanged', async () => {
    const p = patientFor(4);
    const team = await careTeam(p.id);
    const token = await gw.tokenFor('admin-north');
    expectBadInput(await send(token, SET_TEAM, { id: p.id, subjects: ['dr-north-1\u0000'] }), 'setCareTeam', 'subjects');
    expectBadInput(await send(token, SET_TEAM, { id: p.id, subjects: [''] }), 'setCareTeam', 'subjects');
    expectBadInput(await send(token, SET_TEAM, { id: p.id, subjects: Array.from({ length: 51 }, (_, i) => `dr-${i}`) }), 'setCareTeam', 'subjects');
    expect(await careTeam(p.id)).toEqual(team);
  });
});

// ---- a failed mutation rolls back whole -----------------------------------------------------------

describe('a mutation document that fails anywhere leaves nothing behind', () => {
  it('update then a create that violates the MRN uniqueness (a database error): neither persists, no audit rows remain', async () => {
    const p = patientFor(6);
    const token = await gw.tokenFor('reg-north');
    const before = await snapshot([p.id]);
    const r = await send(
      token,
      `mutation($id: ID!, $dup: String!) {
        a: updatePatient(id: $id, input: { phone: "+1 555 0190", givenName: "Changed" }) { id phone givenName }
        b: createPatient(input: { clinicId: "c-north", mrn: $dup, givenName: "Dup" }) { id }
      }`,
      { id: p.id, dup: patientFor(0).mrn },
    );
    expect(codesOf(r)).toEqual(['BAD_USER_INPUT']);
    expect(r.body.data ?? null).toBeNull();
    expect(r.text).not.toContain('Changed');
    expect(await snapshot([p.id])).toEqual(before); // same row count, same ciphertext bytes, same audit count
    // Only the conflict, which the answer disclosed, is recorded: nothing of the rolled-back update.
    expect((await auditOf(r.requestId)).map((a) => `${a.action}:${a.detail}`)).toEqual(['search:mrn:conflict']);
    expect((await gw.gql(token, READ, { id: p.id })).body.data!.patient.givenName).toBe(p.givenName);
  });

  it('two creates where the second is refused by policy (no database error): the first is rolled back too', async () => {
    const token = await gw.tokenFor('reg-north');
    const before = await snapshot([]);
    const mrn = freshMrn();
    const r = await send(
      token,
      `mutation($m1: String!, $m2: String!) {
        a: createPatient(input: { clinicId: "c-north", mrn: $m1, givenName: "Kept?" }) { id mrn givenName }
        b: createPatient(input: { clinicId: "c-south", mrn: $m2 }) { id }
      }`,
      { m1: mrn, m2: freshMrn() },
    );
    expect(codesOf(r)).toEqual(['FORBIDDEN']);
    expect(r.body.data ?? null).toBeNull();
    expect(await snapshot([])).toEqual(before);
    expect(await auditOf(r.requestId)).toEqual([]);
    expect((await gw.gql(token, `query($m: String!) { patientByMrn(mrn: $m) { id } }`, { m: mrn })).body.data!.patientByMrn).toBeNull();
  });

  it('an encounter, then a refused SSN write by the same physician: the encounter is rolled back', async () => {
    const p = patientFor(5);
    const token = await gw.tokenFor(physicianOn(p));
    const before = await snapshot([p.id]);
    const r = await send(
      token,
      `mutation($id: ID!) {
        a: addEncounter(patientId: $id, input: { occurredAt: "2025-05-05T10:00:00Z", kind: "visit", notes: "Should vanish" }) { id notes }
        b: updatePatient(id: $id, input: { ssn: "900-00-1111" }) { id }
      }`,
      { id: p.id },
    );
    expect(codesOf(r)).toEqual(['FORBIDDEN']);
    expect(r.body.data ?? null).toBeNull();
    expect(r.text).not.toContain('Should vanish');
    expect(await snapshot([p.id])).toEqual(before);
    expect(await auditOf(r.requestId)).toEqual([]);
  });

  it('a care-team change followed by an invalid update: the team is unchanged', async () => {
    const p = patientFor(4);
    const team = await careTeam(p.id);
    const r = await send(
      await gw.tokenFor('admin-north', { roles: ['clinic_admin', 'registrar'] }),
      `mutation($id: ID!) {
        a: setCareTeam(patientId: $id, subjects: ["dr-north-9"]) { id }
        b: updatePatient(id: $id, input: { email: "broken" }) { id }
      }`,
      { id: p.id },
    );
    expect(codesOf(r)).toEqual(['BAD_USER_INPUT']);
    expect(await careTeam(p.id)).toEqual(team);
    expect(await auditOf(r.requestId)).toEqual([]);
  });
});
