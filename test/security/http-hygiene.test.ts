import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGraphiqlRoute, GRAPHIQL_CSP } from '../../src/http/graphiql.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { codes, postJson, reasons, send, watch } from './http.ts';

// HTTP hygiene: GraphQL is POST + application/json only (CSRF: nothing a form or a no-cors fetch
// can send reaches the executor), CORS answers only listed origins and never with credentials,
// and every response carries the security headers.

const APP = 'https://app.example.org';
let gw: TestGateway; // production-like: no CORS, no GraphiQL
let cors: TestGateway; // two allowed origins
let dev: TestGateway; // development: GraphiQL, CORS `*`
beforeAll(async () => {
  [gw, cors, dev] = await Promise.all([
    startTestGateway({ patients: 4 }),
    startTestGateway({ patients: 2, gatewayOptions: { corsOrigins: [APP, 'https://admin.example.org'] } }),
    createGraphiqlRoute({ endpoint: '/graphql', headers: async () => ({}), defaultQuery: '{ me { subject } }' }).then((graphiql) =>
      startTestGateway({ patients: 2, gatewayOptions: { routes: [graphiql], corsOrigins: ['*'] } }),
    ),
  ]);
});
afterAll(async () => Promise.all([gw?.close(), cors?.close(), dev?.close()]));

function expectSecurityHeaders(h: Headers, csp = "default-src 'none'; frame-ancestors 'none'") {
  expect(h.get('strict-transport-security')).toMatch(/^max-age=\d{8,}; includeSubDomains$/);
  expect(h.get('x-content-type-options')).toBe('nosniff');
  expect(h.get('referrer-policy')).toBe('no-referrer');
  expect(h.get('cache-control')).toBe('no-store');
  expect(h.get('content-security-policy')).toBe(csp);
  expect(h.get('x-frame-options')).toBe('DENY');
  expect(h.get('x-powered-by')).toBeNull();
  expect(h.get('server')).toBeNull();
}

const preflight = (target: TestGateway, origin: string) =>
  send(target.url, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
  });

describe('methods and content types (CSRF)', () => {
  it('a query over GET is refused with 405 and Allow: POST, and not executed', async () => {
    const seen = await watch(gw);
    const token = await gw.tokenFor('reg-north');
    const r = await send(`${gw.url}?query=${encodeURIComponent('{ patients(first: 5) { edges { node { ssn } } } }')}`, {
      headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
    });
    expect(r.status).toBe(405);
    expect(r.headers.get('allow')).toBe('POST');
    expect(reasons(r)).toEqual(['method_not_allowed']);
    expect(r.json?.data ?? null).toBeNull();
    await seen.expectUntouched();
  });

  it('a mutation over GET (a link or an <img> on another site) is refused with 405', async () => {
    const seen = await watch(gw);
    const token = await gw.tokenFor('reg-north');
    const mutation = 'mutation { createPatient(input: { clinicId: "c-north", mrn: "CSRF-1" }) { id } }';
    const r = await send(`${gw.url}?query=${encodeURIComponent(mutation)}`, { headers: { authorization: `Bearer ${token}` } });
    expect(r.status).toBe(405);
    await seen.expectUntouched();
  });

  it('PUT and DELETE are refused with 405', async () => {
    for (const method of ['PUT', 'DELETE']) {
      const r = await send(gw.url, { method, headers: { 'content-type': 'application/json' }, body: '{"query":"{ me { subject } }"}' });
      expect(r.status, method).toBe(405);
    }
  });

  it('a text/plain POST (a CORS "simple request" any page can send) is refused with 415, and not executed', async () => {
    const seen = await watch(gw);
    const token = await gw.tokenFor('reg-north');
    const r = await send(gw.url, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', authorization: `Bearer ${token}` },
      body: JSON.stringify({ query: '{ patients(first: 5) { edges { node { ssn } } } }' }),
    });
    expect(r.status).toBe(415);
    expect(reasons(r)).toEqual(['unsupported_media_type']);
    expect(r.json?.data ?? null).toBeNull();
    await seen.expectUntouched();
  });

  it('an HTML form POST (application/x-www-form-urlencoded) is refused with 415', async () => {
    const r = await send(gw.url, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `query=${encodeURIComponent('{ me { subject } }')}`,
    });
    expect(r.status).toBe(415);
  });

  it('a multipart/form-data POST (forms, file uploads) is refused with 415', async () => {
    const form = new FormData();
    form.set('operations', JSON.stringify({ query: '{ me { subject } }' }));
    form.set('map', '{}');
    expect((await send(gw.url, { method: 'POST', body: form })).status).toBe(415);
  });

  it('the other GraphQL media types yoga would parse (application/graphql, application/graphql+json) are refused with 415', async () => {
    for (const type of ['application/graphql', 'application/graphql+json']) {
      const body = type === 'application/graphql' ? '{ me { subject } }' : '{"query":"{ me { subject } }"}';
      expect((await send(gw.url, { method: 'POST', headers: { 'content-type': type }, body })).status, type).toBe(415);
    }
  });

  it('application/json with a charset parameter is accepted', async () => {
    const r = await postJson(gw, { query: '{ me { subject } }' }, await gw.tokenFor('reg-north'), { 'content-type': 'application/json; charset=utf-8' });
    expect(r.json).toEqual({ data: { me: { subject: 'reg-north' } } });
  });
});

describe('CORS', () => {
  it('by default no response carries any CORS header, whatever the Origin', async () => {
    const pre = await preflight(gw, APP);
    const post = await postJson(gw, { query: '{ me { subject } }' }, await gw.tokenFor('reg-north'), { origin: APP });
    for (const r of [pre, post]) {
      for (const name of r.headers.keys()) expect(name).not.toMatch(/^access-control-/);
    }
    expect(post.status).toBe(200);
  });

  it('a preflight from an origin not on the list gets no Access-Control-Allow-Origin', async () => {
    for (const origin of ['https://evil.example.com', 'null', `${APP}.evil.example.com`, 'http://app.example.org']) {
      const r = await preflight(cors, origin);
      expect(r.headers.get('access-control-allow-origin'), origin).toBeNull();
      expect(r.headers.get('access-control-allow-credentials')).toBeNull();
    }
  });

  it('a preflight from an allowed origin gets that origin, POST and the headers it needs, and no credentials', async () => {
    const r = await preflight(cors, APP);
    expect(r.status).toBe(204);
    expect(r.headers.get('access-control-allow-origin')).toBe(APP);
    expect(r.headers.get('access-control-allow-methods')).toBe('POST');
    expect(r.headers.get('access-control-allow-headers')).toMatch(/authorization/);
    expect(r.headers.get('access-control-allow-credentials')).toBeNull();
    expect(r.headers.get('vary')).toMatch(/Origin/);
  });

  it('a POST from an allowed origin is answered with that origin, one from another origin without any', async () => {
    const token = await cors.tokenFor('reg-north');
    const allowed = await postJson(cors, { query: '{ me { subject } }' }, token, { origin: APP });
    expect(allowed.headers.get('access-control-allow-origin')).toBe(APP);
    const other = await postJson(cors, { query: '{ me { subject } }' }, token, { origin: 'https://evil.example.com' });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    expect(other.headers.get('vary')).toMatch(/Origin/);
  });

  it('`*` (development only) answers `*` and never allows credentials', async () => {
    const pre = await preflight(dev, 'https://anything.example.net');
    expect(pre.headers.get('access-control-allow-origin')).toBe('*');
    expect(pre.headers.get('access-control-allow-credentials')).toBeNull();
  });
});

describe('security headers', () => {
  it('are on a 200 answer', async () => {
    const r = await postJson(gw, { query: '{ me { subject } }' }, await gw.tokenFor('reg-north'));
    expect(r.status).toBe(200);
    expectSecurityHeaders(r.headers);
  });

  it('are on a 401, which also says how to authenticate (WWW-Authenticate)', async () => {
    const r = await postJson(gw, { query: '{ me { subject } }' }, null);
    expect(r.status).toBe(401);
    expect(codes(r)).toEqual(['UNAUTHENTICATED']);
    expect(r.headers.get('www-authenticate')).toMatch(/^Bearer realm="phigate"/);
    expectSecurityHeaders(r.headers);
  });

  it('are on a 400 (over a query limit, and a validation error)', async () => {
    const token = await gw.tokenFor('reg-north');
    const tooDeep = await postJson(gw, { query: '{ a { b { c { d { e { f { g { h { i } } } } } } } } }' }, token);
    expect(tooDeep.status).toBe(400);
    expectSecurityHeaders(tooDeep.headers);
    const invalid = await postJson(gw, { query: '{ nope }' }, token, { accept: 'application/graphql-response+json' });
    expect(invalid.status).toBe(400);
    expectSecurityHeaders(invalid.headers);
  });

  it('are on 405, 413 and 415 refusals and on a preflight', async () => {
    const r405 = await send(`${gw.url}?query=${encodeURIComponent('{ me { subject } }')}`);
    const r413 = await postJson(gw, { query: `{ me { subject } } # ${'x'.repeat(200_000)}` }, null);
    const r415 = await send(gw.url, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' });
    const r204 = await preflight(cors, APP);
    expect([r405.status, r413.status, r415.status, r204.status]).toEqual([405, 413, 415, 204]);
    for (const r of [r405, r413, r415, r204]) expectSecurityHeaders(r.headers);
  });

  it('are on routes outside GraphQL (/healthz, /readyz, an unknown path)', async () => {
    const base = gw.url.replace(/\/graphql$/, '');
    for (const p of ['/healthz', '/readyz', '/nothing-here']) {
      const r = await send(`${base}${p}`);
      expect(r.status, p).toBe(p === '/nothing-here' ? 404 : 200);
      expectSecurityHeaders(r.headers);
    }
  });

  it('GraphiQL in development gets a CSP that allows only this origin (no inline script), and the other headers', async () => {
    const r = await send(dev.url, { headers: { accept: 'text/html' } });
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = r.headers.get('content-security-policy')!;
    expect(csp).toBe(GRAPHIQL_CSP);
    expect(csp).toMatch(/script-src 'self'(;|$)/);
    expect(csp).toMatch(/connect-src 'self'(;|$)/);
    expect(csp).toMatch(/frame-ancestors 'none'/);
    expect(csp).not.toMatch(/https?:|\*/);
    expectSecurityHeaders(r.headers, csp);
  });

  it('there is no GraphiQL outside development: a browser GET is refused with 405', async () => {
    const r = await send(gw.url, { headers: { accept: 'text/html' } });
    expect(r.status).toBe(405);
    expect(r.text).not.toMatch(/<html/i);
    expectSecurityHeaders(r.headers);
  });
});
