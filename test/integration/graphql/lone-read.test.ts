import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FieldCipher } from '../../../src/crypto/field-cipher.ts';
import { startTestGateway, type GqlResponse, type TestGateway } from '../../support/gateway.ts';

// A read of one patient alone in its operation sends one statement in its request transaction
// (its encounters, when asked for, read in that statement), so its COMMIT goes right behind it
// (src/graphql/types/query.ts, RequestTransaction.endWithNext): one round trip, not two. The same
// read beside another root field commits at the end of the request, as every read did before; each
// case below reads both ways and expects the same answer and the same audit trail.

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 24 });
});
afterAll(async () => gw?.close());

const north = () => gw.data.patients.filter((p) => p.clinicId === 'c-north');
const onTeam = (sub: string) => gw.data.patients.filter((p) => p.careTeam.includes(sub));

interface Read {
  readonly r: GqlResponse;
  readonly roundTrips: number;
  readonly outcome: string;
  readonly audit: Record<string, unknown>[];
}

async function read(token: string, query: string, variables: Record<string, unknown>): Promise<Read> {
  const r = await gw.gql(token, query, variables);
  const log = gw.lastRequestLog()!;
  const requestId = r.headers.get('x-request-id')!;
  const rows = await gw.auditRows('request_id = $1', [requestId]);
  const audit = rows
    .map(({ action, type_name, field, patient_id, role, purpose, break_glass, actor }) => ({ action, type_name, field, patient_id, role, purpose, break_glass, actor }))
    .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
  return { r, roundTrips: log.roundTrips as number, outcome: log.outcome as string, audit };
}

/** The lone read and the same read beside `me`: their round trips, and the lone one's answer and audit, which must be the other's. */
async function bothWays(token: string, field: string, args: string, selection: string, variables: Record<string, unknown>) {
  const lone = await read(token, `query(${args}) { ${field} { ${selection} } }`, variables);
  const beside = await read(token, `query(${args}) { ${field} { ${selection} } me { subject } }`, variables);
  expect(lone.r.body.data?.[field.replace(/\(.*$/, '')]).toEqual(beside.r.body.data?.[field.replace(/\(.*$/, '')]);
  expect(lone.r.body.errors ?? []).toEqual(beside.r.body.errors ?? []);
  expect(lone.r.status).toBe(beside.r.status);
  expect(lone.audit).toEqual(beside.audit);
  expect(lone.outcome).toBe(beside.outcome);
  return { lone, beside };
}

const ID = '$id: ID!';
const BY_ID = 'patient(id: $id)';

describe('a lone read by id', () => {
  it('is one round trip, and answers and audits what the same read beside another root field (two) does', async () => {
    const p = onTeam('dr-north-1')[0]!;
    const { lone, beside } = await bothWays(await gw.tokenFor('dr-north-1'), BY_ID, ID, 'id clinicId givenName familyName ssn mrn', { id: p.id });
    expect(lone.r.body.data!.patient).toEqual({ id: p.id, clinicId: p.clinicId, givenName: p.givenName, familyName: p.familyName, ssn: `***-**-${p.ssn.slice(-4)}`, mrn: p.mrn });
    expect(lone.audit).toHaveLength(4);
    expect([lone.roundTrips, beside.roundTrips, lone.outcome]).toEqual([1, 2, 'committed']);
  });

  it('of a patient that does not exist, or that row security hides, is null in one round trip', async () => {
    const token = await gw.tokenFor('reg-north');
    const hidden = gw.data.patients.find((p) => p.clinicId !== 'c-north')!;
    for (const id of [randomUUID(), hidden.id]) {
      const { lone, beside } = await bothWays(token, BY_ID, ID, 'id givenName', { id });
      expect(lone.r.body.data!.patient).toBeNull();
      expect(lone.audit).toEqual([]);
      expect([lone.roundTrips, beside.roundTrips, lone.outcome]).toEqual([1, 2, 'committed']);
    }
  });

  it('with a field its principal may not see: FIELD_DENIED, never decrypted, audited, in one round trip', async () => {
    const p = north()[0]!;
    const decrypts = gw.cipher.stats.decrypts;
    const { lone, beside } = await bothWays(await gw.tokenFor('bill-north'), BY_ID, ID, 'id givenName ssn', { id: p.id });
    // givenName twice (both reads), ssn never.
    expect(gw.cipher.stats.decrypts - decrypts).toBe(2);
    expect(lone.r.body.data!.patient).toEqual({ id: p.id, givenName: p.givenName, ssn: null });
    expect(lone.r.body.errors!.map((e) => e.extensions?.code)).toEqual(['FIELD_DENIED']);
    expect(lone.audit.map((e) => [e.action, e.field])).toEqual([
      ['denied', 'ssn'],
      ['read', 'givenName'],
    ]);
    expect([lone.roundTrips, beside.roundTrips]).toEqual([1, 2]);
  });

  it('under a break-glass grant: the grant is read with the row and every value audited as break-glass, in one round trip', async () => {
    const p = north().find((x) => !x.careTeam.includes('dr-north-2'))!;
    const token = await gw.tokenFor('dr-north-2');
    expect((await gw.gql(token, `query($id: ID!) { patient(id: $id) { id } }`, { id: p.id })).body.data!.patient).toBeNull();
    const opened = await gw.gql(token, `mutation($id: ID!) { breakGlass(patientId: $id, reason: "Unconscious in the emergency department, no care-team physician reachable") { id } }`, { id: p.id });
    expect(opened.body.errors, opened.text).toBeUndefined();
    const { lone, beside } = await bothWays(token, BY_ID, ID, 'id givenName', { id: p.id });
    expect(lone.r.body.data!.patient).toEqual({ id: p.id, givenName: p.givenName });
    expect(lone.audit).toEqual([expect.objectContaining({ action: 'read', field: 'givenName', break_glass: true })]);
    expect([lone.roundTrips, beside.roundTrips]).toEqual([1, 2]);
  });

  it('that asks for the encounters reads them in the patient\'s statement: one round trip, answered and audited as beside another field (two)', async () => {
    const p = onTeam('dr-north-1').find((x) => x.encounters.length > 1)!;
    const token = await gw.tokenFor('dr-north-1');
    // Through a fragment and an alias too: decided from the selection, not from the field's name.
    for (const selection of ['id encounters { id }', 'id ... on Patient { visits: encounters { id } }', 'id ...E']) {
      const query = `query($id: ID!) { patient(id: $id) { ${selection} } }${selection.includes('...E') ? ' fragment E on Patient { encounters { id } }' : ''}`;
      const r = await read(token, query, { id: p.id });
      expect(r.r.body.errors, r.r.text).toBeUndefined();
      const encounters = (r.r.body.data!.patient.encounters ?? r.r.body.data!.patient.visits) as { id: string }[];
      expect(encounters.map((e) => e.id).sort()).toEqual(p.encounters.map((e) => e.id).sort());
      // BEGIN + context + the patient with its encounters + COMMIT (it was three: the encounters in a statement of their own).
      expect([r.roundTrips, r.outcome]).toEqual([1, 'committed']);
    }
    // Every PHI field of the encounters, in the order a read of them alone gives, and their audit rows.
    const { lone, beside } = await bothWays(token, BY_ID, ID, 'id ssn encounters { id patientId occurredAt kind reason diagnosisCodes notes }', { id: p.id });
    expect(lone.r.body.errors, lone.r.text).toBeUndefined();
    expect(lone.r.body.data!.patient.encounters.map((e: { id: string }) => e.id)).toEqual(
      [...p.encounters].sort((a, b) => b.occurredAt.localeCompare(a.occurredAt) || a.id.localeCompare(b.id)).map((e) => e.id),
    );
    expect(lone.audit.filter((e) => e.type_name === 'Encounter').length).toBe(p.encounters.length * 5);
    expect([lone.roundTrips, beside.roundTrips]).toEqual([1, 2]);
  });

  it('with its encounters, of a patient that does not exist or that row security hides: null in one round trip', async () => {
    const hidden = north().find((x) => !x.careTeam.includes('dr-north-1'))!;
    for (const id of [randomUUID(), hidden.id]) {
      const { lone, beside } = await bothWays(await gw.tokenFor('dr-north-1'), BY_ID, ID, 'id encounters { id notes }', { id });
      expect(lone.r.body).toEqual({ data: { patient: null } });
      expect(lone.audit).toEqual([]);
      expect([lone.roundTrips, beside.roundTrips]).toEqual([1, 2]);
    }
  });

  it('two patients with their encounters in one operation: their statements share a round trip', async () => {
    const [a, b] = onTeam('dr-north-1').filter((x) => x.encounters.length > 0);
    const r = await read(await gw.tokenFor('dr-north-1'), 'query($a: ID!, $b: ID!) { a: patient(id: $a) { encounters { id } } b: patient(id: $b) { encounters { id } } }', { a: a!.id, b: b!.id });
    expect(r.r.body.errors, r.r.text).toBeUndefined();
    expect(r.r.body.data!.a.encounters).toHaveLength(a!.encounters.length);
    expect(r.r.body.data!.b.encounters).toHaveLength(b!.encounters.length);
    expect([r.roundTrips, r.outcome]).toEqual([2, 'committed']);
  });

  it('gives its connection back when its COMMIT answers, before its fields are decrypted', async () => {
    // One connection: without the COMMIT ahead the first read would hold it until it settles.
    const one = await startTestGateway({ replicaOf: gw, poolSize: 1 });
    try {
      const token = await gw.tokenFor('reg-north');
      const [a, b] = north();
      // Warm the keys, so that the gated read waits for nothing but its gate.
      expect((await one.gql(token, `query($id: ID!) { patient(id: $id) { ssn } }`, { id: a!.id })).body.data!.patient.ssn).toBe(a!.ssn);
      const gate = gateDecrypts(one.cipher);
      const held = one.gql(token, `query($id: ID!) { patient(id: $id) { ssn } }`, { id: a!.id });
      await until(() => gate.waiting === 1, 'the first read to wait at its decryption');
      await until(() => one.pool.idleCount === 1, 'its connection to be back in the pool', 10_000);
      const other = await one.gql(token, `query($id: ID!) { patient(id: $id) { id clinicId } }`, { id: b!.id });
      expect(other.body.data!.patient).toEqual({ id: b!.id, clinicId: b!.clinicId });
      expect(gate.waiting).toBe(1);
      gate.open();
      expect((await held).body.data!.patient.ssn).toBe(a!.ssn);
    } finally {
      await one.close();
    }
  });
});

describe('a lone lookup by identifier', () => {
  it('by SSN and by MRN, hit or miss: one round trip, the search audited as when beside another field', async () => {
    const token = await gw.tokenFor('reg-north');
    const p = north()[1]!;
    const nobody = '219-09-9999';
    expect(gw.data.patients.some((x) => x.ssn === nobody)).toBe(false);
    const cases: [string, string, Record<string, unknown>][] = [
      ['patientBySsn(ssn: $v)', 'id ssn', { v: p.ssn }],
      ['patientByMrn(mrn: $v)', 'id mrn', { v: p.mrn }],
      ['patientBySsn(ssn: $v)', 'id', { v: nobody }],
    ];
    for (const [field, selection, variables] of cases) {
      const { lone, beside } = await bothWays(token, field, '$v: String!', selection, variables);
      expect(lone.r.body.errors, lone.r.text).toBeUndefined();
      expect(lone.audit.filter((e) => e.action === 'search')).toHaveLength(1);
      expect([lone.roundTrips, beside.roundTrips, lone.outcome]).toEqual([1, 2, 'committed']);
    }
    const hit = await read(token, 'query($v: String!) { patientBySsn(ssn: $v) { id ssn } }', { v: p.ssn });
    expect(hit.r.body.data!.patientBySsn).toEqual({ id: p.id, ssn: p.ssn });
  });

  it('that asks for the encounters reads them in the search\'s statement: one round trip, answered and audited as beside another field (two)', async () => {
    const token = await gw.tokenFor('reg-north');
    const p = north().find((x) => x.encounters.length > 1)!;
    for (const [field, variables] of [['patientByMrn(mrn: $v)', { v: p.mrn }], ['patientBySsn(ssn: $v)', { v: p.ssn }], ['patientBySsn(ssn: $v)', { v: '219-09-9999' }]] as const) {
      const { lone, beside } = await bothWays(token, field, '$v: String!', 'id mrn encounters { id occurredAt kind }', variables);
      expect(lone.r.body.errors, lone.r.text).toBeUndefined();
      const found = Object.values(lone.r.body.data!)[0] as { encounters: { id: string }[] } | null;
      if (variables.v === '219-09-9999') expect(found).toBeNull();
      else expect(found!.encounters.map((e) => e.id)).toEqual([...p.encounters].sort((a, b) => b.occurredAt.localeCompare(a.occurredAt) || a.id.localeCompare(b.id)).map((e) => e.id));
      expect(lone.audit.filter((e) => e.action === 'search')).toHaveLength(1);
      // BEGIN + context + the search with the encounters + COMMIT (it was three: the encounters in a statement of their own).
      expect([lone.roundTrips, beside.roundTrips, lone.outcome]).toEqual([1, 2, 'committed']);
    }
  });
});

/** Holds every decryption of `cipher` until open() is called. */
function gateDecrypts(cipher: FieldCipher) {
  const decryptAt = cipher.decryptAt.bind(cipher);
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  let waiting = 0;
  cipher.decryptAt = async (...args) => {
    waiting++;
    await opened;
    return decryptAt(...args);
  };
  return {
    open: () => {
      open();
      cipher.decryptAt = decryptAt;
    },
    get waiting() {
      return waiting;
    },
  };
}

async function until(condition: () => boolean, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
