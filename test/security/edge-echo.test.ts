import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { postJson, send } from './http.ts';

// Echoes and request ids at the edge (issue 11, item 8, the edge part).
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const SECRET_SSN = '123-45-6789';
const SECRET_TOKEN = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzZWNyZXQifQ.c2VjcmV0LXNpZ25hdHVyZQ';

const MALFORMED: Array<[string, string]> = [
  ['a body cut off inside a variable', `{"query":"query($s: String!) { patientBySsn(ssn: $s) { id } }","variables":{"s":"${SECRET_SSN}"`],
  ['a bare SSN as a value', `{"query": ${SECRET_SSN}}`],
  ['plain text', `not json ${SECRET_SSN}`],
  ['a token pasted into the body', `Bearer ${SECRET_TOKEN}`],
  ['a trailing comma after a token value', `{"token":"${SECRET_TOKEN}",}`],
  ['a single quote string', `{'query': '${SECRET_SSN}'}`],
  ['an empty body', ''],
];

describe.each([
  ['production mode', 'production'],
  ['development mode', 'development'],
])('a malformed JSON body (%s)', (_mode, nodeEnv) => {
  let gw: TestGateway;
  beforeAll(async () => {
    // yoga reads NODE_ENV when it is created: development is where it shows the most.
    const before = process.env.NODE_ENV;
    process.env.NODE_ENV = nodeEnv;
    try {
      gw = await startTestGateway();
    } finally {
      process.env.NODE_ENV = before;
    }
  });
  afterAll(async () => {
    await gw.close();
  });

  it.each(MALFORMED)('%s: 400 BAD_USER_INPUT, nothing of it echoed, nor logged', async (_what, body) => {
    const token = await gw.tokenFor('reg-north');
    const res = await postJson(gw, body, token);
    expect(res.status).toBe(400);
    expect(res.json?.errors).toEqual([{ message: 'The request body is not valid JSON.', extensions: { code: 'BAD_USER_INPUT', reason: 'malformed_json' } }]);
    expect(res.text).not.toContain('originalError');
    for (const secret of [SECRET_SSN, SECRET_TOKEN, 'not json', 'Bearer']) expect(res.text).not.toContain(secret);
    expect(JSON.stringify(gw.logs)).not.toContain(SECRET_SSN);
  });

  it('a chunked malformed body is answered the same', async () => {
    const body = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode(`{"variables":{"s":"${SECRET_SSN}"`));
        c.close();
      },
    });
    const res = await send(gw.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body, duplex: 'half' });
    expect(res.status).toBe(400);
    expect(res.text).not.toContain(SECRET_SSN);
  });
});

describe('X-Request-Id', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway();
  });
  afterAll(async () => {
    await gw.close();
  });

  const CLIENT_ID = 'client-run-7a1f22';
  const base = () => gw.url.replace('/graphql', '');

  it.each<[string, () => Promise<{ status: number; headers: Headers }>, number]>([
    ['a 200 read', async () => postJson(gw, { query: '{ me { subject } }' }, await gw.tokenFor('reg-north'), { 'x-request-id': CLIENT_ID }), 200],
    ['a 401', async () => postJson(gw, { query: '{ me { subject } }' }, null, { 'x-request-id': CLIENT_ID }), 401],
    ['a 400 over a query limit', async () => postJson(gw, { query: `{ ${Array.from({ length: 20 }, (_, i) => `a${i}: me { subject }`).join(' ')} }` }, null, { 'x-request-id': CLIENT_ID }), 400],
    ['a 400 malformed body', async () => postJson(gw, '{', null, { 'x-request-id': CLIENT_ID }), 400],
    ['a 413', async () => postJson(gw, { query: 'x'.repeat(200_000) }, null, { 'x-request-id': CLIENT_ID }), 413],
    ['a 405', () => send(gw.url, { headers: { 'x-request-id': CLIENT_ID } }), 405],
    ['a 415', () => send(gw.url, { method: 'POST', headers: { 'content-type': 'text/plain', 'x-request-id': CLIENT_ID }, body: '{}' }), 415],
    ['/healthz', () => send(`${base()}/healthz`, { headers: { 'x-request-id': CLIENT_ID } }), 200],
    ['/readyz', () => send(`${base()}/readyz`, { headers: { 'x-request-id': CLIENT_ID } }), 200],
    ['/metrics', () => send(`${base()}/metrics`, { headers: { 'x-request-id': CLIENT_ID } }), 200],
    ['an unknown path', () => send(`${base()}/nowhere`, { headers: { 'x-request-id': CLIENT_ID } }), 404],
  ])('%s carries the gateway\'s own id, never the client\'s', async (_what, request, status) => {
    const res = await request();
    expect(res.status).toBe(status);
    expect(res.headers.get('x-request-id')).toMatch(UUID);
  });

  it("a client id shaped like one of ours is still only the client's", async () => {
    const forged = 'f47ac10b-58cc-4372-a567-0e02b2c3d479';
    const res = await postJson(gw, { query: '{ me { subject } }' }, await gw.tokenFor('reg-north'), { 'x-request-id': forged });
    expect(res.headers.get('x-request-id')).not.toBe(forged);
    expect(gw.lastRequestLog()).toMatchObject({ requestId: res.headers.get('x-request-id'), clientRequestId: forged });
  });

  it('ids differ per request', async () => {
    const ids = await Promise.all(Array.from({ length: 5 }, async () => (await send(`${base()}/healthz`)).headers.get('x-request-id')));
    expect(new Set(ids).size).toBe(5);
  });

  it("is the id of the request's audit rows and log lines; the client's id is kept beside it in the logs only", async () => {
    const patient = gw.data.patients.find((p) => p.clinicId === 'c-north')!;
    const res = await postJson(gw, { query: 'query($id: ID!) { patient(id: $id) { id givenName } }', variables: { id: patient.id } }, await gw.tokenFor('reg-north'), { 'x-request-id': CLIENT_ID });
    const id = res.headers.get('x-request-id')!;
    expect(id).not.toBe(CLIENT_ID);
    const rows = await gw.auditRows('request_id = $1', [id]);
    expect(rows.length).toBeGreaterThan(0);
    expect(await gw.auditRows('request_id = $1', [CLIENT_ID])).toEqual([]);
    expect(gw.lastRequestLog()).toMatchObject({ requestId: id, clientRequestId: CLIENT_ID });
  });

  it.each([
    ['an SSN', SECRET_SSN],
    ['two ids in one', 'req-12345678, req-87654321'],
    ['a header injection', 'abc\tdefgh;x-evil=1'],
    ['a SQL fragment', "req-1234'); DROP TABLE x;--"],
    ['200 characters', `r${'a'.repeat(199)}`],
  ])('a client id that is %s is dropped: not in audit rows, not in logs', async (_what, clientId) => {
    const res = await postJson(gw, { query: '{ me { subject } }' }, await gw.tokenFor('reg-north'), { 'x-request-id': clientId });
    expect(res.status).toBe(200);
    const line = gw.lastRequestLog();
    expect(line?.requestId).toBe(res.headers.get('x-request-id'));
    expect(line?.clientRequestId).toBeUndefined();
    expect(JSON.stringify(gw.logs)).not.toContain(clientId);
  });
});
