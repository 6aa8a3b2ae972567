import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TRUSTED_DOCUMENTS_FILE } from '../../../src/cli/trusted-documents.ts';
import { loadTrustedDocuments } from '../../../src/http/plugins/use-trusted-documents.ts';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';

// The fast path (src/http/fast-path.ts) must answer exactly as yoga does: every request below is
// sent to a gateway with it and to a replica without it, and status, headers (but the date and the
// request id) and body must be the same.

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly text: string;
}

async function ask(url: string, body: string, headers: Record<string, string>): Promise<Answer> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  const text = await res.text();
  const kept: Record<string, string> = {};
  res.headers.forEach((value, name) => {
    if (name !== 'date' && name !== 'x-request-id') kept[name] = value;
  });
  return { status: res.status, headers: kept, text };
}

/** The answer of both, after checking that they are the same. */
async function same(pair: { fast: TestGateway; yoga: TestGateway }, body: unknown, token: string | null, headers: Record<string, string> = {}): Promise<Answer> {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const all = { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers };
  const viaYoga = await ask(pair.yoga.url, text, all);
  const viaFast = await ask(pair.fast.url, text, all);
  expect(viaFast).toEqual(viaYoga);
  return viaFast;
}

const BY_ID = 'query ($id: ID!) { patient(id: $id) { id givenName familyName birthDate ssn } }';
const PAGE = '{ patients(first: 5) { edges { node { id givenName } } pageInfo { hasNextPage } } }';

describe('the fast path answers as yoga does', () => {
  let pair: { fast: TestGateway; yoga: TestGateway };
  beforeAll(async () => {
    const fast = await startTestGateway({ patients: 12 });
    pair = { fast, yoga: await startTestGateway({ replicaOf: fast, gatewayOptions: { fastPath: false } }) };
  });
  afterAll(async () => {
    await pair?.yoga.close();
    await pair?.fast.close();
  });
  const north = () => pair.fast.data.patients.find((p) => p.clinicId === 'c-north')!;

  it('a read by id, a page, a denied field', async () => {
    const doctor = await pair.fast.tokenFor('dr-north-1');
    const ok = await same(pair, { query: BY_ID, variables: { id: north().id } }, doctor);
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.text).data.patient.id).toBe(north().id);
    await same(pair, { query: PAGE }, doctor);
    await same(pair, { query: BY_ID, variables: { id: north().id } }, await pair.fast.tokenFor('reg-north'));
    await same(pair, { query: BY_ID, variables: { id: north().id } }, doctor, { 'content-type': 'application/json; charset=utf-8' });
  });

  it('an answer of text beyond ASCII: its length in bytes, its bytes as yoga writes them', async () => {
    const registrar = await pair.fast.tokenFor('reg-north');
    const id = pair.fast.data.patients.filter((p) => p.clinicId === 'c-north')[1]!.id;
    const name = 'Zoë Ōtsuka-Nguyễn 🌱';
    const updated = await pair.fast.gql(registrar, 'mutation ($id: ID!, $input: UpdatePatientInput!) { updatePatient(id: $id, input: $input) { id } }', { id, input: { givenName: name } });
    expect(updated.body.errors, updated.text).toBeUndefined();
    const ok = await same(pair, { query: BY_ID, variables: { id } }, registrar);
    expect(JSON.parse(ok.text).data.patient.givenName).toBe(name);
    expect(Number(ok.headers['content-length'])).toBe(Buffer.byteLength(ok.text));
    expect(Buffer.byteLength(ok.text)).toBeGreaterThan(ok.text.length);
  });

  it('keeps the request id of the response in the request log and the audit rows', async () => {
    const res = await fetch(pair.fast.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${await pair.fast.tokenFor('dr-north-1')}` },
      body: JSON.stringify({ query: BY_ID, variables: { id: north().id } }),
    });
    expect(res.status).toBe(200);
    const requestId = res.headers.get('x-request-id');
    expect(pair.fast.lastRequestLog()?.requestId).toBe(requestId);
    expect((await pair.fast.auditRows('request_id = $1', [requestId])).length).toBeGreaterThan(0);
  });

  it('Accept: graphql-response+json, application/json, */*, and one it cannot answer', async () => {
    const doctor = await pair.fast.tokenFor('dr-north-1');
    for (const accept of ['application/graphql-response+json', 'application/json', '*/*', 'text/html']) {
      await same(pair, { query: BY_ID, variables: { id: north().id } }, doctor, { accept });
      await same(pair, { query: '{ patient(id: 1 }' }, doctor, { accept });
      await same(pair, { query: BY_ID, variables: { id: north().id } }, null, { accept });
    }
  });

  it('bad variables, an unknown operation, a syntax error, an invalid field', async () => {
    const doctor = await pair.fast.tokenFor('dr-north-1');
    await same(pair, { query: BY_ID, variables: { id: { no: 1 } } }, doctor);
    await same(pair, { query: BY_ID, variables: {} }, doctor);
    await same(pair, { query: BY_ID, variables: { id: north().id }, operationName: 'Nope' }, doctor);
    await same(pair, { query: 'query { patient(id: "x") { id ' }, doctor);
    await same(pair, { query: '{ nothingHere }' }, doctor);
  });

  it('no token, a bad token, an expired token', async () => {
    const body = { query: BY_ID, variables: { id: north().id } };
    expect((await same(pair, body, null)).status).toBe(401);
    await same(pair, body, 'not-a-token');
    const expired = await pair.fast.issuer.token({ sub: 'dr-north-1', roles: ['physician'], clinics: ['c-north'], mfa: true, ttlSeconds: -120 });
    expect((await same(pair, body, expired)).status).toBe(401);
  });

  it('introspection refused, a mutation refused, bodies the fast path leaves to yoga', async () => {
    const nurse = await pair.fast.tokenFor('rn-north-1');
    await same(pair, { query: '{ __schema { types { name } } }' }, nurse);
    await same(pair, { query: 'mutation ($input: CreatePatientInput!) { createPatient(input: $input) { id } }', variables: { input: { clinicId: 'c-south' } } }, nurse);
    await same(pair, '{"query": "{ me { subject } }"', nurse);
    await same(pair, [{ query: '{ me { subject } }' }], nurse);
    await same(pair, { query: '{ me { subject } }', variables: null, extra: 1 }, nurse);
    await same(pair, { query: 'x'.repeat(200_000) }, nurse);
    await same(pair, { query: '{ me { subject } }' }, nurse, { origin: 'https://elsewhere.example' });
  });

  it('a request over the principal limits (429)', async () => {
    const fast = await startTestGateway({ replicaOf: pair.fast, gatewayOptions: { principals: { concurrency: 4, queue: 32, ratePerSecond: 0.001, burst: 1 } } });
    const yoga = await startTestGateway({ replicaOf: pair.fast, gatewayOptions: { fastPath: false, principals: { concurrency: 4, queue: 32, ratePerSecond: 0.001, burst: 1 } } });
    try {
      const token = await pair.fast.tokenFor('dr-north-1');
      const body = JSON.stringify({ query: '{ me { subject } }' });
      await ask(fast.url, body, { authorization: `Bearer ${token}` });
      await ask(yoga.url, body, { authorization: `Bearer ${token}` });
      const limited = await same({ fast, yoga }, body, token);
      expect(limited.status).toBe(429);
    } finally {
      await yoga.close();
      await fast.close();
    }
  });

  it('audit unavailable (503)', async () => {
    const TRIGGER = 'fast_path_refuse_audit';
    await pair.fast.admin(async (c) => {
      await c.query(`CREATE OR REPLACE FUNCTION public.${TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$`);
      await c.query(`CREATE TRIGGER ${TRIGGER} BEFORE INSERT ON phigate.audit_records FOR EACH ROW EXECUTE FUNCTION public.${TRIGGER}()`);
    });
    try {
      const r = await same(pair, { query: BY_ID, variables: { id: north().id } }, await pair.fast.tokenFor('dr-north-1'));
      expect(JSON.parse(r.text).errors.map((e: { extensions: { code: string } }) => e.extensions.code)).toEqual(['AUDIT_UNAVAILABLE']);
    } finally {
      await pair.fast.admin(async (c) => {
        await c.query(`DROP TRIGGER IF EXISTS ${TRIGGER} ON phigate.audit_records`);
        await c.query(`DROP FUNCTION IF EXISTS public.${TRIGGER}()`);
      });
    }
  });
});

describe('the fast path with trusted documents answers as yoga does', () => {
  let pair: { fast: TestGateway; yoga: TestGateway };
  let trusted: Record<string, string>;
  beforeAll(async () => {
    trusted = JSON.parse(await readFile(TRUSTED_DOCUMENTS_FILE, 'utf8'));
    const trustedDocuments = await loadTrustedDocuments(TRUSTED_DOCUMENTS_FILE);
    const fast = await startTestGateway({ patients: 8, gatewayOptions: { trustedDocuments } });
    pair = { fast, yoga: await startTestGateway({ replicaOf: fast, gatewayOptions: { trustedDocuments, fastPath: false } }) };
  });
  afterAll(async () => {
    await pair?.yoga.close();
    await pair?.fast.close();
  });

  it('a trusted document by documentId and by persisted-query hash, and an untrusted query', async () => {
    const token = await pair.fast.tokenFor('reg-north');
    const me = Object.entries(trusted).find(([, text]) => text.startsWith('query Me'))![0];
    expect((await same(pair, { documentId: me }, token)).status).toBe(200);
    await same(pair, { extensions: { persistedQuery: { version: 1, sha256Hash: me } } }, token);
    await same(pair, { query: '{ me { subject } }' }, token);
    await same(pair, { documentId: 'f'.repeat(64) }, token);
  });
});
