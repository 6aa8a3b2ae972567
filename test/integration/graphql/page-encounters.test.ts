import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';

// A page's encounters are read in the page's statement (src/db/patients.ts, patientPageWithEncounters), a
// patient's alone through the loader: both answer the same, audit the same and decrypt only what
// the principal may see.

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 30 });
});
afterAll(async () => gw?.close());

const NODE = 'id mrn givenName encounters { id patientId occurredAt kind }';
const PAGE = `{ patients(first: 50) { edges { node { ${NODE} } } } }`;
const BY_ID = `query ($id: ID!) { patient(id: $id) { ${NODE} } }`;

describe("a page's encounters, read with the page", () => {
  it('answer what each patient read alone answers, byte for byte, and audit one event per value', async () => {
    const token = await gw.tokenFor('reg-north');
    const page = await gw.gql(token, PAGE);
    expect(page.body.errors, page.text).toBeUndefined();
    const nodes: any[] = page.body.data!.patients.edges.map((e: any) => e.node);
    expect(nodes.length).toBe(gw.data.patients.filter((p) => p.clinicId === 'c-north').length);
    const encounters = nodes.reduce((n, p) => n + p.encounters.length, 0);
    expect(encounters).toBeGreaterThan(nodes.length);
    // mrn, givenName per patient; occurredAt, kind per encounter. Patients and encounters in one
    // statement, sent with BEGIN and the context, and COMMIT behind it: the page is the operation's only field.
    expect(gw.lastRequestLog()).toMatchObject({ roundTrips: 1, auditEvents: nodes.length * 2 + encounters * 2, outcome: 'committed' });
    for (const node of nodes) {
      const alone = await gw.gql(token, BY_ID, { id: node.id });
      expect(JSON.stringify(alone.body.data!.patient)).toBe(JSON.stringify(node));
    }
  });

  it('are read through fragments and aliases too, and not at all when the page does not ask for them', async () => {
    const token = await gw.tokenFor('reg-north');
    const plain = await gw.gql(token, PAGE);
    const viaFragment = await gw.gql(
      token,
      `{ patients(first: 50) { ... on PatientConnection { edges { node { ...P } } } } } fragment P on Patient { id mrn givenName visits: encounters { id patientId occurredAt kind } }`,
    );
    expect(viaFragment.body.errors, viaFragment.text).toBeUndefined();
    expect(JSON.stringify(viaFragment.body.data).replaceAll('"visits"', '"encounters"')).toBe(JSON.stringify(plain.body.data));
    expect(gw.lastRequestLog()).toMatchObject({ roundTrips: 1 });
    await gw.gql(token, '{ patients(first: 50) { edges { node { id mrn } } } }');
    expect(gw.lastRequestLog()).toMatchObject({ roundTrips: 1 });
  });

  it('wait for the end of the request to COMMIT when the page is not alone in its operation', async () => {
    const token = await gw.tokenFor('reg-north');
    const plain = await gw.gql(token, PAGE);
    const twice = await gw.gql(token, `{ a: patients(first: 50) { edges { node { ${NODE} } } } b: patients(first: 1) { edges { node { id } } } }`);
    expect(twice.body.errors, twice.text).toBeUndefined();
    expect(JSON.stringify(twice.body.data!.a)).toBe(JSON.stringify(plain.body.data!.patients));
    expect(twice.body.data!.b.edges).toHaveLength(1);
    // Both pages in the first round trip, COMMIT in the second.
    expect(gw.lastRequestLog()).toMatchObject({ roundTrips: 2, outcome: 'committed' });
    const withTypename = await gw.gql(token, `{ __typename patients(first: 50) { edges { node { ${NODE} } } } }`);
    expect(withTypename.body.data!.patients).toEqual(plain.body.data!.patients);
    expect(gw.lastRequestLog()).toMatchObject({ roundTrips: 1, outcome: 'committed' });
  });

  it('leave a denied field undecrypted and refused, for every encounter of the page', async () => {
    const token = await gw.tokenFor('reg-north');
    const before = gw.cipher.stats.decrypts;
    const r = await gw.gql(token, '{ patients(first: 50) { edges { node { id encounters { id notes } } } } }');
    const nodes: any[] = r.body.data!.patients.edges.map((e: any) => e.node);
    const encounters = nodes.flatMap((n) => n.encounters);
    expect(encounters.length).toBeGreaterThan(0);
    for (const e of encounters) expect(e.notes).toBeNull();
    expect(r.body.errors?.length).toBe(encounters.length);
    expect(new Set(r.body.errors!.map((e) => e.extensions?.code))).toEqual(new Set(['FIELD_DENIED']));
    expect(gw.cipher.stats.decrypts).toBe(before);
  });
});
