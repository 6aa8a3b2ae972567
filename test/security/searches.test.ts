import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { parsePolicy } from '../../src/policy/load.ts';
import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';
import type { SeedPatient } from '../../src/seed/dataset.ts';
import { POLICY_FILE, startTestGateway, type GqlResponse, type TestGateway } from '../support/gateway.ts';
import { codesOf } from '../support/gql-expect.ts';
import { inOneWindow, MINUTE } from '../support/one-window.ts';

// Searches by identifier (issue 11, item 1). Confirming that a person is a patient is a
// disclosure: every search is an audit row with its outcome and never the identifier; only a role
// that sees the identifier in full may search by it; each search is one PHI value against the
// caps, and a principal gets PHIGATE_SEARCHES_PER_MINUTE searches a minute across replicas.
//
// Here: 5 searches a minute, and registrars may show 4 values a request.

const PER_MINUTE = 5;

function testPolicy() {
  const tree = parse(readFileSync(POLICY_FILE, 'utf8')) as { roles: Record<string, Record<string, unknown>> };
  tree.roles.registrar!.limits = { rowsPerRequest: 4, phiValuesPerRequest: 4, rowsPerMinute: 1000, phiValuesPerMinute: 1000 };
  return parsePolicy(stringify(tree), PHI_FIELDS);
}

let gw: TestGateway;
let replica: TestGateway;
beforeAll(async () => {
  const gatewayOptions = { policy: testPolicy(), searchesPerMinute: PER_MINUTE };
  gw = await startTestGateway({ patients: 30, gatewayOptions });
  replica = await startTestGateway({ replicaOf: gw, gatewayOptions });
});
afterAll(async () => {
  await replica?.close();
  await gw?.close();
});

const north = (): SeedPatient[] => gw.data.patients.filter((p) => p.clinicId === 'c-north');
const south = (): SeedPatient[] => gw.data.patients.filter((p) => p.clinicId === 'c-south');
const UNUSED_SSN = '999-99-9999';

/** A principal nobody else in this file uses, so each test starts with a fresh minute. */
async function fresh(roles: string[], over: { mfa?: boolean; clinics?: string[] } = {}): Promise<{ sub: string; token: string }> {
  const sub = `search-${roles.join('-')}-${randomBytes(4).toString('hex')}`;
  return { sub, token: await gw.tokenFor(sub, { roles, clinics: over.clinics ?? ['c-north'], mfa: over.mfa ?? true }) };
}

async function send(on: TestGateway, token: string, query: string, variables?: Record<string, unknown>): Promise<GqlResponse & { requestId: string }> {
  const r = await on.gql(token, query, variables);
  // The gateway's own id, the one its audit rows carry.
  return { ...r, requestId: r.headers.get('x-request-id')! };
}

const BY_SSN = 'query($v: String!) { patientBySsn(ssn: $v) { id } }';
const BY_MRN = 'query($v: String!) { patientByMrn(mrn: $v) { id } }';
const searchRows = async (requestId: string) =>
  (await gw.auditRows(`request_id = $1 AND action = 'search'`, [requestId])).map((r) => ({
    type: r.type_name,
    field: r.field,
    detail: r.detail,
    patient: r.patient_id,
    role: r.role,
  }));
const searchesUsed = async (sub: string) =>
  (await gw.admin((c) => c.query<{ n: number }>('SELECT coalesce(sum(searches), 0)::int AS n FROM phigate.search_usage WHERE actor = $1', [sub]))).rows[0]!.n;

/**
 * Tests that spend a minute must not straddle two (the database clock decides the minute): a run
 * that did is run again with a fresh principal.
 */
const inOneMinute = <T>(attempt: () => Promise<T>): Promise<T> => inOneWindow(gw.db.adminUrl, MINUTE, attempt);

describe('every search is audited with its outcome, never its value', () => {
  it.each([
    ['ssn, as stored', 'ssn', (p: SeedPatient) => p.ssn],
    ['ssn, digits only', 'ssn', (p: SeedPatient) => p.ssn.replace(/-/g, '')],
    ['mrn, as stored', 'mrn', (p: SeedPatient) => p.mrn],
    ['mrn, lower case', 'mrn', (p: SeedPatient) => p.mrn.toLowerCase()],
  ] as const)('a hit by %s that shows only the id: one search row naming the patient', async (_name, kind, value) => {
    const { token } = await fresh(['registrar']);
    const p = north()[1]!;
    const r = await send(gw, token, kind === 'ssn' ? BY_SSN : BY_MRN, { v: value(p) });
    expect(r.body, r.text).toEqual({ data: { [kind === 'ssn' ? 'patientBySsn' : 'patientByMrn']: { id: p.id } } });
    expect(await searchRows(r.requestId)).toEqual([
      { type: 'Query', field: kind === 'ssn' ? 'patientBySsn' : 'patientByMrn', detail: `${kind}:hit`, patient: p.id, role: 'registrar' },
    ]);
  });

  it.each([
    ['an SSN nobody has', UNUSED_SSN],
    ["another clinic's patient's SSN (row security hides it)", 'south'],
  ])('a miss (%s): null and one search row without a patient', async (_name, which) => {
    const { token } = await fresh(['registrar']);
    const ssn = which === 'south' ? south()[0]!.ssn : which;
    const r = await send(gw, token, BY_SSN, { v: ssn });
    expect(r.body).toEqual({ data: { patientBySsn: null } });
    expect(await searchRows(r.requestId)).toEqual([{ type: 'Query', field: 'patientBySsn', detail: 'ssn:miss', patient: null, role: 'registrar' }]);
  });

  it('aliases are searches each: three in one request are three rows', async () => {
    const { token } = await fresh(['registrar']);
    const [a, b] = north();
    const r = await send(gw, token, `query($a: String!, $b: String!, $c: String!) { a: patientBySsn(ssn: $a) { id } b: patientBySsn(ssn: $b) { id } c: patientByMrn(mrn: $c) { id } }`, {
      a: a!.ssn,
      b: UNUSED_SSN,
      c: b!.mrn,
    });
    expect(r.body.errors, r.text).toBeUndefined();
    expect((await searchRows(r.requestId)).map((s) => s.detail).sort()).toEqual(['mrn:hit', 'ssn:hit', 'ssn:miss']);
  });

  it('no audit row holds an identifier that was searched for', async () => {
    const { token, sub } = await fresh(['registrar']);
    const p = north()[2]!;
    await send(gw, token, BY_SSN, { v: p.ssn });
    await send(gw, token, BY_MRN, { v: p.mrn });
    const text = JSON.stringify(await gw.auditRows('actor = $1', [sub]));
    expect(text).toContain('ssn:hit');
    for (const v of [p.ssn, p.ssn.replace(/-/g, ''), p.mrn]) expect(text).not.toContain(v);
  });
});

describe('searching by an identifier needs the permission to see it in full', () => {
  it.each([
    ['billing (ssn denied)', ['billing'], 'ssn', 'FORBIDDEN'],
    ['clinic_admin (ssn denied)', ['clinic_admin'], 'ssn', 'FORBIDDEN'],
    ['clinic_admin (mrn denied)', ['clinic_admin'], 'mrn', 'FORBIDDEN'],
    ['compliance (no rows)', ['compliance'], 'ssn', 'FORBIDDEN'],
    ['a physician (ssn masked: a search would confirm the whole number)', ['physician'], 'ssn', 'FORBIDDEN'],
    ['a nurse (ssn masked)', ['nurse'], 'ssn', 'FORBIDDEN'],
    ['a registrar without MFA', ['registrar'], 'ssn', 'MFA_REQUIRED'],
    ['billing without MFA (MFA would not help)', ['billing'], 'ssn', 'FORBIDDEN'],
  ] as const)('%s: refused alike for a patient and for nobody, audited, nothing searched', async (_name, roles, kind, code) => {
    const { token, sub } = await fresh([...roles], { mfa: !_name.includes('without MFA') });
    const p = north()[0]!;
    const decrypts = gw.cipher.stats.decrypts;
    const hit = await send(gw, token, kind === 'ssn' ? BY_SSN : BY_MRN, { v: kind === 'ssn' ? p.ssn : p.mrn });
    const miss = await send(gw, token, kind === 'ssn' ? BY_SSN : BY_MRN, { v: kind === 'ssn' ? UNUSED_SSN : 'MRN-NOBODY-1' });
    for (const r of [hit, miss]) {
      expect(codesOf(r), r.text).toEqual([code]);
      expect(r.body.data).toEqual({ [kind === 'ssn' ? 'patientBySsn' : 'patientByMrn']: null });
      expect((await searchRows(r.requestId)).map((s) => s.detail)).toEqual([`${kind}:refused`]);
    }
    expect(hit.text).toBe(miss.text);
    expect(gw.cipher.stats.decrypts).toBe(decrypts);
    expect(await searchesUsed(sub)).toBe(0);
  });

  it("a physician searches by MRN (allowed in full): its own patient is a hit, another's a miss", async () => {
    const token = await gw.tokenFor('dr-north-1');
    const mine = north().find((p) => p.careTeam.includes('dr-north-1'))!;
    const other = north().find((p) => !p.careTeam.includes('dr-north-1'))!;
    const own = await send(gw, token, BY_MRN, { v: mine.mrn });
    const not = await send(gw, token, BY_MRN, { v: other.mrn });
    expect(own.body.data).toEqual({ patientByMrn: { id: mine.id } });
    expect(not.body).toEqual({ data: { patientByMrn: null } });
    expect((await searchRows(own.requestId))[0]).toMatchObject({ detail: 'mrn:hit', role: 'physician' });
    expect((await searchRows(not.requestId))[0]).toMatchObject({ detail: 'mrn:miss', role: 'physician' });
  });

  it('a registrar who is also billing searches as the registrar', async () => {
    const { token } = await fresh(['billing', 'registrar']);
    const r = await send(gw, token, BY_SSN, { v: north()[3]!.ssn });
    expect(r.body.errors, r.text).toBeUndefined();
    expect((await searchRows(r.requestId))[0]).toMatchObject({ detail: 'ssn:hit', role: 'registrar' });
  });
});

describe('searches per principal and minute, shared by replicas', () => {
  it('past the limit a search is refused with 429 and Retry-After, alike for a hit and a miss, and audited', async () => {
    await inOneMinute(async () => {
      const { token, sub } = await fresh(['registrar']);
      for (let i = 0; i < PER_MINUTE; i++) expect((await send(gw, token, BY_SSN, { v: UNUSED_SSN })).body.errors).toBeUndefined();
      const hit = await send(gw, token, BY_SSN, { v: north()[0]!.ssn });
      const miss = await send(gw, token, BY_SSN, { v: UNUSED_SSN });
      for (const r of [hit, miss]) {
        expect(r.status).toBe(429);
        expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
        expect(Number(r.headers.get('retry-after'))).toBeLessThanOrEqual(60);
        expect(r.body.errors?.map((e) => [e.extensions?.code, e.extensions?.reason])).toEqual([['RATE_LIMITED', 'search_rate']]);
        expect(r.body.data).toEqual({ patientBySsn: null });
        expect((await searchRows(r.requestId)).map((s) => s.detail)).toEqual(['ssn:limited']);
      }
      expect(hit.text).toBe(miss.text);
      expect(await searchesUsed(sub)).toBe(PER_MINUTE + 2);
      // The refused searches disclosed nothing and are charged nothing to the principal's PHI minute.
      const { rows } = await gw.admin((c) => c.query('SELECT rows_used, values_used FROM phigate.phi_usage WHERE actor = $1', [sub]));
      expect(rows).toEqual([{ rows_used: 0, values_used: PER_MINUTE }]);
    });
  });

  it('aliases cannot multiply the limit: six in one request, the sixth refused', async () => {
    await inOneMinute(async () => {
      // With billing's larger PHI caps, so that only the search limit can refuse.
      const { token } = await fresh(['registrar', 'billing']);
      const fields = Array.from({ length: PER_MINUTE + 1 }, (_, i) => `s${i}: patientByMrn(mrn: "MRN-NOBODY-${i}") { id }`).join(' ');
      const r = await send(gw, token, `{ ${fields} }`);
      expect(codesOf(r)).toEqual(['RATE_LIMITED']);
      expect((await searchRows(r.requestId)).map((s) => s.detail).sort()).toEqual([...Array(PER_MINUTE).fill('mrn:miss'), 'mrn:limited'].sort());
    });
  });

  it('two replicas share one minute', async () => {
    await inOneMinute(async () => {
      const { token } = await fresh(['registrar']);
      for (let i = 0; i < PER_MINUTE; i++) expect((await send(i % 2 ? replica : gw, token, BY_SSN, { v: UNUSED_SSN })).status).toBe(200);
      expect((await send(replica, token, BY_SSN, { v: UNUSED_SSN })).status).toBe(429);
      expect((await send(gw, token, BY_SSN, { v: UNUSED_SSN })).status).toBe(429);
    });
  });

  it('the limit is per principal: another registrar of the same clinic still searches', async () => {
    await inOneMinute(async () => {
      const first = await fresh(['registrar']);
      for (let i = 0; i <= PER_MINUTE; i++) await send(gw, first.token, BY_SSN, { v: UNUSED_SSN });
      const second = await fresh(['registrar']);
      const r = await send(gw, second.token, BY_SSN, { v: north()[4]!.ssn });
      expect(r.body.data).toEqual({ patientBySsn: { id: north()[4]!.id } });
    });
  });

  it('the usage table holds counts only', async () => {
    // A search of this test's own, so that the table is never judged empty whatever ran before.
    const { token, sub } = await fresh(['registrar']);
    const searched = north()[3]!;
    const r = await send(gw, token, BY_SSN, { v: searched.ssn });
    expect(r.body.errors, r.text).toBeUndefined();
    const { rows, fields } = await gw.admin((c) => c.query('SELECT * FROM phigate.search_usage'));
    expect(rows.filter((row) => row.actor === sub).length).toBeGreaterThanOrEqual(1);
    expect(fields.map((f) => f.name).sort()).toEqual(['actor', 'actor_kind', 'minute', 'searches']);
    const text = JSON.stringify(rows);
    for (const p of gw.data.patients) for (const v of [p.ssn, p.ssn.replace(/-/g, '')]) expect(text).not.toContain(v);
  });
});

describe('searches count against the PHI caps', () => {
  it('each search is one value: past the per-request cap the request is refused whole, alike for a hit and a miss, and audited', async () => {
    const [a, b, c] = north();
    // 4 values a request, 5 searches: whichever is counted last is withheld, and the request with it.
    const fiveSearches = async (last: string) => {
      const { token } = await fresh(['registrar']);
      return send(gw, token, `query($a: String!, $b: String!, $c: String!, $d: String!, $e: String!) {
        a: patientBySsn(ssn: $a) { id } b: patientBySsn(ssn: $b) { id } c: patientBySsn(ssn: $c) { id }
        d: patientBySsn(ssn: $d) { id } e: patientBySsn(ssn: $e) { id } }`, { a: a!.ssn, b: b!.ssn, c: UNUSED_SSN, d: c!.ssn, e: last });
    };
    const answers = [await fiveSearches('999-99-9998'), await fiveSearches(north()[4]!.ssn)];
    for (const r of answers) {
      expect(r.status, r.text).toBe(429);
      expect(r.body.data ?? null).toBeNull();
      expect(r.body.errors!.map((e) => [e.extensions?.code, e.extensions?.reason])).toEqual([['RATE_LIMITED', 'phi_request_cap']]);
      expect(r.body.errors![0]!.message).not.toMatch(/hit|found|exist/i);
      // The withheld search is traced; those answered within the cap were not shown, so they are
      // not disclosures (as in a rolled-back request); the request's refusal counts one withheld.
      expect((await searchRows(r.requestId)).map((s) => s.detail)).toEqual(['ssn:limited']);
      expect((await gw.auditRows(`request_id = $1 AND action = 'limited'`, [r.requestId])).map((e) => e.detail)).toEqual(['phi_request_cap:1']);
    }
    expect(answers[0]!.text).toBe(answers[1]!.text);
  });

  it("the principal's minute is charged one value per search", async () => {
    await inOneMinute(async () => {
      const { token, sub } = await fresh(['registrar']);
      await send(gw, token, BY_SSN, { v: UNUSED_SSN });
      await send(gw, token, BY_SSN, { v: north()[5]!.ssn });
      const { rows } = await gw.admin((c) => c.query('SELECT rows_used, values_used FROM phigate.phi_usage WHERE actor = $1', [sub]));
      expect(rows).toEqual([{ rows_used: 1, values_used: 2 }]);
    });
  });
});
