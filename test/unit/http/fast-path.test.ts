import type http from 'node:http';
import { describe, expect, it } from 'vitest';
import { paramsOf, qualifies } from '../../../src/http/fast-path.ts';

// Which requests the fast path takes; everything else goes to yoga, whose answers the parity test
// (test/integration/graphql/fast-path.test.ts) compares with the fast path's.

const request = (over: { method?: string; url?: string; headers?: Record<string, string> } = {}) =>
  ({
    method: over.method ?? 'POST',
    url: over.url ?? '/graphql',
    headers: over.headers ?? { 'content-type': 'application/json', 'content-length': '40' },
  }) as unknown as http.IncomingMessage;

describe('qualifies', () => {
  it('takes a JSON POST to /graphql with a length within the limit', () => {
    expect(qualifies(request(), 100)).toBe(true);
    expect(qualifies(request({ headers: { 'content-type': 'application/json; charset=utf-8', 'content-length': '100' } }), 100)).toBe(true);
    expect(qualifies(request({ headers: { 'content-type': 'Application/JSON;charset="UTF-8"', 'content-length': '1' } }), 100)).toBe(true);
  });

  it('leaves everything else to yoga', () => {
    expect(qualifies(request({ method: 'GET' }), 100)).toBe(false);
    expect(qualifies(request({ method: 'OPTIONS' }), 100)).toBe(false);
    expect(qualifies(request({ url: '/graphql?query={me{subject}}' }), 100)).toBe(false);
    expect(qualifies(request({ url: '/other' }), 100)).toBe(false);
    for (const type of ['text/plain', 'application/json; charset=latin1', 'application/graphql', 'multipart/form-data', 'application/jsonx']) {
      expect(qualifies(request({ headers: { 'content-type': type, 'content-length': '10' } }), 100), type).toBe(false);
    }
    expect(qualifies(request({ headers: { 'content-type': 'application/json' } }), 100)).toBe(false);
    expect(qualifies(request({ headers: { 'content-type': 'application/json', 'content-length': '0' } }), 100)).toBe(false);
    expect(qualifies(request({ headers: { 'content-type': 'application/json', 'content-length': '101' } }), 100)).toBe(false);
    expect(qualifies(request({ headers: { 'content-type': 'application/json', 'content-length': '1e2' } }), 1000)).toBe(false);
    expect(qualifies(request({ headers: { 'content-type': 'application/json', 'content-length': '10', 'transfer-encoding': 'chunked' } }), 100)).toBe(false);
  });
});

describe('paramsOf', () => {
  const of = (body: unknown, documentIds = false) => paramsOf(Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)), documentIds);

  it('reads one operation of query, variables, operationName and extensions', () => {
    const params = { query: '{ me { subject } }', variables: { id: '1' }, operationName: 'Me', extensions: { a: 1 } };
    expect(of(params)).toEqual(params);
    expect(of({ documentId: 'abc' }, true)).toEqual({ documentId: 'abc' });
    expect(of({ extensions: { persistedQuery: { sha256Hash: 'abc' } } }, true)).not.toBeNull();
  });

  it('gives null for whatever yoga should answer itself', () => {
    for (const body of [
      '{"query": "{ me { subject } }"',
      '\uFEFF{"query": "x"}',
      [{ query: 'x' }],
      'null',
      '"x"',
      {},
      { query: 1 },
      { query: 'x', variables: null },
      { query: 'x', variables: [] },
      { query: 'x', operationName: null },
      { query: 'x', extensions: 'x' },
      { query: 'x', extra: 1 },
      { query: 'x', documentId: 'abc' },
      { documentId: 'abc' },
      '{"query": "x", "__proto__": {"polluted": true}}',
    ]) {
      expect(of(body), JSON.stringify(body)).toBeNull();
    }
  });
});
