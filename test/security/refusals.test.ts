import { UnsecuredJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintDevToken } from '../../src/auth/dev-token.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { startTestIssuer, type TestIssuer } from '../support/oidc-issuer.ts';
import { postJson } from './http.ts';

// Every refusal leaves a trace (issue 11, item 5): an audit event (`refused`, the reason code, the
// claimed subject, the client address, never the token) and a log line. Refusal events are
// written after the answer, so the tests wait for them.
const QUERY = '{ patients(first: 2) { edges { node { id givenName } } } }';
const CLAIMED = 'claimed-sub-91d2';

/** Reads until `done` holds; the bound only ends a wait that will never be met. */
async function eventually<T>(read: () => Promise<T>, done: (value: T) => boolean, ms = 15_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > until) return value;
    await new Promise((r) => setTimeout(r, 50));
  }
}

const refusedRows = (gw: TestGateway, requestId: string) =>
  eventually(
    () => gw.auditRows('request_id = $1', [requestId]),
    (rows) => rows.length > 0,
  );

describe('refused authentications', () => {
  let gw: TestGateway;
  let other: TestIssuer;
  beforeAll(async () => {
    // Every case here expects a row of its own: no per-second budget may fold them into a count
    // (that folding is tested with a flood below).
    [gw, other] = await Promise.all([startTestGateway({ gatewayOptions: { refusals: { auditedPerSecond: 1_000, alertPerMinute: 1_000 } } }), startTestIssuer()]);
  });
  afterAll(async () => {
    await Promise.all([gw.close(), other.close()]);
  });

  const mint = (over: Partial<Parameters<typeof mintDevToken>[1]> = {}, keys = gw.issuer.keys) =>
    mintDevToken(keys, { issuer: gw.issuer.issuer, audience: 'phigate', subject: CLAIMED, roles: ['physician'], clinics: ['c-north'], mfa: true, ...over });

  const cases: Array<[string, () => Promise<string | null>, string, string]> = [
    ['a bad signature', async () => `${(await mint()).slice(0, -6)}AAAAAA`, 'bad_signature', CLAIMED],
    ['alg: none', async () => new UnsecuredJWT({ sub: CLAIMED, roles: ['physician'], clinics: ['c-north'] }).setIssuer(gw.issuer.issuer).setAudience('phigate').setIssuedAt().setExpirationTime('5m').encode(), 'bad_algorithm', CLAIMED],
    ['a wrong issuer', () => mint({ issuer: other.issuer }), 'bad_issuer', CLAIMED],
    ['a wrong audience', () => mint({ audience: 'another-api' }), 'bad_audience', CLAIMED],
    ['another issuer signing in our name', () => mint({}, other.keys), 'unknown_key', CLAIMED],
    ['an expired token', () => mint({ ttlSeconds: -120, authAgeSeconds: 300 }), 'token_expired', CLAIMED],
    ['a lifetime of a year', () => mint({ ttlSeconds: 365 * 86_400 }), 'lifetime_too_long', CLAIMED],
    ['a sign-in years ago', () => mint({ authAgeSeconds: 3 * 365 * 86_400 }), 'auth_too_old', CLAIMED],
    ['a malformed token', async () => 'not-a-jwt', 'malformed_token', 'anonymous'],
    ['no credentials', async () => null, 'missing_credentials', 'anonymous'],
  ];

  it.each(cases)('%s: 401, one `refused` event and a log line, never the token', async (_what, token, reason, actor) => {
    const credential = await token();
    const res = await postJson(gw, { query: QUERY }, credential);
    expect(res.status).toBe(401);
    const requestId = res.headers.get('x-request-id') ?? '';
    const rows = await refusedRows(gw, requestId);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ action: 'refused', detail: reason, actor, actor_kind: 'anonymous', client_addr: '127.0.0.1', type_name: 'Request', patient_id: null });
    const lines = gw.logs.filter((l) => l.requestId === requestId && l.msg === 'request refused');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ refusal: reason, code: 'UNAUTHENTICATED', clientAddr: '127.0.0.1', claimedSubject: actor });
    if (credential !== null) {
      const signature = credential.split('.')[2] ?? credential;
      for (const text of [JSON.stringify(rows), JSON.stringify(gw.logs)]) {
        expect(text).not.toContain(credential);
        if (signature.length >= 16) expect(text).not.toContain(signature);
      }
    }
  });

  it('a claimed subject that is not plain text is recorded as anonymous', async () => {
    const res = await postJson(gw, { query: QUERY }, `${(await mint({ subject: 'line\nbreak 123-45-6789' })).slice(0, -6)}AAAAAA`);
    const rows = await refusedRows(gw, res.headers.get('x-request-id') ?? '');
    expect(rows[0]).toMatchObject({ actor: 'anonymous', detail: 'bad_signature' });
    expect(JSON.stringify(rows)).not.toContain('123-45-6789');
  });
});

describe('refusals after authentication', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    // The shares' clock stands still: each principal has its burst of 3 and no refill, so the rate
    // case is limited however slowly a loaded machine sends its 5 requests (at 1 a second refilled,
    // 5 that took 2 s or more were never limited).
    gw = await startTestGateway({ gatewayOptions: { principals: { concurrency: 2, queue: 8, ratePerSecond: 1, burst: 3, now: () => 0 } } });
  });
  afterAll(async () => {
    await gw.close();
  });

  /**
   * A principal of c-north with `role` that no other test uses: with the shares' clock stopped, the
   * burst a test spends never comes back, so a principal shared by tests would be limited by
   * whichever tests ran before it.
   */
  let principals = 0;
  const fresh = (role: string) => {
    const sub = `${role}-refusals-${++principals}`;
    return { sub, token: (over: { mfa?: boolean; roles?: string[] } = {}) => gw.tokenFor(sub, { roles: [role], clinics: ['c-north'], ...over }) };
  };

  it('MFA_REQUIRED is a `refused` event of the user, with the field refused', async () => {
    const physician = fresh('physician');
    const res = await postJson(gw, { query: QUERY }, await physician.token({ mfa: false }));
    expect(res.json?.errors?.[0]?.extensions?.code).toBe('MFA_REQUIRED');
    const rows = await refusedRows(gw, res.headers.get('x-request-id') ?? '');
    expect(rows).toEqual([expect.objectContaining({ action: 'refused', detail: 'mfa_required', actor: physician.sub, actor_kind: 'user', client_addr: '127.0.0.1', type_name: 'Query', field: 'patients' })]);
    expect(gw.logs.some((l) => l.msg === 'request refused' && l.refusal === 'mfa_required' && l.subject === physician.sub)).toBe(true);
  });

  it('FORBIDDEN is one; a mutation refused is one of type Mutation', async () => {
    const [admin, physician] = [fresh('clinic_admin'), fresh('physician')];
    const read = await postJson(gw, { query: QUERY }, await admin.token({ roles: ['visitor'] }));
    expect(read.json?.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect(await refusedRows(gw, read.headers.get('x-request-id') ?? '')).toEqual([
      expect.objectContaining({ action: 'refused', detail: 'forbidden', actor: admin.sub, actor_kind: 'user', field: 'patients' }),
    ]);
    const patient = gw.data.patients.find((p) => p.clinicId === 'c-north')!;
    const write = await postJson(gw, { query: 'mutation($id: ID!) { setCareTeam(patientId: $id, subjects: ["x"]) { id } }', variables: { id: patient.id } }, await physician.token());
    expect(write.json?.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect(await refusedRows(gw, write.headers.get('x-request-id') ?? '')).toEqual([
      expect.objectContaining({ action: 'refused', detail: 'forbidden', type_name: 'Mutation', field: 'setCareTeam' }),
    ]);
  });

  it('names the schema field refused, never the alias the client gave it (its own text, whatever it holds)', async () => {
    const alias = 'ssn123456789';
    const res = await postJson(gw, { query: `{ ${alias}: patients(first: 2) { edges { node { id } } } }` }, await fresh('physician').token({ mfa: false }));
    expect(res.json?.errors?.[0]?.extensions?.code).toBe('MFA_REQUIRED');
    const requestId = res.headers.get('x-request-id') ?? '';
    expect(await refusedRows(gw, requestId)).toEqual([expect.objectContaining({ action: 'refused', detail: 'mfa_required', field: 'patients' })]);
    const lines = gw.logs.filter((l) => l.requestId === requestId);
    expect(lines.some((l) => l.msg === 'request refused' && l.field === 'patients')).toBe(true);
    expect(JSON.stringify(lines)).not.toContain(alias);
  });

  it('a field denied in a write that rolls back is still a `denied` event: the write is undone, not its refusals', async () => {
    const patient = gw.data.patients.find((p) => p.clinicId === 'c-north' && p.encounters.length > 0)!;
    const stored = async () => (await gw.admin((c) => c.query('SELECT phone, updated_at FROM phigate.patients WHERE id = $1', [patient.id]))).rows[0];
    const before = await stored();
    // The registrar may update a patient but not see an encounter's notes; the second write fails, so both roll back.
    const query = `mutation($id: ID!) {
      a: updatePatient(id: $id, input: { phone: "+1 555 0192" }) { id encounters { notes } }
      b: updatePatient(id: "00000000-0000-4000-8000-000000000000", input: { phone: "+1 555 0193" }) { id }
    }`;
    const res = await postJson(gw, { query, variables: { id: patient.id } }, await gw.tokenFor('reg-north'));
    expect(res.json?.data ?? null).toBeNull();
    expect(res.json?.errors?.map((e) => e.extensions?.code)).toContain('FIELD_DENIED');
    expect(res.json?.errors?.some((e) => e.extensions?.code !== 'FIELD_DENIED')).toBe(true);
    expect(await stored()).toEqual(before);
    const rows = await refusedRows(gw, res.headers.get('x-request-id') ?? '');
    expect(rows.filter((r) => r.action === 'update')).toEqual([]);
    expect(rows.filter((r) => r.action === 'denied').map((r) => [r.type_name, r.field, r.patient_id, r.actor, r.role])).toEqual(
      patient.encounters.map(() => ['Encounter', 'notes', patient.id, 'reg-north', 'registrar']),
    );
  });

  it('RATE_LIMITED is one, with its reason', async () => {
    const token = await fresh('nurse').token();
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push(await postJson(gw, { query: '{ me { subject } }' }, token));
    // A burst of 3 and a stopped clock: the first three pass, the other two are limited.
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 429, 429]);
    const limited = answers.filter((a) => a.status === 429);
    expect(limited[0]!.headers.get('retry-after')).toMatch(/^[1-9]\d*$/);
    const rows = await refusedRows(gw, limited[0]!.headers.get('x-request-id') ?? '');
    expect(rows).toEqual([expect.objectContaining({ action: 'refused', detail: 'request_rate', actor_kind: 'user' })]);
  });

  it('request log lines carry the subject, the client address and the id of the response', async () => {
    const admin = fresh('clinic_admin');
    const res = await postJson(gw, { query: '{ me { subject } }' }, await admin.token());
    expect(res.status).toBe(200);
    expect(gw.lastRequestLog()).toMatchObject({ requestId: res.headers.get('x-request-id'), subject: admin.sub, clientAddr: '127.0.0.1' });
  });
});

describe('a flood of bad tokens', () => {
  // The trail counts per clock second and minute. On the system's clock a flood that a loaded
  // machine stretched over a minute's end met two minutes (two alerts, or none), and one stretched
  // past 8 s wrote more than a quarter of its refusals one by one; the trail's own clock is moved
  // here by a second after each burst, so the flood spans six seconds of one minute, however slow.
  const MINUTE = Date.UTC(2026, 0, 1, 9, 30);
  let clock = MINUTE;
  let gw: TestGateway;
  beforeAll(async () => {
    gw = await startTestGateway({ gatewayOptions: { refusals: { auditedPerSecond: 3, alertPerMinute: 40, now: () => clock } } });
  });
  afterAll(async () => {
    await gw.close();
  });

  it('is audited in full but not row by row: counted per source and second, with one alert', { timeout: 60_000 }, async () => {
    const token = `${(await gw.issuer.token({ sub: CLAIMED, roles: ['physician'], clinics: ['c-north'], mfa: true })).slice(0, -6)}AAAAAA`;
    const flood = 120;
    const burst = 20;
    for (let sent = 0; sent < flood; sent += burst) {
      const batch = await Promise.all(Array.from({ length: burst }, () => postJson(gw, { query: QUERY }, token)));
      expect(batch.every((r) => r.status === 401)).toBe(true);
      clock += 1_000;
    }
    const seconds = flood / burst;
    const counted = (rows: Record<string, any>[]) =>
      rows.filter((r) => r.action === 'refused').reduce((n, r) => n + Number(/:x(\d+)$/.exec(r.detail)?.[1] ?? 1), 0);
    // The last second's count is written by the trail's sweep, once it sees that second is over.
    const rows = await eventually(() => gw.auditRows(), (r) => counted(r) >= flood, 30_000);
    const refused = rows.filter((r) => r.action === 'refused');
    expect(counted(rows)).toBe(flood);
    expect(refused.every((r) => r.actor === CLAIMED && r.client_addr === '127.0.0.1' && /^bad_signature(:x\d+)?$/.test(r.detail))).toBe(true);
    // Each second of the flood: `auditedPerSecond` single events, then one count of the rest.
    expect(refused.filter((r) => r.detail === 'bad_signature')).toHaveLength(3 * seconds);
    expect(refused.filter((r) => r.detail !== 'bad_signature').map((r) => r.detail)).toEqual(Array(seconds).fill(`bad_signature:x${burst - 3}`));
    const alerts = rows.filter((r) => r.action === 'alert');
    expect(alerts).toEqual([expect.objectContaining({ detail: 'refusal_burst', client_addr: '127.0.0.1' })]);
    expect(gw.logs.filter((l) => l.msg === 'burst of refusals from one client address')).toHaveLength(1);
    expect(gw.logs.filter((l) => l.msg === 'request refused')).toHaveLength(flood);
  });
});
