import { getNamedType, getNullableType, isListType, isObjectType, parse } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LIST_SIZES, measureDocument } from '../../src/http/plugins/use-query-limits.ts';
import { buildSchema } from '../../src/graphql/schema.ts';
import type { SeedPatient } from '../../src/seed/dataset.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';

// Every list the schema answers is bounded in SQL and priced by its bound. Patient.encounters takes
// `first` (1 to PHIGATE_MAX_ENCOUNTERS, 10 here, also its default) and `after` (an encounter's id),
// newest first, and each way a patient's encounters are read applies the window with LIMIT: the
// patient's own statement (by id, by a search, a page) and the loader (a patient a mutation returns,
// or aliases asking for different windows). A patient with 20,000 encounters (found by an outside
// tester: the field was priced at 10 and unbounded) answers no more than its price.

const BOUNDS = { maxPageSize: 100, maxEncounters: 10 };
const HISTORY = 20_000;
const TIED = 5;

let gw: TestGateway;
let patient: SeedPatient;
let physician: string;
let registrar: string;
/** The patient's encounter ids in the order the API gives them: newest first, then by id. */
let order: string[];

beforeAll(async () => {
  gw = await startTestGateway({ patients: 4 });
  patient = gw.data.patients.find((p) => p.careTeam.some((s) => gw.staff(s).roles.includes('physician')))!;
  physician = patient.careTeam.find((s) => gw.staff(s).roles.includes('physician'))!;
  registrar = gw.data.staff.find((s) => s.roles.includes('registrar') && s.clinics.includes(patient.clinicId))!.sub;
  order = await gw.admin(async (c) => {
    await c.query(
      `INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind_legacy)
       SELECT gen_random_uuid(), $1, $2, now() - make_interval(mins => g), 'visit' FROM generate_series(1, ${HISTORY}) g`,
      [patient.id, patient.clinicId],
    );
    // Visits at one instant: the cursor's tie-break is the id.
    await c.query(
      `INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind_legacy)
       SELECT gen_random_uuid(), $1, $2, now() - interval '30 days', 'visit' FROM generate_series(1, ${TIED}) g`,
      [patient.id, patient.clinicId],
    );
    const { rows } = await c.query<{ id: string }>('SELECT id FROM phigate.encounters WHERE patient_id = $1 ORDER BY occurred_at DESC, id', [patient.id]);
    return rows.map((r) => r.id);
  });
});
afterAll(async () => {
  await gw?.close();
});

const ids = (list: { id: string }[] | null | undefined) => (list ?? []).map((e) => e.id);
const byId = async (query: string, variables: Record<string, unknown> = {}, as = physician) => gw.gql(await gw.tokenFor(as), query, { id: patient.id, ...variables });

describe('Patient.encounters is bounded and priced by its bound', () => {
  it('one patient(id) { encounters { id } } returns no more encounters than the limits priced', async () => {
    const query = `query($id: ID!) { patient(id: $id) { encounters { id } } }`;
    const res = await byId(query);
    expect(res.status, res.text).toBe(200);
    const returned = res.body.data!.patient.encounters.length;
    const priced = measureDocument(buildSchema(), parse(query), BOUNDS).cost;
    expect(returned).toBeLessThanOrEqual(priced);
    expect(ids(res.body.data!.patient.encounters)).toEqual(order.slice(0, BOUNDS.maxEncounters));
  });

  it('the same fan-out writes a bounded number of audit events (an outside tester saw 40,004 for one request)', async () => {
    const res = await byId(`query($id: ID!) { patient(id: $id) { encounters { occurredAt kind } } }`);
    expect(res.body.errors, res.text).toBeUndefined();
    const events = await gw.auditRows('request_id = $1', [res.headers.get('x-request-id')]);
    expect(events.length).toBeLessThanOrEqual(2 * BOUNDS.maxEncounters);
  });

  it('pages newest first with `after`, through visits at one instant, as the database orders them', async () => {
    // Start two before the tied visits, so the pages cross them.
    const tied = await gw.admin(async (c) =>
      (await c.query<{ id: string }>(`SELECT id FROM phigate.encounters WHERE patient_id = $1 AND occurred_at = (SELECT occurred_at FROM phigate.encounters WHERE patient_id = $1 GROUP BY occurred_at HAVING count(*) = ${TIED})`, [patient.id])).rows,
    );
    const start = Math.min(...tied.map((t) => order.indexOf(t.id))) - 2;
    let after = order[start]!;
    const seen: string[] = [];
    for (let page = 0; page < 4; page++) {
      const res = await byId(`query($id: ID!, $after: String) { patient(id: $id) { encounters(first: 2, after: $after) { id } } }`, { after });
      expect(res.body.errors, res.text).toBeUndefined();
      const got = ids(res.body.data!.patient.encounters);
      expect(got).toHaveLength(2);
      seen.push(...got);
      after = got.at(-1)!;
    }
    expect(seen).toEqual(order.slice(start + 1, start + 9));
  });

  it.each([
    ['first 0', '(first: 0)'],
    ['first over the bound', '(first: 11)'],
    ['a negative first', '(first: -1)'],
    ['an after that is not an id', '(after: "ZW5jb3VudGVyOng=")'],
  ])('refuses %s with BAD_USER_INPUT, reading nothing', async (_name, args) => {
    const res = await byId(`query($id: ID!) { patient(id: $id) { id encounters${args} { id } } }`);
    expect(res.body.data?.patient?.encounters ?? null).toBeNull();
    expect(res.body.errors!.map((e) => e.extensions?.code)).toEqual(['BAD_USER_INPUT']);
  });

  it('a `first` over the bound passed as a variable is refused too', async () => {
    const res = await byId(`query($id: ID!, $n: Int) { patient(id: $id) { encounters(first: $n) { id } } }`, { n: 10_000 });
    expect(res.body.errors!.map((e) => e.extensions?.code)).toEqual(['BAD_USER_INPUT']);
  });

  it("an `after` that is not one of the patient's encounters selects nothing", async () => {
    const other = await gw.admin(async (c) => (await c.query<{ id: string }>('SELECT id FROM phigate.encounters WHERE patient_id <> $1 LIMIT 1', [patient.id])).rows[0]!.id);
    for (const after of [other, '00000000-0000-4000-8000-000000000000']) {
      const res = await byId(`query($id: ID!, $after: String) { patient(id: $id) { encounters(after: $after) { id } } }`, { after });
      expect(res.body.errors, res.text).toBeUndefined();
      expect(res.body.data!.patient.encounters).toEqual([]);
    }
  });

  it("a page's patients each get at most their window, read in the page's statement", async () => {
    const res = await gw.gql(await gw.tokenFor(physician), `{ patients(first: 100) { edges { node { id encounters(first: 3) { id } } } } }`);
    expect(res.body.errors, res.text).toBeUndefined();
    const nodes: { id: string; encounters: { id: string }[] }[] = res.body.data!.patients.edges.map((e: { node: unknown }) => e.node);
    expect(nodes.every((n) => n.encounters.length <= 3)).toBe(true);
    expect(ids(nodes.find((n) => n.id === patient.id)!.encounters)).toEqual(order.slice(0, 3));
  });

  it('aliases asking for different windows each get their own, through the loader', async () => {
    const res = await byId(`query($id: ID!, $after: String) { patient(id: $id) { a: encounters(first: 2) { id } b: encounters(first: 3, after: $after) { id } c: encounters { id } } }`, {
      after: order[5],
    });
    expect(res.body.errors, res.text).toBeUndefined();
    const p = res.body.data!.patient;
    expect(ids(p.a)).toEqual(order.slice(0, 2));
    expect(ids(p.b)).toEqual(order.slice(6, 9));
    expect(ids(p.c)).toEqual(order.slice(0, 10));
  });

  it("a search's patient and a mutation's patient get their window too", async () => {
    const token = await gw.tokenFor(registrar);
    const found = await gw.gql(token, `query($mrn: String!) { patientByMrn(mrn: $mrn) { id encounters { id } } }`, { mrn: patient.mrn });
    expect(found.body.errors, found.text).toBeUndefined();
    expect(ids(found.body.data!.patientByMrn.encounters)).toEqual(order.slice(0, 10));
    const updated = await gw.gql(token, `mutation($id: ID!) { updatePatient(id: $id, input: { phone: "+1 555 0142" }) { id encounters(first: 4) { id } } }`, { id: patient.id });
    expect(updated.body.errors, updated.text).toBeUndefined();
    expect(ids(updated.body.data!.updatePatient.encounters)).toEqual(order.slice(0, 4));
  });

  it('the bound is told to clients as `me { maxEncounters }`', async () => {
    const res = await gw.gql(await gw.tokenFor(physician), '{ me { maxEncounters } }');
    expect(res.body).toEqual({ data: { me: { maxEncounters: BOUNDS.maxEncounters } } });
  });

  it('is priced by its `first`: a literal at its value, a variable or none at the bound', () => {
    const schema = buildSchema();
    const cost = (q: string) => measureDocument(schema, parse(q), BOUNDS).cost;
    expect(cost('{ patient(id: "x") { encounters(first: 3) { id kind } } }')).toBe(1 + 1 + 3 * 2);
    expect(cost('{ patient(id: "x") { encounters { id kind } } }')).toBe(1 + 1 + 10 * 2);
    expect(cost('query($n: Int) { patient(id: "x") { encounters(first: $n) { id kind } } }')).toBe(1 + 1 + 10 * 2);
    expect(measureDocument(schema, parse('{ patient(id: "x") { encounters { id } } }'), { ...BOUNDS, maxEncounters: 50 }).cost).toBe(1 + 1 + 50);
  });
});

describe('every list of objects the schema answers', () => {
  it('takes `first` (a page, or a window like encounters) or is priced at the bound its SQL applies (LIST_SIZES)', () => {
    const schema = buildSchema();
    const unbounded: string[] = [];
    for (const type of Object.values(schema.getTypeMap())) {
      if (!isObjectType(type) || type.name.startsWith('__') || type.name.endsWith('Connection')) continue;
      for (const field of Object.values(type.getFields())) {
        if (!isListType(getNullableType(field.type)) || !isObjectType(getNamedType(field.type))) continue;
        const name = `${type.name}.${field.name}`;
        if (!field.args.some((a) => a.name === 'first') && LIST_SIZES[name] === undefined) unbounded.push(name);
      }
    }
    // Query.breakGlassGrants and Query.patients' pages take `first`; the rest are in LIST_SIZES.
    expect(unbounded).toEqual([]);
    expect(Object.keys(LIST_SIZES).sort()).toEqual(['Query.apiKeys', 'Query.disclosures']);
  });
});
