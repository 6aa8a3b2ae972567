import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';

// Fail closed: when the database, keys or identity are in doubt, the answer is an error, never
// data; and nothing the gateway says or logs carries PHI, tokens, keys or SQL.

let gw: TestGateway;
const tokens: string[] = [];
beforeAll(async () => {
  gw = await startTestGateway({ patients: 15 });
});
afterAll(async () => gw?.close());

const token = async (sub: string, over?: { mfa?: boolean }) => {
  const t = await gw.tokenFor(sub, over);
  tokens.push(t);
  return t;
};

const ALL = `{ patients(first: 50) { edges { node { id mrn ssn givenName familyName birthDate phone email address
  encounters { reason diagnosisCodes notes } } } } }`;

function assertNoPhi(text: string) {
  for (const p of gw.data.patients) {
    for (const v of [p.ssn, p.ssn.replace(/-/g, ''), p.mrn, p.email, p.address, p.phone]) expect(text).not.toContain(v);
    for (const e of p.encounters) expect(text).not.toContain(e.notes);
  }
}

describe('fail closed', () => {
  it('a database error mid-request answers INTERNAL with no SQL, no table names and no data', async () => {
    await gw.admin((c) => c.query('REVOKE SELECT ON phigate.encounters FROM phigate_app'));
    try {
      const r = await gw.gql(await token('reg-north'), ALL);
      expect(r.body.data ?? null).toBeNull();
      expect(r.body.errors?.map((e) => e.extensions?.code)).toContain('INTERNAL');
      expect(r.text).not.toMatch(/permission denied|phigate\.|SELECT|encounters\b.*table|stack|at .*\.ts/i);
      assertNoPhi(r.text);
      // Masked without the request (yoga's maskError), logged with it: its id, who and from where.
      const lines = gw.logs.filter((l) => l.msg === 'unexpected error' && l.requestId === r.headers.get('x-request-id'));
      expect(lines.length).toBeGreaterThan(0);
      for (const l of lines) expect(l).toMatchObject({ subject: 'reg-north', clientAddr: '127.0.0.1', err: { code: '42501' } });
      assertNoPhi(JSON.stringify(lines));
    } finally {
      await gw.admin((c) => c.query('GRANT SELECT ON phigate.encounters TO phigate_app'));
    }
  });

  it('a data key that cannot be unwrapped answers KEY_UNAVAILABLE for its fields and decrypts nothing', async () => {
    // The gateway's keyring is cold for c-east: corrupt that clinic's wrapped key before first use.
    await gw.admin((c) => c.query(`UPDATE phigate.keyring SET wrapped = decode('00', 'hex') || wrapped WHERE purpose = 'data' AND scope = 'c-east'`));
    const r = await gw.gql(await token('reg-east'), '{ patients(first: 50) { edges { node { id ssn givenName } } } }');
    const codes = new Set(r.body.errors?.map((e) => e.extensions?.code));
    expect(codes).toEqual(new Set(['KEY_UNAVAILABLE']));
    for (const edge of r.body.data!.patients.edges) {
      expect(edge.node.ssn).toBeNull();
      expect(edge.node.givenName).toBeNull();
    }
    assertNoPhi(r.text);
  });

  it('an unknown or malformed credential is refused before any database work', async () => {
    const before = gw.logs.filter((l) => l.msg === 'request').length;
    // 9,000 characters: over the verifier's 8 KiB token limit, under Node's 16 KiB header limit.
    for (const auth of ['Bearer', 'Bearer a.b.c', 'Basic dXNlcjpwYXNz', `Bearer ${'x'.repeat(9_000)}`]) {
      const res = await fetch(gw.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: auth },
        body: JSON.stringify({ query: ALL }),
      });
      expect(res.status).toBe(401);
      const body = await res.json();
      expect(body.errors[0].extensions.code).toBe('UNAUTHENTICATED');
      expect(body.data ?? null).toBeNull();
    }
    // No request reached execution (each executed request logs one summary line).
    expect(gw.logs.filter((l) => l.msg === 'request').length).toBe(before);
  });

  it('logs of everything above carry no PHI, no token and no SQL text', async () => {
    await gw.gql(await token('dr-north-1'), ALL);
    await gw.gql(await token('dr-north-1', { mfa: false }), ALL);
    const text = gw.logs.map((l) => JSON.stringify(l)).join('\n');
    expect(gw.logs.filter((l) => l.msg === 'request').length).toBeGreaterThan(0);
    assertNoPhi(text);
    for (const t of tokens) expect(text).not.toContain(t.split('.')[2]);
    expect(text).not.toMatch(/SELECT|INSERT|phigate\.patients/);
  });
});
