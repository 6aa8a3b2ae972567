import { getIntrospectionQuery, parse } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readOperations, trustedDocumentsOf } from '../../src/cli/trusted-documents.ts';
import { loadConfig } from '../../src/config.ts';
import { buildSchema } from '../../src/graphql/schema.ts';
import { measureDocument } from '../../src/http/plugins/use-query-limits.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { codes, expectNoPhi, postJson, reasons, send, watch, type RawResponse } from './http.ts';

// Abuse limits at the GraphQL edge: each over-limit request is refused with QUERY_TOO_COMPLEX
// naming the limit, before any resolver, transaction, decryption or audit row. The gateway runs
// with a fresh deployment's default limits (depth 8, aliases 15, directives 10, tokens 2000,
// fields 300, cost 20000, batching off, body 100 kB).

const LIMITS = loadConfig({}).limits;
let gw: TestGateway;
let batch3: TestGateway;
beforeAll(async () => {
  [gw, batch3] = await Promise.all([
    startTestGateway({ patients: 12 }),
    startTestGateway({ patients: 4, gatewayOptions: { limits: { ...LIMITS, maxBatch: 3 } } }),
  ]);
});
afterAll(async () => Promise.all([gw?.close(), batch3?.close()]));

const registrar = () => gw.tokenFor('reg-north');

/** A refusal for being over `reason`'s limit, whatever else the query might have been. */
function expectRefused(r: RawResponse, reason: string, status = 400) {
  expect(r.status).toBe(status);
  expect(codes(r).length).toBeGreaterThan(0);
  expect(new Set(codes(r))).toEqual(new Set(['QUERY_TOO_COMPLEX']));
  expect(reasons(r)).toContain(reason);
  expect(r.json?.data ?? null).toBeNull();
}

describe('query limits', () => {
  it("the client's own largest operation (a full page of patients with encounters) passes every limit", async () => {
    const page = Object.values(trustedDocumentsOf(await readOperations())).find((d) => d.startsWith('query PatientPage'));
    const r = await postJson(gw, { query: page, variables: { first: 100 } }, await registrar());
    expect(r.status).toBe(200);
    expect(codes(r).filter((c) => c !== 'FIELD_DENIED')).toEqual([]);
    expect(r.json?.data?.patients.edges.length).toBeGreaterThan(0);
  });

  it('a selection nested deeper than the limit is refused by depth before validation looks at its fields', async () => {
    const seen = await watch(gw);
    const r = await postJson(gw, { query: '{ a { b { c { d { e { f { g { h { i { j } } } } } } } } } }' }, await registrar());
    expectRefused(r, 'max_depth');
    expect(r.text).not.toMatch(/Cannot query field/);
    await seen.expectUntouched();
  });

  it('depth counts through fragments: two fragments nesting 3 + 6 levels are 9 deep', async () => {
    const query = `query { ...A }
      fragment A on Query { a1 { a2 { a3 { ...B } } } }
      fragment B on Patient { b1 { b2 { b3 { b4 { b5 { b6 } } } } } }`;
    expectRefused(await postJson(gw, { query }, await registrar()), 'max_depth');
  });

  it('nested introspection (fields -> type -> fields ...) is refused by depth even where introspection is allowed', async () => {
    const query = '{ __type(name: "Patient") { fields { type { fields { type { fields { type { fields { name } } } } } } } } }';
    expectRefused(await postJson(gw, { query }, await registrar()), 'max_depth');
  });

  it('circular fragments (A spreads B spreads A) get a validation error at once, not a hang', async () => {
    const seen = await watch(gw);
    // "At once" against a hang: a cycle followed has no end, which the test's timeout would meet;
    // a bound in seconds raced the machine's load instead.
    const query = `{ me { ...A } }
      fragment A on Viewer { subject ...B }
      fragment B on Viewer { roles ...A }`;
    const r = await postJson(gw, { query }, await registrar(), { accept: 'application/graphql-response+json' });
    expect(r.status).toBe(400);
    expect(r.json?.errors?.map((e) => e.message)).toContain('Cannot spread fragment "A" within itself via "B".');
    expect(r.json?.data ?? null).toBeNull();
    await seen.expectUntouched();
  });

  it('a fragment bomb (40 fragments each spreading the next twice: 2^40 fields) is refused at once', async () => {
    const fragments = Array.from({ length: 40 }, (_, i) => `fragment F${i} on Viewer { ...F${i + 1} ...F${i + 1} }`);
    const query = `{ me { ...F0 } } ${fragments.join(' ')} fragment F40 on Viewer { subject }`;
    // Refused by its count, not by time: the 2^40 fields expanded would outlast any test's timeout.
    const r = await postJson(gw, { query }, await registrar());
    expectRefused(r, 'max_fields');
  });

  it('200 aliases of patientBySsn (enumerating SSNs in one request) are refused: no lookup, no decryption, no audit row', async () => {
    const seen = await watch(gw);
    const known = gw.data.patients.map((p) => p.ssn);
    const guesses = Array.from({ length: 200 }, (_, i) => known[i] ?? `900-00-${String(i).padStart(4, '0')}`);
    const query = `{ ${guesses.map((ssn, i) => `a${i}: patientBySsn(ssn: "${ssn}") { id ssn givenName }`).join(' ')} }`;
    const r = await postJson(gw, { query }, await registrar());
    expect(r.status).toBe(400);
    expect(new Set(codes(r))).toEqual(new Set(['QUERY_TOO_COMPLEX']));
    expect(r.json?.data ?? null).toBeNull();
    expect(r.text).not.toMatch(/"a\d+"/);
    await seen.expectUntouched();
  });

  it('16 aliases are one over the alias limit, and the error names it', async () => {
    const query = `{ ${Array.from({ length: 16 }, (_, i) => `a${i}: patientBySsn(ssn: "900-00-00${String(i).padStart(2, '0')}") { id }`).join(' ')} }`;
    const r = await postJson(gw, { query }, await registrar());
    expectRefused(r, 'max_aliases');
    expect(r.json?.errors?.[0]?.message).toMatch(/alias count 16 is over the limit of 15/);
  });

  it('a document over a limit is refused every time it comes back, and one within them passes every time', async () => {
    const over = `{ ${Array.from({ length: 16 }, (_, i) => `a${i}: me { subject }`).join(' ')} }`;
    const within = `{ ${Array.from({ length: 15 }, (_, i) => `a${i}: me { subject }`).join(' ')} }`;
    for (let round = 0; round < 2; round++) {
      expectRefused(await postJson(gw, { query: over }, await registrar()), 'max_aliases');
      const r = await postJson(gw, { query: within }, await registrar());
      expect(r.status).toBe(200);
      expect(r.json?.data?.a14).toEqual({ subject: 'reg-north' });
    }
  });

  it('a 3000-token query is refused by its token count', async () => {
    const seen = await watch(gw);
    const r = await postJson(gw, { query: `{ me { ${'subject '.repeat(3000)}} }` }, await registrar());
    expectRefused(r, 'max_tokens');
    await seen.expectUntouched();
  });

  it('50,000 opening braces are refused by the token count, before the parser recurses into them', async () => {
    const r = await postJson(gw, { query: '{'.repeat(50_000) }, await registrar());
    expectRefused(r, 'max_tokens');
    expect(r.text).not.toMatch(/call stack|RangeError/);
  });

  it('eleven directives on one field are over the directive limit', async () => {
    const r = await postJson(gw, { query: `{ me { subject ${'@include(if: true) '.repeat(11)}} }` }, await registrar());
    expectRefused(r, 'max_directives');
  });

  it('500 unknown directives (directive overloading) are refused without one validation error each', async () => {
    const r = await postJson(gw, { query: `{ me { subject ${'@x '.repeat(500)}} }` }, await registrar());
    expectRefused(r, 'max_directives');
    expect(r.json?.errors).toHaveLength(1);
  });

  it('301 fields are over the field limit', async () => {
    expectRefused(await postJson(gw, { query: `{ me { ${'subject '.repeat(301)}} }` }, await registrar()), 'max_fields');
  });

  it('a huge `first` multiplies the cost of its selection: patients(first: 100000) is refused by cost', async () => {
    const seen = await watch(gw);
    const r = await postJson(gw, { query: '{ patients(first: 100000) { edges { node { id ssn } } } }' }, await registrar());
    expectRefused(r, 'max_cost');
    await seen.expectUntouched();
  });

  it('a `first` passed as a variable counts as the largest page: three full pages with encounters are over the cost', async () => {
    const page = (alias: string) =>
      `${alias}: patients(first: $n) { edges { node { id clinicId mrn ssn givenName familyName birthDate phone email address
        encounters { id patientId occurredAt kind reason diagnosisCodes notes } } } }`;
    const query = `query($n: Int) { ${page('p1')} ${page('p2')} ${page('p3')} }`;
    expectRefused(await postJson(gw, { query, variables: { n: 1 } }, await registrar()), 'max_cost');
  });

  it('cost model: a page without `first` counts as the largest page, `encounters` as a list of 10', () => {
    const m = measureDocument(buildSchema(), parse('{ patients { edges { node { encounters { id } } } } }'), { maxPageSize: 100, maxEncounters: 10 });
    // patients 1 + 100 x (edges 1 + node 1 + encounters (1 + 10 x id 1))
    expect(m.cost).toBe(1 + 100 * (1 + 1 + (1 + 10 * 1)));
    expect(m.depth).toBe(5);
  });

  it("the standard introspection query fits the default limits (GraphiQL works where introspection is allowed)", () => {
    const m = measureDocument(buildSchema(), parse(getIntrospectionQuery()), { maxPageSize: 100, maxEncounters: 10 });
    expect(m.depth).toBeLessThanOrEqual(LIMITS.maxDepth);
    expect(m.fields).toBeLessThanOrEqual(LIMITS.maxFields);
    expect(m.cost).toBe(0);
  });

  it('batching is off by default: a batch of 10 operations is refused whole', async () => {
    const seen = await watch(gw);
    const r = await postJson(gw, Array.from({ length: 10 }, () => ({ query: '{ me { subject } }' })), await registrar());
    expectRefused(r, 'max_batch');
    await seen.expectUntouched();
  });

  it('with a batch limit of 3, a batch of 10 operations is refused whole', async () => {
    const seen = await watch(batch3);
    const token = await batch3.tokenFor('reg-north');
    const r = await postJson(batch3, Array.from({ length: 10 }, () => ({ query: '{ patients(first: 2) { edges { node { ssn } } } }' })), token);
    expectRefused(r, 'max_batch');
    expectNoPhi(batch3, r.text);
    await seen.expectUntouched();
  });

  it('with a batch limit of 3, a batch of 3 operations runs', async () => {
    const token = await batch3.tokenFor('reg-north');
    const r = await postJson(batch3, Array.from({ length: 3 }, () => ({ query: '{ me { subject } }' })), token);
    expect(r.status).toBe(200);
    expect(r.json).toEqual(Array.from({ length: 3 }, () => ({ data: { me: { subject: 'reg-north' } } })));
  });

  it('a 2 MB body is refused with 413 from its Content-Length, before it is read', async () => {
    const seen = await watch(gw);
    const body = JSON.stringify({ query: `{ me { subject } } # ${'x'.repeat(2_000_000)}` });
    const r = await postJson(gw, body, await registrar());
    expectRefused(r, 'max_body_bytes', 413);
    await seen.expectUntouched();
  });

  it('a 2 MB body streamed without Content-Length is refused with 413 once the limit is passed', async () => {
    const chunk = new TextEncoder().encode(' '.repeat(64 * 1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent === 0) controller.enqueue(new TextEncoder().encode('{"query":"{ me { subject } }"'));
        if (sent >= 2_000_000) return controller.close();
        sent += chunk.byteLength;
        controller.enqueue(chunk);
      },
    });
    const r = await send(gw.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${await registrar()}` },
      body: stream,
      duplex: 'half',
    });
    expectRefused(r, 'max_body_bytes', 413);
  });

  it('oversized variables JSON (a 200 kB variable) is refused with 413', async () => {
    const seen = await watch(gw);
    const r = await postJson(gw, { query: 'query($s: String!) { patientBySsn(ssn: $s) { id } }', variables: { s: '1'.repeat(200_000) } }, await registrar());
    expectRefused(r, 'max_body_bytes', 413);
    await seen.expectUntouched();
  });
});
