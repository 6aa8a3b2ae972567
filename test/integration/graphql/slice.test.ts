import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 60 });
});
afterAll(async () => gw?.close());

const PAGE = `query Page($first: Int, $after: String) {
  patients(first: $first, after: $after) {
    edges { cursor node { id clinicId mrn ssn givenName familyName birthDate phone email address
      encounters { id occurredAt kind reason diagnosisCodes notes } } }
    pageInfo { hasNextPage endCursor }
  }
}`;

describe('the vertical slice over HTTP', () => {
  it('no token: HTTP 401 UNAUTHENTICATED with WWW-Authenticate', async () => {
    const r = await gw.gql(null, '{ me { subject } }');
    expect(r.status).toBe(401);
    expect(r.body.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    expect(r.headers.get('www-authenticate')).toMatch(/Bearer/);
    expect(r.body.data ?? null).toBeNull();
  });

  it('a physician with MFA reads exactly its care-team patients, SSN masked', async () => {
    const token = await gw.tokenFor('dr-north-1');
    const r = await gw.gql(token, PAGE, { first: 50 });
    expect(r.body.errors).toBeUndefined();
    const nodes = r.body.data!.patients.edges.map((e: any) => e.node);
    const expected = gw.data.patients.filter((p) => p.careTeam.includes('dr-north-1'));
    expect(nodes.map((n: any) => n.id).sort()).toEqual(expected.map((p) => p.id).sort());
    for (const n of nodes) {
      const seed = expected.find((p) => p.id === n.id)!;
      expect(n.ssn).toBe(`***-**-${seed.ssn.slice(-4)}`);
      expect(n.givenName).toBe(seed.givenName);
      expect(n.mrn).toBe(seed.mrn);
      expect(n.encounters).toHaveLength(seed.encounters.length);
      expect(n.encounters[0].notes).toBeTypeOf('string');
    }
  });

  it('a physician without MFA gets MFA_REQUIRED and no data', async () => {
    const token = await gw.tokenFor('dr-north-1', { mfa: false });
    const r = await gw.gql(token, PAGE, { first: 5 });
    expect(r.body.errors?.[0]?.extensions?.code).toBe('MFA_REQUIRED');
    expect(r.body.data?.patients ?? null).toBeNull();
  });

  it('a page of 50 patients with encounters costs a constant number of round trips', async () => {
    const token = await gw.tokenFor('reg-north');
    const small = await gw.gql(token, PAGE, { first: 2 });
    expect(small.body.errors?.every((e) => e.extensions?.code === 'FIELD_DENIED')).toBe(true);
    const smallTrips = gw.lastRequestLog()!.roundTrips;
    const large = await gw.gql(token, PAGE, { first: 50 });
    expect(large.body.data!.patients.edges.length).toBe(20);
    const largeTrips = gw.lastRequestLog()!.roundTrips;
    // BEGIN + context + what is left of the PHI minute + the page with its encounters + COMMIT,
    // in one; the audit rows and the PHI charge go to the audit writer.
    expect(largeTrips).toBe(1);
    expect(smallTrips).toBe(largeTrips);
  });

  it('a read by id alone in its operation costs one round trip: BEGIN, the context, the row and COMMIT; the audit rows go to the audit writer', async () => {
    const token = await gw.tokenFor('dr-north-1');
    const id = gw.data.patients.find((p) => p.careTeam.includes('dr-north-1'))!.id;
    const r = await gw.gql(token, `query($id: ID!) { patient(id: $id) { id givenName familyName ssn } }`, { id });
    expect(r.body.errors, r.text).toBeUndefined();
    expect(r.body.data!.patient.id).toBe(id);
    expect(gw.lastRequestLog()).toMatchObject({ roundTrips: 1, auditEvents: 3, outcome: 'committed' });
  });
});
