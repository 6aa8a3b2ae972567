import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SeedPatient } from '../../src/seed/dataset.ts';
import { startTestGateway, type GqlResponse, type TestGateway } from '../support/gateway.ts';
import { codesOf } from '../support/gql-expect.ts';
import { careTeamOf, counts, dbState, expectNoneOf, expectNoSqlOrStack, sendTracked, storedPatient } from './db-state.ts';
import { codes as rawCodes, postJson, reasons as rawReasons } from './http.ts';

// SQL meta-characters and hostile strings in every string argument of the schema. Every value
// travels as a bind parameter or as ciphertext, never as SQL text, so for each argument and each
// payload exactly one of these holds:
//   - an identifier, id, cursor, date, code, kind, phone or email: BAD_USER_INPUT naming the
//     argument without echoing the value (lookups: null or BAD_USER_INPUT), nothing decrypted;
//   - free text (names, address, encounter reason and notes, care-team subjects): stored verbatim,
//     read back byte for byte, and nothing else in the database changed;
//   - a NUL character or a value over the field's length: BAD_USER_INPUT (PostgreSQL text cannot
//     hold NUL; it must never reach the driver and come back as an INTERNAL with SQL in it);
// and in every case: no value of another patient in the body, no SQL text or stack, and the rows
// of every other patient (and the tables themselves) unchanged.

let gw: TestGateway;
let registrar: string;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 18 });
  // A registrar nobody else uses (its own PHI minute), limited to c-north.
  registrar = await gw.tokenFor('reg-injection', { roles: ['registrar'], clinics: ['c-north'] });
});
afterAll(async () => gw?.close());

const PAYLOADS: readonly (readonly [name: string, value: string])[] = [
  ["quote OR '1'='1", `' OR '1'='1`],
  ['DROP TABLE', `'; DROP TABLE phigate.patients; --`],
  ['backslash', `\\`],
  ['LIKE wildcard %', `%`],
  ['LIKE wildcard _', `_`],
  ['dollar quote', `$$`],
  ['E-string escape', `E'\\x00'`],
  ['NUL character', `a\u0000b`],
  ['ctx_clinics() call', `phigate.ctx_clinics()`],
  ['set_config of the clinics', `set_config('phigate.clinics','c-south',true)`],
  ['90,000 characters (fits the 100 kB body limit)', 'a'.repeat(90_000)],
];

/** Values earlier cases may have stored on the same target, which a later answer may carry back. */
const STORED = PAYLOADS.map(([, v]) => v);

const north = (): SeedPatient[] => gw.data.patients.filter((p) => p.clinicId === 'c-north');
const others = (...except: SeedPatient[]): SeedPatient[] => gw.data.patients.filter((p) => !except.includes(p));
const physicianOn = (p: SeedPatient) => p.careTeam.find((s) => s.startsWith('dr-'))!;

let mrnCounter = 0;
const freshMrn = () => `INJ-${process.pid}-${++mrnCounter}`;

/** Whether free text of at most `max` characters takes the payload (as src/records/validate.ts text()). */
const fitsText = (value: string, max: number) => !value.includes('\u0000') && value.length <= max;

/** A refusal: exactly `code`, no data at `field`, the message names `name` and does not echo the value, nothing of any patient. */
function expectRefusal(r: GqlResponse, code: string, field: string, name: string | null, value: string): void {
  expect(r.status, r.text).toBe(200);
  expect(codesOf(r), r.text).toEqual([code]);
  expect(r.body.data?.[field] ?? null).toBeNull();
  const message = r.body.errors![0]!.message;
  if (name) expect(message).toContain(name);
  if (value.trim().length >= 2) expect(message).not.toContain(value.trim());
  expectNoneOf(r.text, gw.data.patients);
  expectNoSqlOrStack(r.text);
}

// A refusal's own `refused` row is the refusal trail's (refusals.test.ts): "no audit row" here means
// no row of a record touched.
const auditOf = (requestId: string) => gw.auditRows(`request_id = $1 AND action <> 'refused'`, [requestId]);

// ---- lookups and the cursor ----------------------------------------------------------------------

describe('lookups: BAD_USER_INPUT or null, never data, nothing decrypted', () => {
  const LOOKUPS = [
    { arg: 'patientByMrn(mrn)', field: 'patientByMrn', query: `query($v: String!) { patientByMrn(mrn: $v) { id clinicId mrn ssn givenName } }`, name: 'mrn' },
    { arg: 'patientBySsn(ssn)', field: 'patientBySsn', query: `query($v: String!) { patientBySsn(ssn: $v) { id clinicId mrn ssn givenName } }`, name: 'ssn' },
    { arg: 'patient(id)', field: 'patient', query: `query($v: ID!) { patient(id: $v) { id clinicId mrn ssn givenName } }`, name: 'id' },
  ];
  const cases = LOOKUPS.flatMap((l) => PAYLOADS.map(([name, value]) => ({ ...l, payload: name, value })));

  it.each(cases)('$arg <- $payload', async ({ field, query, name, value }) => {
    const before = await dbState(gw);
    const decrypts = gw.cipher.stats.decrypts;
    const r = await sendTracked(gw, registrar, query, { v: value });
    expect(r.status, r.text).toBe(200);
    expect(r.body.data?.[field] ?? null).toBeNull();
    const c = codesOf(r);
    expect(c.length === 0 || (c.length === 1 && c[0] === 'BAD_USER_INPUT'), r.text).toBe(true);
    if (c.length === 1) expectRefusal(r, 'BAD_USER_INPUT', field, name, value);
    expect(gw.cipher.stats.decrypts).toBe(decrypts);
    expectNoneOf(r.text, gw.data.patients);
    expectNoSqlOrStack(r.text);
    // A well-formed identifier that finds nobody is a search, audited as a miss; malformed input is no search.
    const searched = c.length === 0 && field !== 'patient' ? [['search', `${name}:miss`]] : [];
    expect((await auditOf(r.requestId)).map((a) => [a.action, a.detail])).toEqual(searched);
    expect(await dbState(gw)).toEqual(before);
  });

  const PAGE = `query($v: String) { patients(first: 5, after: $v) { edges { cursor node { id mrn ssn } } } }`;
  const cursorCases = [
    ...PAYLOADS.map(([payload, value]) => ({ payload, value })),
    // Shaped like the cursors this API issues (base64url of `patient:<uuid>`), with the payload inside.
    ...PAYLOADS.map(([payload, value]) => ({
      payload: `base64url("patient:<uuid>" + ${payload})`,
      value: Buffer.from(`patient:00000000-0000-4000-8000-000000000000${value}`).toString('base64url'),
    })),
  ].filter((c) => c.value.length < 95_000);

  it.each(cursorCases)('patients(after) <- $payload: BAD_USER_INPUT, no page', async ({ value }) => {
    const before = await dbState(gw);
    const decrypts = gw.cipher.stats.decrypts;
    const r = await sendTracked(gw, registrar, PAGE, { v: value });
    expect(r.body.data ?? null).toBeNull();
    expectRefusal(r, 'BAD_USER_INPUT', 'patients', 'after', value);
    expect(gw.cipher.stats.decrypts).toBe(decrypts);
    expect(await auditOf(r.requestId)).toEqual([]);
    expect(await dbState(gw)).toEqual(before);
  });

  // A patient's encounters page on with `after`, an encounter's id: the same cursor payloads are
  // refused before any statement, the patient's own fields standing.
  const ENCOUNTER_PAGE = `query($id: ID!, $v: String) { patient(id: $id) { id encounters(first: 2, after: $v) { id } } }`;
  it.each(cursorCases)('Patient.encounters(after) <- $payload: BAD_USER_INPUT, no encounters', async ({ value }) => {
    const p = north()[2]!;
    const before = await dbState(gw);
    const decrypts = gw.cipher.stats.decrypts;
    const r = await sendTracked(gw, registrar, ENCOUNTER_PAGE, { id: p.id, v: value });
    expect(r.status, r.text).toBe(200);
    expect(codesOf(r), r.text).toEqual(['BAD_USER_INPUT']);
    expect(r.body.data!.patient).toEqual({ id: p.id, encounters: null });
    const message = r.body.errors![0]!.message;
    expect(message).toContain('after');
    if (value.trim().length >= 2) expect(message).not.toContain(value.trim());
    expectNoneOf(r.text, others(p));
    expectNoSqlOrStack(r.text);
    expect(gw.cipher.stats.decrypts).toBe(decrypts);
    expect(await auditOf(r.requestId)).toEqual([]);
    expect(await dbState(gw)).toEqual(before);
  });
});

// ---- createPatient ---------------------------------------------------------------------------------

const CREATE = `mutation($input: CreatePatientInput!) {
  createPatient(input: $input) { id clinicId mrn ssn givenName familyName birthDate phone email address }
}`;
const READ = `query($id: ID!) { patient(id: $id) { id clinicId mrn ssn givenName familyName birthDate phone email address } }`;

/** Free-text fields and their length limit; every other string field has a format. */
const PATIENT_TEXT: Record<string, number> = { givenName: 100, familyName: 100, address: 300 };
const COLUMN: Record<string, string> = { givenName: 'given_name', familyName: 'family_name', address: 'address' };

describe('createPatient(input): a hostile value is refused or stored verbatim as text', () => {
  const ARGS = ['clinicId', 'mrn', 'ssn', 'givenName', 'familyName', 'birthDate', 'phone', 'email', 'address'];
  const cases = ARGS.flatMap((arg) => PAYLOADS.map(([payload, value]) => ({ arg, payload, value })));

  it.each(cases)('input.$arg <- $payload', async ({ arg, value }) => {
    const before = await dbState(gw);
    const input: Record<string, string> = { clinicId: 'c-north', mrn: freshMrn(), givenName: 'Valid', [arg]: value };
    const r = await sendTracked(gw, registrar, CREATE, { input });
    const max = PATIENT_TEXT[arg];
    if (max !== undefined && fitsText(value, max)) {
      // Free text: stored and answered verbatim; exactly one new patient, every other row untouched.
      expect(r.body.errors, r.text).toBeUndefined();
      const created = r.body.data!.createPatient;
      expect(created[arg]).toBe(value);
      expect(created.clinicId).toBe('c-north');
      expect(await counts(gw)).toEqual({ patients: Number(before.patients) + 1, encounters: Number(before.encounters), care_team: Number(before.care_team) });
      const after = await dbState(gw, [created.id]);
      expect({ ...after, patients: before.patients }).toEqual(before);
      const back = await gw.gql(registrar, READ, { id: created.id });
      expect(back.body.errors, back.text).toBeUndefined();
      expect(back.body.data!.patient[arg]).toBe(value);
      expect(back.body.data!.patient).toMatchObject({ id: created.id, clinicId: 'c-north', mrn: input.mrn });
      // The ciphertext does not hold the plain value.
      const row = (await storedPatient(gw, created.id))!;
      if (value.length >= 4) expect((row[COLUMN[arg]!] as Buffer).includes(Buffer.from(value))).toBe(false);
      expectNoneOf(r.text + back.text, gw.data.patients);
      expectNoSqlOrStack(r.text + back.text, STORED);
    } else {
      // clinicId is checked against the token's clinics before anything else: a clinic the token
      // does not name is FORBIDDEN, whatever its spelling.
      const code = arg === 'clinicId' ? 'FORBIDDEN' : 'BAD_USER_INPUT';
      expectRefusal(r, code, 'createPatient', code === 'BAD_USER_INPUT' ? arg : null, value);
      expect(await auditOf(r.requestId)).toEqual([]);
      expect(await dbState(gw)).toEqual(before);
    }
  });
});

// ---- updatePatient -------------------------------------------------------------------------------

const UPDATE = `mutation($id: ID!, $input: UpdatePatientInput!) {
  updatePatient(id: $id, input: $input) { id clinicId mrn ssn givenName familyName birthDate phone email address }
}`;

describe('updatePatient(id, input): a hostile value is refused or stored verbatim as text', () => {
  const target = () => north()[0]!;
  const ARGS = ['id', 'mrn', 'ssn', 'givenName', 'familyName', 'birthDate', 'phone', 'email', 'address'];
  const cases = ARGS.flatMap((arg) => PAYLOADS.map(([payload, value]) => ({ arg, payload, value })));

  it.each(cases)('$arg <- $payload', async ({ arg, value }) => {
    const p = target();
    const before = await dbState(gw);
    const others0 = await dbState(gw, [p.id]);
    const rowBefore = (await storedPatient(gw, p.id))!;
    const variables = arg === 'id' ? { id: value, input: { phone: '+1 555 0199' } } : { id: p.id, input: { [arg]: value } };
    const r = await sendTracked(gw, registrar, UPDATE, variables);
    const max = PATIENT_TEXT[arg];
    if (max !== undefined && fitsText(value, max)) {
      expect(r.body.errors, r.text).toBeUndefined();
      expect(r.body.data!.updatePatient[arg]).toBe(value);
      expect(r.body.data!.updatePatient).toMatchObject({ id: p.id, clinicId: 'c-north', mrn: p.mrn, ssn: p.ssn });
      // Only that one column of that one row changed.
      expect(await dbState(gw, [p.id])).toEqual(others0);
      const rowAfter = (await storedPatient(gw, p.id))!;
      for (const col of Object.keys(rowBefore)) {
        if (col === COLUMN[arg] || col === 'updated_at') continue;
        expect(rowAfter[col], col).toEqual(rowBefore[col]);
      }
      const back = await gw.gql(registrar, READ, { id: p.id });
      expect(back.body.data!.patient[arg]).toBe(value);
      expectNoneOf(r.text + back.text, others(p));
      expectNoSqlOrStack(r.text + back.text, STORED);
    } else {
      expectRefusal(r, 'BAD_USER_INPUT', 'updatePatient', arg, value);
      expect(await auditOf(r.requestId)).toEqual([]);
      expect(await dbState(gw)).toEqual(before);
    }
  });
});

// ---- addEncounter --------------------------------------------------------------------------------

const ADD = `mutation($id: ID!, $input: AddEncounterInput!) {
  addEncounter(patientId: $id, input: $input) { id patientId occurredAt kind reason diagnosisCodes notes }
}`;
const ENCOUNTER_TEXT: Record<string, number> = { reason: 2000, notes: 20_000 };

describe('addEncounter(patientId, input): a hostile value is refused or stored verbatim as text', () => {
  const target = () => north()[1]!;
  const ARGS = ['patientId', 'occurredAt', 'kind', 'reason', 'diagnosisCodes', 'notes'];
  const cases = ARGS.flatMap((arg) => PAYLOADS.map(([payload, value]) => ({ arg, payload, value })));

  it.each(cases)('$arg <- $payload', async ({ arg, value }) => {
    const p = target();
    const token = await gw.tokenFor(physicianOn(p));
    const input: Record<string, unknown> = { occurredAt: '2025-03-04T09:15:00Z', kind: 'visit' };
    if (arg === 'diagnosisCodes') input.diagnosisCodes = [value];
    else if (arg !== 'patientId') input[arg] = value;
    const ownBefore = await encountersOf(p.id);
    const before = await dbState(gw);
    const others0 = await dbState(gw, [p.id]);
    const r = await sendTracked(gw, token, ADD, { id: arg === 'patientId' ? value : p.id, input });
    const max = ENCOUNTER_TEXT[arg];
    if (max !== undefined && fitsText(value, max)) {
      expect(r.body.errors, r.text).toBeUndefined();
      const e = r.body.data!.addEncounter;
      expect(e[arg]).toBe(value);
      expect(e.patientId).toBe(p.id);
      expect(await counts(gw)).toEqual({ patients: Number(before.patients), encounters: Number(before.encounters) + 1, care_team: Number(before.care_team) });
      // Every other patient's rows, the patient's own row and its earlier encounters: unchanged.
      expect({ ...(await dbState(gw, [p.id])), encounters: others0.encounters }).toEqual(others0);
      expect((await encountersOf(p.id)).filter((x) => !x.includes(e.id))).toEqual(ownBefore);
      const back = await readBack(token, p.id, e.id);
      expect(back.encounter[arg]).toBe(value);
      expectNoneOf(r.text, others(p));
      expectNoSqlOrStack(r.text + back.text, STORED);
    } else {
      expectRefusal(r, 'BAD_USER_INPUT', 'addEncounter', arg, value);
      expect(await auditOf(r.requestId)).toEqual([]);
      expect(await dbState(gw)).toEqual(before);
    }
  });
});

/**
 * An encounter as the API shows it, found by paging its patient's encounters (newest first, at most
 * PHIGATE_MAX_ENCOUNTERS a page): the cases add many at one instant, so a new one may be on any page.
 */
async function readBack(token: string, patientId: string, id: string): Promise<{ encounter: Record<string, unknown>; text: string }> {
  let after: string | null = null;
  let text = '';
  for (;;) {
    const r = await gw.gql(token, `query($id: ID!, $after: String) { patient(id: $id) { encounters(after: $after) { id reason notes } } }`, { id: patientId, after });
    expect(r.body.errors, r.text).toBeUndefined();
    text += r.text;
    const page: Record<string, unknown>[] = r.body.data!.patient.encounters;
    const found = page.find((x) => x.id === id);
    if (found) return { encounter: found, text };
    expect(page.length, `encounter ${id} is not among its patient's`).toBeGreaterThan(0);
    after = String(page.at(-1)!.id);
  }
}

const encountersOf = async (patientId: string): Promise<string[]> =>
  (await gw.admin((c) => c.query<{ t: string }>('SELECT t::text AS t FROM phigate.encounters t WHERE patient_id = $1 ORDER BY id', [patientId]))).rows.map((r) => r.t);

// ---- setCareTeam ---------------------------------------------------------------------------------

const SET_TEAM = `mutation($id: ID!, $subjects: [String!]!) { setCareTeam(patientId: $id, subjects: $subjects) { id clinicId } }`;

describe('setCareTeam(patientId, subjects): a hostile value is refused or stored verbatim as a subject', () => {
  const target = () => north()[2]!;
  const cases = ['patientId', 'subjects'].flatMap((arg) => PAYLOADS.map(([payload, value]) => ({ arg, payload, value })));

  it.each(cases)('$arg <- $payload', async ({ arg, value }) => {
    const p = target();
    const token = await gw.tokenFor('admin-north');
    const before = await dbState(gw);
    const others0 = await dbState(gw, [p.id]);
    const variables = arg === 'patientId' ? { id: value, subjects: ['dr-north-1'] } : { id: p.id, subjects: [value] };
    const r = await sendTracked(gw, token, SET_TEAM, variables);
    if (arg === 'subjects' && fitsText(value, 255)) {
      expect(r.body.errors, r.text).toBeUndefined();
      expect(r.body.data!.setCareTeam).toEqual({ id: p.id, clinicId: 'c-north' });
      expect(await careTeamOf(gw, p.id)).toEqual([value]);
      const after = await dbState(gw, [p.id]);
      expect({ ...after, care_team: others0.care_team }).toEqual(others0);
      // The stored subject is a name, not a grant: no seeded physician or nurse of the team sees the patient now.
      for (const sub of p.careTeam) {
        const seen = await gw.gql(await gw.tokenFor(sub), `query($id: ID!) { patient(id: $id) { id givenName } }`, { id: p.id });
        expect(seen.body.data!.patient).toBeNull();
      }
      expectNoneOf(r.text, others(p));
      expectNoSqlOrStack(r.text, STORED);
    } else {
      expectRefusal(r, 'BAD_USER_INPUT', 'setCareTeam', arg, value);
      expect(await auditOf(r.requestId)).toEqual([]);
      expect(await dbState(gw)).toEqual(before);
    }
  });

  it('the care team is put back afterwards for the inline cases below', async () => {
    const p = target();
    const r = await gw.gql(await gw.tokenFor('admin-north'), SET_TEAM, { id: p.id, subjects: [...p.careTeam] });
    expect(r.body.errors, r.text).toBeUndefined();
    expect(await careTeamOf(gw, p.id)).toEqual([...p.careTeam].sort());
  });
});

// ---- inline literals -----------------------------------------------------------------------------

describe('the same payloads written into the document as GraphQL string literals', () => {
  const short = PAYLOADS.filter(([, v]) => v.length < 1000);
  const literal = (v: string) => JSON.stringify(v); // JSON string escapes are GraphQL string escapes

  it.each(short.map(([payload, value]) => ({ payload, value })))('patientByMrn(mrn: <literal>) <- $payload: null or BAD_USER_INPUT', async ({ value }) => {
    const before = await dbState(gw);
    const r = await sendTracked(gw, registrar, `{ patientByMrn(mrn: ${literal(value)}) { id mrn ssn givenName } }`);
    expect(r.body.data?.patientByMrn ?? null).toBeNull();
    expect(codesOf(r).every((c) => c === 'BAD_USER_INPUT'), r.text).toBe(true);
    expectNoneOf(r.text, gw.data.patients);
    expectNoSqlOrStack(r.text);
    expect(await dbState(gw)).toEqual(before);
  });

  it.each(short.map(([payload, value]) => ({ payload, value })))('updatePatient(input: { familyName: <literal> }) <- $payload', async ({ value }) => {
    const p = north()[3]!;
    const before = await dbState(gw);
    const others0 = await dbState(gw, [p.id]);
    const r = await sendTracked(gw, registrar, `mutation { updatePatient(id: ${literal(p.id)}, input: { familyName: ${literal(value)} }) { id familyName givenName } }`);
    if (fitsText(value, 100)) {
      expect(r.body.errors, r.text).toBeUndefined();
      expect(r.body.data!.updatePatient).toEqual({ id: p.id, familyName: value, givenName: p.givenName });
      const back = await gw.gql(registrar, READ, { id: p.id });
      expect(back.body.data!.patient).toMatchObject({ familyName: value, givenName: p.givenName, mrn: p.mrn, ssn: p.ssn, email: p.email });
      expect({ ...(await dbState(gw, [p.id])) }).toEqual(others0);
      expectNoSqlOrStack(r.text, STORED);
    } else {
      expectRefusal(r, 'BAD_USER_INPUT', 'updatePatient', 'familyName', value);
      expect(await dbState(gw)).toEqual(before);
    }
    expectNoneOf(r.text, others(p));
  });
});

// ---- over the body limit -------------------------------------------------------------------------

describe('100,000 characters in an argument: over the body limit, refused before it is read', () => {
  const HUGE = 'a'.repeat(100_000);
  const ARGS: [name: string, query: string, variables: (v: string) => Record<string, unknown>][] = [
    ['patientByMrn(mrn)', `query($v: String!) { patientByMrn(mrn: $v) { id } }`, (v) => ({ v })],
    ['patientBySsn(ssn)', `query($v: String!) { patientBySsn(ssn: $v) { id } }`, (v) => ({ v })],
    ['patient(id)', `query($v: ID!) { patient(id: $v) { id } }`, (v) => ({ v })],
    ['patients(after)', `query($v: String) { patients(after: $v) { edges { cursor } } }`, (v) => ({ v })],
    ...['clinicId', 'mrn', 'ssn', 'givenName', 'familyName', 'birthDate', 'phone', 'email', 'address'].map(
      (f) => [`createPatient(input.${f})`, CREATE, (v: string) => ({ input: { clinicId: 'c-north', mrn: 'HUGE-1', [f]: v } })] as [string, string, (v: string) => Record<string, unknown>],
    ),
    ...['mrn', 'ssn', 'givenName', 'familyName', 'birthDate', 'phone', 'email', 'address'].map(
      (f) => [`updatePatient(input.${f})`, UPDATE, (v: string) => ({ id: '00000000-0000-4000-8000-000000000000', input: { [f]: v } })] as [string, string, (v: string) => Record<string, unknown>],
    ),
    ['updatePatient(id)', UPDATE, (v) => ({ id: v, input: { phone: '+1 555 0100' } })],
    ...['occurredAt', 'kind', 'reason', 'notes'].map(
      (f) => [`addEncounter(input.${f})`, ADD, (v: string) => ({ id: '00000000-0000-4000-8000-000000000000', input: { occurredAt: '2025-03-04T09:15:00Z', kind: 'visit', [f]: v } })] as [string, string, (v: string) => Record<string, unknown>],
    ),
    ['addEncounter(input.diagnosisCodes)', ADD, (v) => ({ id: '00000000-0000-4000-8000-000000000000', input: { occurredAt: '2025-03-04T09:15:00Z', kind: 'visit', diagnosisCodes: [v] } })],
    ['addEncounter(patientId)', ADD, (v) => ({ id: v, input: { occurredAt: '2025-03-04T09:15:00Z', kind: 'visit' } })],
    ['setCareTeam(patientId)', SET_TEAM, (v) => ({ id: v, subjects: ['dr-north-1'] })],
    ['setCareTeam(subjects)', SET_TEAM, (v) => ({ id: '00000000-0000-4000-8000-000000000000', subjects: [v] })],
  ];

  it.each(ARGS)('%s: 413 max_body_bytes, nothing changed', async (_name, query, variables) => {
    const before = await dbState(gw);
    const r = await postJson(gw, { query, variables: variables(HUGE) }, registrar);
    expect(r.status).toBe(413);
    expect(rawCodes(r)).toEqual(['QUERY_TOO_COMPLEX']);
    expect(rawReasons(r)).toEqual(['max_body_bytes']);
    expect(r.text).not.toContain('aaaaaaaaaa');
    expectNoSqlOrStack(r.text);
    expect(await dbState(gw)).toEqual(before);
  });
});
