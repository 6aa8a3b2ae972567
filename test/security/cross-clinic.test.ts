import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SeedPatient } from '../../src/seed/dataset.ts';
import { startTestGateway, type GqlResponse, type TestGateway } from '../support/gateway.ts';
import { codesOf } from '../support/gql-expect.ts';
import { asApp as asAppIn } from './as-app.ts';
import { careTeamOf, dbState, expectNoneOf, expectNoSqlOrStack, sendTracked, storedPatient } from './db-state.ts';

// Clinic isolation under attack: an id, a cursor or a clinic of another clinic in every argument
// that takes one, as every role that could otherwise use that argument; clinic claims shaped to
// break out of the comma-separated row-security setting; moving a patient to another clinic; and
// at the database level what the app role may not do whatever the gateway does. Each case checks
// the raw body against the other clinic's seeded values, the database (unchanged where nothing may
// change) and the request's audit rows (no PHI read of a patient out of reach).

let gw: TestGateway;
/** A physician and a nurse of c-north whose subjects are on the care team of a c-south patient. */
const CROSS_DR = 'dr-cross-1';
const CROSS_RN = 'rn-cross-1';
beforeAll(async () => {
  gw = await startTestGateway({ patients: 18 });
  const s = gw.data.patients.filter((p) => p.clinicId === 'c-south')[0]!;
  await gw.admin((c) =>
    c.query(`INSERT INTO phigate.care_team (patient_id, subject, clinic_id) VALUES ($1, $2, 'c-south'), ($1, $3, 'c-south')`, [s.id, CROSS_DR, CROSS_RN]),
  );
});
afterAll(async () => gw?.close());

const north = (): SeedPatient[] => gw.data.patients.filter((p) => p.clinicId === 'c-north');
const south = (): SeedPatient[] => gw.data.patients.filter((p) => p.clinicId === 'c-south');
const notNorth = (): SeedPatient[] => gw.data.patients.filter((p) => p.clinicId !== 'c-north');
/** The c-south patient whose care team holds CROSS_DR and CROSS_RN. */
const crossPatient = () => south()[0]!;

const READ_ALL = `query($id: ID!) {
  patient(id: $id) { id clinicId mrn ssn givenName familyName birthDate phone email address encounters { id reason diagnosisCodes notes } }
}`;
const UPDATE = `mutation($id: ID!, $input: UpdatePatientInput!) { updatePatient(id: $id, input: $input) { id clinicId mrn givenName phone } }`;
const ADD = `mutation($id: ID!, $input: AddEncounterInput!) { addEncounter(patientId: $id, input: $input) { id patientId reason } }`;
const SET_TEAM = `mutation($id: ID!, $subjects: [String!]!) { setCareTeam(patientId: $id, subjects: $subjects) { id clinicId } }`;
const CREATE = `mutation($input: CreatePatientInput!) { createPatient(input: $input) { id clinicId mrn givenName } }`;
const PAGE = `query($first: Int, $after: String) { patients(first: $first, after: $after) { edges { cursor node { id clinicId mrn } } pageInfo { endCursor hasNextPage } } }`;

const decrypts = () => gw.cipher.stats.decrypts;
// A refusal's own `refused` row is the refusal trail's (test/security/refusals.test.ts): "no audit row" here
// means no row of a record touched.
const auditOf = (requestId: string) => gw.auditRows(`request_id = $1 AND action <> 'refused'`, [requestId]);
const readRowsOf = async (requestId: string) => (await auditOf(requestId)).filter((a) => a.action === 'read');

/** A c-north principal with the given role (a subject of its own, so its PHI minute is its own). */
const asRole = (role: string, clinics: string[] = ['c-north']) => gw.tokenFor(`${role}-x-${randomBytes(3).toString('hex')}`, { roles: [role], clinics });

/** The refusal every write on a patient out of reach gets: FORBIDDEN, no data, no SQL, nothing of the other clinic. */
function expectForbidden(r: GqlResponse, field: string): void {
  expect(r.status, r.text).toBe(200);
  expect(codesOf(r), r.text).toEqual(['FORBIDDEN']);
  expect(r.body.data?.[field] ?? null).toBeNull();
  expectNoneOf(r.text, notNorth());
  expectNoSqlOrStack(r.text);
}

// ---- patient(id) ---------------------------------------------------------------------------------

describe('patient(id) with the id of a c-south patient', () => {
  const ROLES: [role: string, sub: string][] = [
    ['registrar', 'reg-north'],
    ['physician', 'dr-north-1'],
    ['nurse', 'rn-north-1'],
    ['billing', 'bill-north'],
    ['clinic_admin', 'admin-north'],
  ];

  it.each(ROLES)('as a %s of c-north: null, nothing decrypted, no read audit row', async (_role, sub) => {
    const token = await gw.tokenFor(sub);
    for (const p of [south()[1]!, gw.data.patients.find((x) => x.clinicId === 'c-east')!]) {
      const d0 = decrypts();
      const r = await sendTracked(gw, token, READ_ALL, { id: p.id });
      expect(r.status).toBe(200);
      expect(r.body.data?.patient ?? null).toBeNull();
      expect(codesOf(r), r.text).toEqual([]);
      expect(decrypts()).toBe(d0);
      expectNoneOf(r.text, notNorth());
      expect(await readRowsOf(r.requestId)).toEqual([]);
    }
  });

  it.each([
    ['physician', CROSS_DR],
    ['nurse', CROSS_RN],
  ])('as a %s of c-north who is on the care team of that c-south patient: still null (clinic isolation first)', async (role, sub) => {
    const p = crossPatient();
    const d0 = decrypts();
    const r = await sendTracked(gw, await gw.tokenFor(sub, { roles: [role], clinics: ['c-north'] }), READ_ALL, { id: p.id });
    expect(r.body).toEqual({ data: { patient: null } });
    expect(decrypts()).toBe(d0);
    expect(await readRowsOf(r.requestId)).toEqual([]);
    // Control: the same subject with c-south in its token does see it, so the null above is isolation.
    const control = await gw.gql(await gw.tokenFor(sub, { roles: [role], clinics: ['c-south'] }), `query($id: ID!) { patient(id: $id) { id } }`, { id: p.id });
    expect(control.body.data!.patient).toEqual({ id: p.id });
  });

  it('two aliases, one own patient and one of c-south: the own one answers, the other is null, only the own one is audited', async () => {
    const mine = north()[0]!;
    const theirs = south()[2]!;
    const r = await sendTracked(
      gw,
      await gw.tokenFor('reg-north'),
      `query($a: ID!, $b: ID!) { a: patient(id: $a) { id mrn givenName } b: patient(id: $b) { id mrn givenName } }`,
      { a: mine.id, b: theirs.id },
    );
    expect(r.body.errors).toBeUndefined();
    expect(r.body.data).toEqual({ a: { id: mine.id, mrn: mine.mrn, givenName: mine.givenName }, b: null });
    expectNoneOf(r.text, notNorth());
    const reads = await readRowsOf(r.requestId);
    expect(reads.length).toBeGreaterThan(0);
    expect(new Set(reads.map((a) => a.patient_id))).toEqual(new Set([mine.id]));
  });

  it.each([
    ['patientBySsn', 'ssn'],
    ['patientByMrn', 'mrn'],
  ] as const)('%s with a c-south identifier as a c-north registrar: null, nothing decrypted, only the search audited as a miss', async (field, arg) => {
    const p = south()[3]!;
    const d0 = decrypts();
    const r = await sendTracked(gw, await gw.tokenFor('reg-north'), `query($v: String!) { ${field}(${arg}: $v) { id mrn ssn givenName } }`, { v: p[arg] });
    expect(r.body).toEqual({ data: { [field]: null } });
    expect(decrypts()).toBe(d0);
    expect((await auditOf(r.requestId)).map((a) => [a.action, a.detail, a.patient_id])).toEqual([['search', `${arg}:miss`, null]]);
  });
});

// ---- updatePatient(id) ---------------------------------------------------------------------------

describe('updatePatient(id) with the id of a c-south patient', () => {
  const ROLES: [role: string, sub: () => Promise<string>][] = [
    ['registrar', () => gw.tokenFor('reg-north')],
    ['physician', () => gw.tokenFor('dr-north-1')],
    ['physician on its care team', () => gw.tokenFor(CROSS_DR, { roles: ['physician'], clinics: ['c-north'] })],
    ['nurse', () => gw.tokenFor('rn-north-1')],
    ['clinic_admin', () => gw.tokenFor('admin-north')],
  ];

  it.each(ROLES)('as a %s of c-north: FORBIDDEN as for an id that does not exist, row unchanged, no audit row', async (_role, token) => {
    const p = crossPatient();
    const before = await dbState(gw);
    const t = await token();
    const r = await sendTracked(gw, t, UPDATE, { id: p.id, input: { phone: '+1 555 0166', givenName: 'Hijacked' } });
    expectForbidden(r, 'updatePatient');
    expect(r.text).not.toContain('Hijacked');
    const missing = await gw.gql(t, UPDATE, { id: '00000000-0000-4000-8000-000000000000', input: { phone: '+1 555 0166' } });
    expect(r.body.errors![0]!.message).toBe(missing.body.errors![0]!.message);
    expect(await auditOf(r.requestId)).toEqual([]);
    expect(await dbState(gw)).toEqual(before);
  });
});

// ---- addEncounter(patientId) ---------------------------------------------------------------------

describe('addEncounter(patientId) with the id of a c-south patient', () => {
  const ROLES: [role: string, sub: () => Promise<string>][] = [
    ['physician', () => gw.tokenFor('dr-north-1')],
    ['nurse', () => gw.tokenFor('rn-north-1')],
    ['physician on its care team', () => gw.tokenFor(CROSS_DR, { roles: ['physician'], clinics: ['c-north'] })],
    ['nurse on its care team', () => gw.tokenFor(CROSS_RN, { roles: ['nurse'], clinics: ['c-north'] })],
    ['registrar', () => gw.tokenFor('reg-north')],
  ];

  it.each(ROLES)('as a %s of c-north: FORBIDDEN, no encounter, no audit row', async (_role, token) => {
    const p = crossPatient();
    const before = await dbState(gw);
    const r = await sendTracked(gw, await token(), ADD, { id: p.id, input: { occurredAt: '2025-04-01T10:00:00Z', kind: 'visit', reason: 'Planted' } });
    expectForbidden(r, 'addEncounter');
    expect(await auditOf(r.requestId)).toEqual([]);
    expect(await dbState(gw)).toEqual(before);
  });
});

// ---- setCareTeam(patientId) ----------------------------------------------------------------------

describe('setCareTeam(patientId) with the id of a c-south patient', () => {
  it.each([
    ['the clinic admin of c-north', () => gw.tokenFor('admin-north')],
    ['a clinic admin of c-north and c-east', () => asRole('clinic_admin', ['c-north', 'c-east'])],
    ['a physician of c-north on its care team', () => gw.tokenFor(CROSS_DR, { roles: ['physician'], clinics: ['c-north'] })],
    ['a registrar of c-north', () => gw.tokenFor('reg-north')],
  ])('as %s: FORBIDDEN, no care_team row created or removed', async (_who, token) => {
    const p = crossPatient();
    const team = await careTeamOf(gw, p.id);
    const before = await dbState(gw);
    const r = await sendTracked(gw, await token(), SET_TEAM, { id: p.id, subjects: ['dr-north-1', 'admin-north'] });
    expectForbidden(r, 'setCareTeam');
    expect(await careTeamOf(gw, p.id)).toEqual(team);
    const planted = await gw.admin((c) => c.query(`SELECT 1 FROM phigate.care_team WHERE subject IN ('dr-north-1', 'admin-north') AND clinic_id <> 'c-north'`));
    expect(planted.rowCount).toBe(0);
    expect(await auditOf(r.requestId)).toEqual([]);
    expect(await dbState(gw)).toEqual(before);
  });

  it('a clinic admin of c-north whose mutation document also sets a c-north team: the whole document rolls back', async () => {
    const mine = north()[5]!;
    const theirs = crossPatient();
    const before = await dbState(gw);
    const r = await sendTracked(
      gw,
      await gw.tokenFor('admin-north'),
      `mutation($a: ID!, $b: ID!) { a: setCareTeam(patientId: $a, subjects: ["dr-north-2"]) { id } b: setCareTeam(patientId: $b, subjects: ["dr-north-2"]) { id } }`,
      { a: mine.id, b: theirs.id },
    );
    expect(codesOf(r)).toEqual(['FORBIDDEN']);
    expect(r.body.data ?? null).toBeNull();
    expect(await careTeamOf(gw, mine.id)).toEqual([...mine.careTeam].sort());
    expect(await auditOf(r.requestId)).toEqual([]);
    expect(await dbState(gw)).toEqual(before);
  });
});

// ---- createPatient(input.clinicId) ---------------------------------------------------------------

describe('createPatient(input.clinicId) naming a clinic the token does not', () => {
  let n = 0;
  it.each(['c-south', 'c-east', 'C-SOUTH', ' c-south', 'c-south ', 'c-north,c-south', "c-north' OR '1'='1", 'c-north\u0000', 'c-nowhere'])(
    'clinicId %j as a registrar of c-north: FORBIDDEN, no patient anywhere',
    async (clinicId) => {
      const before = await dbState(gw);
      const mrn = `XCL-${process.pid}-${++n}`;
      const r = await sendTracked(gw, await gw.tokenFor('reg-north'), CREATE, { input: { clinicId, mrn, givenName: 'Intruder' } });
      expectForbidden(r, 'createPatient');
      expect(r.text).not.toContain('Intruder');
      expect(await auditOf(r.requestId)).toEqual([]);
      expect(await dbState(gw)).toEqual(before);
      // Not findable by the registrar of that clinic either.
      const look = await gw.gql(await gw.tokenFor('reg-south'), `query($m: String!) { patientByMrn(mrn: $m) { id } }`, { m: mrn });
      expect(look.body.data!.patientByMrn).toBeNull();
    },
  );

  it('a registrar of c-north and c-south creating in both within one document is allowed only where the token names the clinic', async () => {
    const before = await dbState(gw);
    const r = await sendTracked(
      gw,
      await gw.tokenFor('reg-north', { clinics: ['c-north', 'c-south'] }),
      `mutation { a: createPatient(input: { clinicId: "c-south", mrn: "XCL-${process.pid}-both-a" }) { id } b: createPatient(input: { clinicId: "c-east", mrn: "XCL-${process.pid}-both-b" }) { id } }`,
    );
    expect(codesOf(r)).toEqual(['FORBIDDEN']);
    expect(r.body.data ?? null).toBeNull();
    expect(await dbState(gw)).toEqual(before);
  });
});

// ---- cursors -------------------------------------------------------------------------------------

describe('a cursor of one clinic used by another', () => {
  const idOf = (cursor: string) => /patient:(.+)$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'))![1]!;
  const expected = (clinic: string, after: string, first: number) =>
    gw.data.patients
      .filter((p) => p.clinicId === clinic && p.id > after)
      .map((p) => p.id)
      .sort()
      .slice(0, first);

  it("c-north's endCursor given to c-south's registrar: a page of c-south patients only, ordered after that id", async () => {
    const a = await gw.gql(await gw.tokenFor('reg-north'), PAGE, { first: 2 });
    const cursor = a.body.data!.patients.pageInfo.endCursor as string;
    const r = await gw.gql(await gw.tokenFor('reg-south'), PAGE, { first: 50, after: cursor });
    expect(r.body.errors, r.text).toBeUndefined();
    const nodes = r.body.data!.patients.edges.map((e: any) => e.node);
    expect(nodes.every((n: any) => n.clinicId === 'c-south')).toBe(true);
    expect(nodes.map((n: any) => n.id)).toEqual(expected('c-south', idOf(cursor), 50));
    expectNoneOf(r.text, gw.data.patients.filter((p) => p.clinicId !== 'c-south'));
  });

  it("c-south's cursors, page by page, given to a c-north physician: only its own care-team patients ever appear", async () => {
    const southToken = await gw.tokenFor('reg-south');
    const north1 = await gw.tokenFor('dr-north-1');
    const mine = new Set(north().filter((p) => p.careTeam.includes('dr-north-1')).map((p) => p.id));
    let after: string | null = null;
    do {
      const page: GqlResponse = await gw.gql(southToken, PAGE, { first: 2, after });
      after = page.body.data!.patients.pageInfo.hasNextPage ? (page.body.data!.patients.pageInfo.endCursor as string) : null;
      if (!after) break;
      const r = await gw.gql(north1, PAGE, { first: 50, after });
      expect(r.body.errors, r.text).toBeUndefined();
      for (const e of r.body.data!.patients.edges) expect(mine.has(e.node.id)).toBe(true);
      expectNoneOf(r.text, notNorth());
    } while (after);
  });

  it("a cursor forged from a c-south patient's id is only a position: nothing of that patient is returned", async () => {
    const p = south()[4]!;
    const forged = Buffer.from(`patient:${p.id}`).toString('base64url');
    const r = await gw.gql(await gw.tokenFor('reg-north'), PAGE, { first: 50, after: forged });
    expect(r.body.errors, r.text).toBeUndefined();
    expect(r.body.data!.patients.edges.map((e: any) => e.node.id)).toEqual(expected('c-north', p.id, 50));
    expectNoneOf(r.text, notNorth());
  });
});

// ---- clinics claims shaped to escape the comma-separated setting ---------------------------------

describe('a clinics claim with SQL or list tricks', () => {
  const CLAIMS: string[][] = [
    ['c-north,c-south'],
    ["c-north' OR '1'='1"],
    ['c-north', 'c-south,c-east'],
    ['c-north', "c-south'"],
    ['c-north', ''],
    ['c-north', '*'],
    ['c-north', 'C-SOUTH'],
    ['c-north', '{c-south}'],
    ['c-north', 'c-north\u0000c-south'],
    ['c-north', "c-south'); SELECT set_config('phigate.clinics','c-south',true); --"],
  ];

  it.each(CLAIMS.map((clinics) => ({ clinics, label: JSON.stringify(clinics) })))(
    'clinics $label: refused, or sees nothing beyond c-north',
    async ({ clinics }) => {
      const token = await gw.tokenFor(`reg-claim-${randomBytes(3).toString('hex')}`, { roles: ['registrar'], clinics });
      const s = south()[1]!;
      const e = gw.data.patients.find((p) => p.clinicId === 'c-east')!;
      const d0 = decrypts();
      const r = await sendTracked(
        gw,
        token,
        `query($s: ID!, $ssn: String!, $mrn: String!) {
          patients(first: 100) { edges { node { id clinicId mrn ssn } } }
          patient(id: $s) { id clinicId mrn ssn }
          patientBySsn(ssn: $ssn) { id clinicId }
          patientByMrn(mrn: $mrn) { id clinicId }
        }`,
        { s: s.id, ssn: s.ssn, mrn: e.mrn },
      );
      expectNoneOf(r.text, notNorth());
      expectNoSqlOrStack(r.text);
      const codes = codesOf(r);
      if (codes.length > 0) {
        // Refused whole: the credentials' clinic list is not a list of clinic ids (FORBIDDEN); an
        // empty clinic id is refused by the keyring before that, for lookups (BAD_USER_INPUT).
        expect(codes).toContain('FORBIDDEN');
        for (const c of codes) expect(['FORBIDDEN', 'BAD_USER_INPUT']).toContain(c);
        expect(r.body.data ?? null).toBeNull();
        expect(decrypts()).toBe(d0);
        expect(await readRowsOf(r.requestId)).toEqual([]);
      } else {
        for (const edge of r.body.data!.patients.edges) expect(edge.node.clinicId).toBe('c-north');
        expect(r.body.data!.patient).toBeNull();
        expect(r.body.data!.patientBySsn).toBeNull();
        expect(r.body.data!.patientByMrn).toBeNull();
      }
    },
  );

  it.each([['c-north,c-south'], ["c-north' OR '1'='1"]])('a create in the clinic %j that the token itself claims: refused, no patient', async (claim) => {
    const before = await dbState(gw);
    const token = await gw.tokenFor(`reg-claim-${randomBytes(3).toString('hex')}`, { roles: ['registrar'], clinics: [claim] });
    for (const clinicId of [claim, 'c-south']) {
      const r = await sendTracked(gw, token, CREATE, { input: { clinicId, mrn: `XCL-CLAIM-${randomBytes(3).toString('hex')}`, givenName: 'Smuggled' } });
      expectForbidden(r, 'createPatient');
      expect(await auditOf(r.requestId)).toEqual([]);
    }
    expect(await dbState(gw)).toEqual(before);
  });

  it('a token naming a clinic that does not exist: a create there is refused and leaves no row and no key behind', async () => {
    const before = await dbState(gw);
    const token = await gw.tokenFor(`reg-claim-${randomBytes(3).toString('hex')}`, { roles: ['registrar'], clinics: ['c-north', 'c-nowhere'] });
    const r = await sendTracked(gw, token, CREATE, { input: { clinicId: 'c-nowhere', mrn: `XCL-NOWHERE-${randomBytes(3).toString('hex')}`, givenName: 'Ghost' } });
    expect(r.body.data ?? null).toBeNull();
    expect(codesOf(r)).toEqual(['FORBIDDEN']);
    expectNoSqlOrStack(r.text);
    expect(await auditOf(r.requestId)).toEqual([]);
    expect(await dbState(gw)).toEqual(before);
  });

  it("a subject built to close the actor setting and set the clinics: sees only c-north, and is audited verbatim", async () => {
    const sub = `x', true), set_config('phigate.clinics', 'c-south', true), set_config('phigate.x', 'y`;
    const token = await gw.tokenFor(sub, { roles: ['registrar'], clinics: ['c-north'] });
    const r = await sendTracked(gw, token, `{ patients(first: 100) { edges { node { id clinicId mrn } } } }`);
    expect(r.body.errors, r.text).toBeUndefined();
    const seen = r.body.data!.patients.edges.map((e: any) => e.node);
    expect(seen.map((n: any) => n.id).sort()).toEqual(north().map((p) => p.id).sort());
    expectNoneOf(r.text, notNorth());
    const rows = await auditOf(r.requestId);
    expect(rows.length).toBeGreaterThan(0);
    expect(new Set(rows.map((a) => a.actor))).toEqual(new Set([sub]));
  });

  it('an X-Request-Id built to close its setting: replaced by a fresh id, sees only c-north', async () => {
    const hostile = `r1', true), set_config('phigate.clinics', 'c-south', true), set_config('phigate.x', 'y`;
    const r = await gw.gql(await gw.tokenFor('reg-north'), `{ patients(first: 100) { edges { node { id clinicId } } } }`, undefined, { 'x-request-id': hostile });
    expect(r.body.errors, r.text).toBeUndefined();
    expect(r.body.data!.patients.edges.every((e: any) => e.node.clinicId === 'c-north')).toBe(true);
    expect(r.headers.get('x-request-id')).not.toBe(hostile);
    expect(await gw.auditRows('request_id = $1', [hostile])).toEqual([]);
  });
});

// ---- moving a patient to another clinic ----------------------------------------------------------

describe('moving a patient to another clinic', () => {
  it('inline clinicId in UpdatePatientInput: a validation error, not executed, row unchanged', async () => {
    const p = north()[4]!;
    const before = await dbState(gw);
    const r = await sendTracked(gw, await gw.tokenFor('reg-north', { clinics: ['c-north', 'c-south'] }), `mutation { updatePatient(id: "${p.id}", input: { clinicId: "c-south" }) { id clinicId } }`);
    expect(r.body.data ?? null).toBeNull();
    expect(r.body.errors).toHaveLength(1);
    expect(r.body.errors![0]!.message).toMatch(/"clinicId" is not defined by type "UpdatePatientInput"/);
    expect(await auditOf(r.requestId)).toEqual([]);
    expect(await dbState(gw)).toEqual(before);
  });

  it('clinicId through variables: BAD_USER_INPUT, row unchanged', async () => {
    const p = north()[4]!;
    const before = await dbState(gw);
    const r = await sendTracked(gw, await gw.tokenFor('reg-north', { clinics: ['c-north', 'c-south'] }), UPDATE, { id: p.id, input: { clinicId: 'c-south', givenName: 'Moved' } });
    expect(codesOf(r)).toEqual(['BAD_USER_INPUT']);
    expect(r.body.data ?? null).toBeNull();
    expect(r.text).not.toContain('Moved');
    expect(await dbState(gw)).toEqual(before);
    expect((await storedPatient(gw, p.id))!.clinic_id).toBe('c-north');
  });

  it('the app role holds no UPDATE privilege on patients.clinic_id, nor any on encounters or care_team', async () => {
    const privileges = await gw.admin(
      async (c) =>
        (
          await c.query(`SELECT has_column_privilege('phigate_app', 'phigate.patients', 'clinic_id', 'UPDATE') AS patients_clinic,
                                has_column_privilege('phigate_app', 'phigate.patients', 'id', 'UPDATE') AS patients_id,
                                has_table_privilege('phigate_app', 'phigate.encounters', 'UPDATE') AS encounters,
                                has_table_privilege('phigate_app', 'phigate.care_team', 'UPDATE') AS care_team`)
        ).rows[0],
    );
    expect(privileges).toEqual({ patients_clinic: false, patients_id: false, encounters: false, care_team: false });
  });

  /** Runs `sql` as phigate_app with a request context naming both clinics, and rolls back. */
  const asApp = (ctx: { roles: string; actor: string }, sql: string, params: unknown[]) => asAppIn(gw, { ...ctx, clinics: 'c-north,c-south' }, sql, params);

  it('at the database level, as phigate_app with both clinics in its context: UPDATE of clinic_id is refused (42501)', async () => {
    const p = north()[4]!;
    const before = await dbState(gw);
    const err = await asApp({ roles: 'registrar', actor: 'reg-north' }, `UPDATE phigate.patients SET clinic_id = 'c-south' WHERE id = $1`, [p.id]);
    expect(err?.code).toBe('42501');
    const enc = await asApp({ roles: 'physician', actor: p.careTeam[0]! }, `UPDATE phigate.encounters SET clinic_id = 'c-south' WHERE patient_id = $1`, [p.id]);
    expect(enc?.code).toBe('42501');
    expect(await dbState(gw)).toEqual(before);
    expect((await storedPatient(gw, p.id))!.clinic_id).toBe('c-north');
  });

  it('at the database level: an encounter filed under c-south for a c-north patient is refused by row security', async () => {
    const p = north()[4]!;
    const dr = p.careTeam.find((s) => s.startsWith('dr-'))!;
    const before = await dbState(gw);
    const err = await asApp(
      { roles: 'physician', actor: dr },
      `INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind) VALUES (gen_random_uuid(), $1, 'c-south', now(), 'visit')`,
      [p.id],
    );
    expect(err?.code).toBe('42501');
    expect(await dbState(gw)).toEqual(before);
  });

  it('at the database level: a care_team row pairing a c-south patient with c-north is refused (composite foreign key)', async () => {
    const p = crossPatient();
    const before = await dbState(gw);
    const err = await asApp({ roles: 'clinic_admin', actor: 'admin-north' }, `INSERT INTO phigate.care_team (patient_id, subject, clinic_id) VALUES ($1, 'dr-north-1', 'c-north')`, [p.id]);
    expect(err?.code).toBe('23503');
    expect(await dbState(gw)).toEqual(before);
  });
});

// ---- audit -------------------------------------------------------------------------------------

describe('audit of refused cross-clinic attempts', () => {
  it('no c-north actor has a read, create or update row for any patient of another clinic', async () => {
    const other = notNorth().map((p) => p.id);
    const rows = await gw.auditRows(`patient_id = ANY($1::uuid[]) AND actor NOT LIKE '%south%' AND actor NOT LIKE '%east%' AND actor NOT IN ($2, $3)`, [
      other,
      CROSS_DR,
      CROSS_RN,
    ]);
    expect(rows).toEqual([]);
    // The cross-care-team subjects read the c-south patient only in the control requests with c-south in their token.
    const cross = await gw.auditRows(`actor IN ($1, $2) AND action NOT IN ('read', 'refused')`, [CROSS_DR, CROSS_RN]);
    expect(cross).toEqual([]);
  });
});
