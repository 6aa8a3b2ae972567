import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

// A partner sees the intersection of its role's policy and its key's fields (CONTRACT.md), and a
// search by an identifier needs a principal that sees the identifier in full (policies/default.yaml).
// A search confirms the value it was given and maps it to a patient id, so a key that may not read
// an identifier may not search by it either (first found by an outside tester: the search asked
// the partner role alone, never the key).

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 12 });
});
afterAll(async () => {
  await gw?.close();
});

async function keyFor(partner: string, fields: string[]): Promise<string> {
  const created = await gw.gql(await gw.tokenFor('admin-north'), `mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { key } }`, {
    input: { partner, clinics: ['c-north'], fields, purpose: 'HPAYMT' },
  });
  return created.body.data!.createApiKey.key as string;
}
const target = () => gw.data.patients.find((p) => p.clinicId === 'c-north')!;
const asKey = (key: string, query: string, variables: Record<string, unknown>) => gw.gql(null, query, variables, { authorization: `ApiKey ${key}` });
const BY_MRN = `query($v: String!) { patientByMrn(mrn: $v) { id } }`;
const BY_SSN = `query($v: String!) { patientBySsn(ssn: $v) { id } }`;

describe('a partner key searches only by an identifier it may read in full', () => {
  it('a key without Patient.mrn cannot find a patient by MRN, and the refusal is audited', async () => {
    const key = await keyFor('name-only', ['givenName']);
    const read = await asKey(key, `query($id: ID!) { patient(id: $id) { givenName mrn } }`, { id: target().id });
    expect(read.body.data?.patient?.givenName).toBe(target().givenName);
    expect(read.body.errors?.map((e) => e.extensions?.code)).toEqual(['FIELD_DENIED']);

    const search = await asKey(key, `query($mrn: String!) { patientByMrn(mrn: $mrn) { id givenName } }`, { mrn: target().mrn });
    expect(search.body.data?.patientByMrn ?? null).toBeNull();
    expect(search.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const rows = await gw.auditRows(`request_id = $1 AND action = 'search'`, [search.headers.get('x-request-id')]);
    expect(rows.map((r) => ({ detail: r.detail, patient: r.patient_id, kind: r.actor_kind }))).toEqual([{ detail: 'mrn:refused', patient: null, kind: 'partner' }]);
  });

  it('a miss is refused like a hit: the answer says nothing about the value', async () => {
    const key = await keyFor('name-only-miss', ['givenName', 'familyName']);
    const search = await asKey(key, BY_MRN, { v: 'MRN-NOBODY-0000' });
    expect(search.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });

  it('a key with Patient.ssn still cannot search by SSN: the partner role shows it masked', async () => {
    const key = await keyFor('ssn-masked', ['ssn', 'mrn']);
    const search = await asKey(key, BY_SSN, { v: target().ssn });
    expect(search.body.data?.patientBySsn ?? null).toBeNull();
    expect(search.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });

  it('a key without Patient.ssn cannot search by SSN', async () => {
    const key = await keyFor('mrn-only-ssn', ['mrn']);
    expect((await asKey(key, BY_SSN, { v: target().ssn })).body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });

  it('a key with Patient.mrn finds the patient by MRN', async () => {
    const key = await keyFor('mrn-holder', ['mrn']);
    const search = await asKey(key, BY_MRN, { v: target().mrn });
    expect(search.body.errors).toBeUndefined();
    expect(search.body.data?.patientByMrn?.id).toBe(target().id);
  });
});

describe("a partner key's view of encounters tells nothing of a field it lacks", () => {
  const ENCOUNTERS = `query($id: ID!) { patient(id: $id) { encounters { id kind } } }`;
  const DATED = `query($id: ID!) { patient(id: $id) { encounters { id occurredAt } } }`;

  // The list's order is the dates' order: without Encounter.occurredAt a key would still learn
  // which visit came first and which is the latest. It gets them by id instead.
  it('without Encounter.occurredAt, encounters come in an order that is not the dates', async () => {
    const dated = await keyFor('dated', ['occurredAt']);
    const kinds = await keyFor('kinds-only', ['kind']);
    let compared = 0;
    for (const p of gw.data.patients.filter((q) => q.clinicId === 'c-north')) {
      const byDate = await asKey(dated, DATED, { id: p.id });
      const ids = (byDate.body.data!.patient.encounters as { id: string; occurredAt: string }[]).map((e) => e.id);
      const byKind = await asKey(kinds, ENCOUNTERS, { id: p.id });
      expect(byKind.body.errors).toBeUndefined();
      const shown = (byKind.body.data!.patient.encounters as { id: string }[]).map((e) => e.id);
      expect(shown).toEqual([...ids].sort());
      if (ids.join() !== shown.join()) compared++;
    }
    // The seeded data has patients whose visits' date order differs from their ids' order.
    expect(compared).toBeGreaterThan(0);
  });

  // Reordering what a window picked by date is not enough: which visits a window of `first` holds,
  // and which come after a cursor, would still tell their order (first found by an outside
  // reviewer: a key walking `first: 1, after` got the ids in date order). The window itself goes by
  // id for a key without the date, and for a clinic administrator, whose role never sees dates.
  it.each([
    ['a key without Encounter.occurredAt', 'key'],
    ['a clinic administrator', 'admin'],
  ])('for %s, a window and the pages after it are chosen by id, never by date', async (_who, who) => {
    const dated = await keyFor('dated-walk', ['occurredAt']);
    const kinds = await keyFor('kinds-walk', ['kind']);
    const admin = await gw.tokenFor('admin-north');
    const ask = (query: string, variables: Record<string, unknown>) => (who === 'key' ? asKey(kinds, query, variables) : gw.gql(admin, query, variables));
    const PAGE = `query($id: ID!, $first: Int, $after: String) { patient(id: $id) { encounters(first: $first, after: $after) { id } } }`;
    const idsOf = (r: Awaited<ReturnType<typeof ask>>) => {
      expect(r.body.errors).toBeUndefined();
      return (r.body.data!.patient.encounters as { id: string }[]).map((e) => e.id);
    };
    let telling = 0;
    for (const p of gw.data.patients.filter((q) => q.clinicId === 'c-north')) {
      const newestFirst = (await asKey(dated, `query($id: ID!) { patient(id: $id) { encounters { id occurredAt } } }`, { id: p.id })).body.data!.patient.encounters as { id: string }[];
      if (newestFirst.length < 2) continue;
      const byId = newestFirst.map((e) => e.id).sort();
      const walked: string[] = [];
      for (let after: string | null = null, n = 0; n <= byId.length; n++) {
        const page = idsOf(await ask(PAGE, { id: p.id, first: 1, after }));
        if (page.length === 0) break;
        walked.push(...page);
        after = page[0]!;
      }
      expect(walked).toEqual(byId);
      const window = idsOf(await ask(PAGE, { id: p.id, first: byId.length - 1, after: null }));
      expect(window).toEqual(byId.slice(0, -1));
      // A window picked by date would have held the newest instead.
      if (newestFirst.slice(0, -1).map((e) => e.id).sort().join() !== window.join()) telling++;
    }
    expect(telling).toBeGreaterThan(0);
  });
});

