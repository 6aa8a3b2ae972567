import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseApiKey } from '../../src/auth/api-key-secret.ts';
import { createMemoryRateLimitStore } from '../../src/rate-limit/memory.ts';
import { startTestGateway, type GqlResponse, type TestGateway } from '../support/gateway.ts';

// Partner API keys end to end: issued by a clinic admin (its own clinics only), scoped by row
// security to the key's clinics and by policy to the key's fields, audited with partner, key id
// and purpose; refused when wrong, revoked, expired or rotated out; rate limited; and the secret
// is found nowhere but in the one answer that issued it.

let gw: TestGateway;
let replica: TestGateway;
/**
 * The gateway's key buckets run on the system's monotonic clock unless a test stops it: a bucket's
 * refill (a token every 10 s at 6 a minute) then cannot hand a slow run a token it did not earn.
 */
let bucketsStoppedAt: number | null = null;
beforeAll(async () => {
  const rateLimits = createMemoryRateLimitStore(100_000, () => bucketsStoppedAt ?? performance.now());
  gw = await startTestGateway({ patients: 24, apiKeys: { rateLimits } });
  // A second replica with a long key cache: what it remembers must not outlive a revocation.
  replica = await startTestGateway({ replicaOf: gw, apiKeys: { cacheSeconds: 60 } });
});
afterAll(async () => {
  await replica?.close();
  await gw?.close();
});

const CREATE = `mutation($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { key apiKey { id partner clinics fields purpose status expiresAt ratePerMinute burst createdBy } }
}`;
const ROTATE = `mutation($id: ID!, $h: Int) { rotateApiKey(id: $id, overlapHours: $h) { key apiKey { id replaces status } } }`;
const REVOKE = `mutation($id: ID!) { revokeApiKey(id: $id) { id status revokedAt } }`;
const LIST = `{ apiKeys { id partner status lastUsedAt replaces } }`;
const PAGE = `{ me { subject kind roles clinics } patients(first: 100) { edges { node { id clinicId mrn givenName familyName ssn encounters { diagnosisCodes reason } } } } }`;
const IDS = `{ patients(first: 100) { edges { node { id clinicId } } } }`;

const keys: string[] = [];
async function issue(input: Record<string, unknown>, as = 'admin-north'): Promise<{ key: string; id: string; res: GqlResponse }> {
  const res = await gw.gql(await gw.tokenFor(as), CREATE, {
    input: { partner: 'acme-lab', clinics: ['c-north'], fields: ['mrn', 'givenName', 'Encounter.diagnosisCodes'], purpose: 'HPAYMT', ...input },
  });
  const key = res.body.data?.createApiKey?.key as string;
  if (key) keys.push(key);
  return { key, id: res.body.data?.createApiKey?.apiKey?.id as string, res };
}

const asPartner = (g: TestGateway, key: string, query: string, requestId?: string) =>
  g.gql(null, query, undefined, { authorization: `ApiKey ${key}`, ...(requestId ? { 'x-request-id': requestId } : {}) });

const adminToken = () => gw.tokenFor('admin-north');
const northIds = () => gw.data.patients.filter((p) => p.clinicId === 'c-north').map((p) => p.id).sort();

describe('issuing keys', () => {
  it('a clinic admin issues a key for its clinic: shown once, phg_<id>_<secret> with 256 bits, audited', async () => {
    const { key, id, res } = await issue({});
    expect(res.body.errors).toBeUndefined();
    const parsed = parseApiKey(key)!;
    expect(parsed.id).toBe(id);
    expect(Buffer.from(parsed.secret, 'base64url')).toHaveLength(32);
    expect(res.body.data!.createApiKey.apiKey).toMatchObject({
      partner: 'acme-lab',
      clinics: ['c-north'],
      fields: ['Encounter.diagnosisCodes', 'Patient.givenName', 'Patient.mrn'],
      purpose: 'HPAYMT',
      status: 'active',
      createdBy: 'admin-north',
    });
    // Default lifetime: 90 days, on the database's clock (the one row security judges expiry by), from the key's creation.
    const lifetime = await gw.admin((c) => c.query(`SELECT extract(epoch FROM expires_at - created_at)::float8 AS lifetime, expires_at FROM phigate.api_keys WHERE id = $1`, [id]));
    expect(lifetime.rows[0].lifetime).toBe(90 * 86_400);
    expect(Date.parse(res.body.data!.createApiKey.apiKey.expiresAt)).toBe(lifetime.rows[0].expires_at.getTime());
    const audit = await gw.auditRows(`action = 'api_key' AND record_id = $1`, [id]);
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ actor: 'admin-north', actor_kind: 'user', role: 'clinic_admin', detail: 'created', type_name: 'ApiKey' });
    // The list shows it, never a secret.
    const list = await gw.gql(await adminToken(), `{ apiKeys { id } }`);
    expect(list.body.data!.apiKeys.map((k: { id: string }) => k.id)).toContain(id);
    expect(list.text).not.toContain(parsed.secret);
  });

  it('refuses other clinics, unknown fields, fields the partner policy denies, bad purposes, and other roles', async () => {
    const acmeKeys = async () =>
      (await gw.admin((c) => c.query(`SELECT count(*)::int AS n FROM phigate.api_keys WHERE partner = 'acme-lab'`))).rows[0].n as number;
    const before = await acmeKeys();
    expect((await issue({ clinics: ['c-south'] })).res.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const notes = await issue({ fields: ['notes'] });
    expect(notes.res.body.errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT' }, message: expect.stringContaining('Encounter.notes') });
    expect((await issue({ fields: ['Patient.favouriteColour'] })).res.body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    const purpose = await issue({ purpose: 'FUN' });
    expect(purpose.res.body.errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT' }, message: expect.stringContaining('HL7 PurposeOfUse') });
    // Break-glass is for people: no standing key for emergency treatment.
    expect((await issue({ purpose: 'ETREAT' })).res.body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect((await issue({ expiresInDays: 400 })).res.body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect((await issue({}, 'dr-north-1')).res.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    // None of the refused requests left a key behind.
    expect(await acmeKeys()).toBe(before);
  });
});

describe('what a key sees', () => {
  let key: string;
  let id: string;
  beforeAll(async () => {
    ({ key, id } = await issue({ partner: 'scope-lab' }));
  });

  it("rows: the key's clinics only, through row security", async () => {
    const res = await asPartner(gw, key, IDS);
    expect(res.status).toBe(200);
    const seen = res.body.data!.patients.edges.map((e: any) => e.node.id).sort();
    expect(seen).toEqual(northIds());
    const south = gw.data.patients.find((p) => p.clinicId === 'c-south')!;
    const one = await asPartner(gw, key, `{ patient(id: "${south.id}") { id } }`);
    expect(one.body.data!.patient).toBeNull();
  });

  it("fields: the intersection of the partner policy and the key's fields; audited with partner, key id and purpose", async () => {
    const res = await asPartner(gw, key, PAGE);
    const requestId = res.headers.get('x-request-id')!;
    expect(res.body.data!.me).toEqual({ subject: 'scope-lab', kind: 'partner', roles: ['partner'], clinics: ['c-north'] });
    const node = res.body.data!.patients.edges[0].node;
    const seeded = gw.data.patients.find((p) => p.id === node.id)!;
    expect(node.mrn).toBe(seeded.mrn);
    expect(node.givenName).toBe(seeded.givenName);
    // Allowed by the partner policy, but not issued to this key.
    expect(node.familyName).toBeNull();
    expect(node.ssn).toBeNull();
    const denied = new Set(res.body.errors!.map((e) => `${e.extensions?.code}:${e.path?.at(-1)}`));
    expect(denied).toEqual(new Set(['FIELD_DENIED:familyName', 'FIELD_DENIED:ssn', 'FIELD_DENIED:reason']));
    const rows = await gw.auditRows('request_id = $1', [requestId]);
    expect(rows.length).toBeGreaterThan(0);
    for (const r of rows) expect(r).toMatchObject({ actor: 'scope-lab', actor_kind: 'partner', credential_id: id, purpose: 'HPAYMT', role: 'partner' });
    expect(rows.some((r) => r.action === 'read' && r.field === 'mrn')).toBe(true);
    expect(rows.some((r) => r.action === 'denied' && r.field === 'familyName')).toBe(true);
  });

  it('may not manage keys or write records', async () => {
    const res = await asPartner(gw, key, LIST);
    expect(res.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });

  it("a user's token that claims the partner role gets nothing from it", async () => {
    const token = await gw.tokenFor('reg-north', { roles: ['partner'] });
    const res = await gw.gql(token, IDS);
    expect(res.body.data?.patients ?? null).toBeNull();
    expect(res.body.errors?.[0]?.extensions?.code).toMatch(/FORBIDDEN|MFA_REQUIRED/);
  });
});

describe('refusals', () => {
  let key: string;
  beforeAll(async () => {
    ({ key } = await issue({ partner: 'refusal-lab' }));
  });

  const refusal = (res: GqlResponse) => ({ status: res.status, code: res.body.errors?.[0]?.extensions?.code, reason: res.body.errors?.[0]?.extensions?.reason, message: res.body.errors?.[0]?.message });

  it('a wrong secret and an unknown key id answer alike', async () => {
    const { id, secret } = parseApiKey(key)!;
    const wrongSecret = `phg_${id}_${randomBytes(32).toString('base64url')}`;
    const unknownId = `phg_${crypto.randomUUID()}_${secret}`;
    const wrongRes = await asPartner(gw, wrongSecret, IDS);
    const unknownRes = await asPartner(gw, unknownId, IDS);
    // No refusal repeats any part of what was sent.
    for (const [res, sent] of [[wrongRes, wrongSecret], [unknownRes, unknownId]] as const) {
      expect(res.text).not.toContain(parseApiKey(sent)!.secret);
      expect(res.text).not.toContain(parseApiKey(sent)!.id);
    }
    const a = refusal(wrongRes);
    const b = refusal(unknownRes);
    expect(a).toEqual({ status: 401, code: 'UNAUTHENTICATED', reason: 'invalid_api_key', message: 'The API key is not valid.' });
    expect(b).toEqual(a);
    expect(refusal(await asPartner(gw, 'phg_nonsense', IDS))).toMatchObject({ status: 401, reason: 'malformed_credentials' });
  });

  it('revoked: refused on the next request here, and shows no row on the next request of a replica that still remembers the key', async () => {
    const { key: k, id } = await issue({ partner: 'revoked-lab' });
    expect((await asPartner(replica, k, IDS)).body.data!.patients.edges.length).toBeGreaterThan(0);
    const revoked = await gw.gql(await adminToken(), REVOKE, { id });
    expect(revoked.body.data!.revokeApiKey).toMatchObject({ id, status: 'revoked' });
    expect(refusal(await asPartner(gw, k, IDS))).toMatchObject({ status: 401, reason: 'api_key_revoked' });
    // The replica's cache (60 s) still holds the key as live; row security asks the database.
    const there = await asPartner(replica, k, IDS);
    expect(there.body.data?.patients.edges ?? []).toEqual([]);
    const audit = await gw.auditRows(`action = 'api_key' AND record_id = $1 AND detail = 'revoked'`, [id]);
    expect(audit).toHaveLength(1);
  });

  it('expired: refused, by the database clock even where a replica still remembers the key', async () => {
    const { key: k, id } = await issue({ partner: 'expiring-lab' });
    expect((await asPartner(replica, k, IDS)).body.data!.patients.edges.length).toBeGreaterThan(0);
    await gw.admin((c) => c.query(`UPDATE phigate.api_keys SET expires_at = now() - interval '1 second' WHERE id = $1`, [id]));
    expect((await asPartner(replica, k, IDS)).body.data?.patients.edges ?? []).toEqual([]);
    gw.apiKeys.verifier.forget(id);
    expect(refusal(await asPartner(gw, k, IDS))).toMatchObject({ status: 401, reason: 'api_key_expired' });
  });

  it('rotated: old and new both work during the overlap; with no overlap the old one is refused at once', async () => {
    const { key: old, id } = await issue({ partner: 'rotating-lab' });
    const rotated = await gw.gql(await adminToken(), ROTATE, { id });
    const fresh = rotated.body.data!.rotateApiKey;
    expect(fresh.apiKey).toMatchObject({ replaces: id, status: 'active' });
    for (const k of [old, fresh.key]) expect((await asPartner(gw, k, IDS)).body.data!.patients.edges.length).toBeGreaterThan(0);
    keys.push(fresh.key);
    // The old key ends when the overlap (24 h) does, counted from the rotation (its successor's creation, same transaction), not at its original 90 days.
    const { rows } = await gw.admin((c) =>
      c.query(`SELECT extract(epoch FROM o.expires_at - n.created_at)::float8 AS left FROM phigate.api_keys o JOIN phigate.api_keys n ON n.replaces = o.id WHERE o.id = $1`, [id]),
    );
    expect(rows[0].left).toBe(86_400);
    // A key is rotated once; the next rotation starts from the new key, here without overlap.
    expect((await gw.gql(await adminToken(), ROTATE, { id })).body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    const again = await gw.gql(await adminToken(), ROTATE, { id: fresh.apiKey.id, h: 0 });
    keys.push(again.body.data!.rotateApiKey.key);
    expect(refusal(await asPartner(gw, fresh.key, IDS))).toMatchObject({ status: 401, reason: 'api_key_expired' });
    expect((await asPartner(gw, again.body.data!.rotateApiKey.key, IDS)).status).toBe(200);
    const events = await gw.auditRows(`action = 'api_key' AND record_id IN ($1, $2)`, [id, fresh.apiKey.id]);
    expect(events.map((e) => e.detail).sort()).toEqual(['created', 'rotated', 'rotated_out', 'rotated_out']);
  });

  it('an admin of another clinic can neither see, revoke nor rotate the key', async () => {
    const { id } = await issue({ partner: 'other-lab' });
    const south = await gw.tokenFor('admin-south');
    const list = await gw.gql(south, LIST);
    expect(list.body.data!.apiKeys.map((k: { id: string }) => k.id)).not.toContain(id);
    expect((await gw.gql(south, REVOKE, { id })).body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect((await gw.gql(south, ROTATE, { id })).body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
  });
});

describe('rate limits and last use', () => {
  it('a key past its bucket gets 429 RATE_LIMITED with Retry-After; another key is unaffected', async () => {
    const { key } = await issue({ partner: 'busy-lab', ratePerMinute: 6, burst: 3 });
    const { key: other } = await issue({ partner: 'quiet-lab' });
    bucketsStoppedAt = performance.now();
    try {
      for (let i = 0; i < 3; i++) expect((await asPartner(gw, key, `{ me { subject } }`)).status).toBe(200);
      const limited = await asPartner(gw, key, `{ me { subject } }`);
      expect(limited.status).toBe(429);
      expect(limited.body.errors?.[0]?.extensions?.code).toBe('RATE_LIMITED');
      // 6 a minute: a token every 10 s, none of it earned yet.
      expect(Number(limited.headers.get('retry-after'))).toBe(10);
      expect((await asPartner(gw, other, `{ me { subject } }`)).status).toBe(200);
    } finally {
      bucketsStoppedAt = null;
    }
  });

  it('lastUsedAt is written in batches, not per request', async () => {
    const { key, id } = await issue({ partner: 'used-lab' });
    for (let i = 0; i < 5; i++) await asPartner(gw, key, `{ me { subject } }`);
    const before = await gw.admin((c) => c.query('SELECT last_used_at FROM phigate.api_keys WHERE id = $1', [id]));
    expect(before.rows[0].last_used_at).toBeNull();
    // Written by the flush's statement on the database's clock: between two readings of that clock around it.
    const dbClock = async () => (await gw.admin((c) => c.query<{ t: Date }>('SELECT clock_timestamp() AS t'))).rows[0]!.t.getTime();
    const from = await dbClock();
    await gw.apiKeys.verifier.flushLastUsed();
    const to = await dbClock();
    const list = await gw.gql(await adminToken(), LIST);
    const listed = list.body.data!.apiKeys.find((k: { id: string }) => k.id === id);
    expect(Date.parse(listed.lastUsedAt)).toBeGreaterThanOrEqual(from);
    expect(Date.parse(listed.lastUsedAt)).toBeLessThanOrEqual(to);
  });

  it('the in-process bucket refills with time', async () => {
    let now = 0;
    const store = createMemoryRateLimitStore(10, () => now);
    const limit = { ratePerMinute: 60, burst: 2 };
    expect(await store.take('k', limit)).toEqual({ allowed: true });
    expect(await store.take('k', limit)).toEqual({ allowed: true });
    expect(await store.take('k', limit)).toEqual({ allowed: false, retryAfterSeconds: 1 });
    now += 1_000;
    expect(await store.take('k', limit)).toEqual({ allowed: true });
  });
});

describe('the secret is nowhere but in the answer that issued it', () => {
  it('not in the database (every table as text), audit rows, or logs', async () => {
    // This test's own keys, a key and its successor at least, whatever else the file issued before it.
    const issued = await issue({ partner: 'secret-lab' });
    expect(issued.res.body.errors).toBeUndefined();
    const rotated = await gw.gql(await adminToken(), ROTATE, { id: issued.id, h: 0 });
    expect(rotated.body.errors).toBeUndefined();
    keys.push(rotated.body.data!.rotateApiKey.key);
    expect(await asPartner(gw, issued.key, IDS)).toMatchObject({ status: 401 });
    expect((await asPartner(gw, rotated.body.data!.rotateApiKey.key, IDS)).status).toBe(200);
    expect(keys).toEqual(expect.arrayContaining([issued.key, rotated.body.data!.rotateApiKey.key]));
    const secrets = keys.map((k) => parseApiKey(k)!.secret);
    // pg_dump 15 cannot dump the embedded PostgreSQL 18, so every table of every schema is read as text.
    const dump = await gw.admin(async (c) => {
      const tables = await c.query<{ t: string }>(
        `SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`,
      );
      let text = '';
      for (const { t } of tables.rows) text += (await c.query(`SELECT coalesce(string_agg(x::text, E'\\n'), '') AS s FROM ${t} x`)).rows[0].s;
      return text;
    });
    expect(dump).toContain('secret-lab');
    const logs = JSON.stringify([...gw.logs, ...replica.logs]);
    for (const s of secrets) {
      expect(dump).not.toContain(s);
      // bytea columns print as hex.
      expect(dump).not.toContain(Buffer.from(s).toString('hex'));
      expect(logs).not.toContain(s);
    }
    const stored = await gw.admin((c) => c.query('SELECT secret_hash FROM phigate.api_keys'));
    expect(stored.rows.every((r) => r.secret_hash.length === 32)).toBe(true);
  });
});
