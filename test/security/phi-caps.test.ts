import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { parsePolicy } from '../../src/policy/load.ts';
import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';
import type { SeedPatient } from '../../src/seed/dataset.ts';
import { POLICY_FILE, startTestGateway, type GqlResponse, type TestGateway } from '../support/gateway.ts';
import { inOneWindow, MINUTE } from '../support/one-window.ts';

// PHI minimum necessary (policies/default.yaml, `limits`): a request that would show more than its
// cap is refused whole (429, RATE_LIMITED, no data), nothing past the cap decrypted, with one
// `limited` audit row that counts what was withheld; per principal and minute, in the database so
// every replica shares it, a used-up minute refuses the whole request (429, Retry-After). The audit
// and the answer of a refusal stay the same size however much the request asked for.
//
// The registrar's limits are made small here so a 30-patient data set reaches them: 4 rows and
// 6 values a request, 8 rows and 10 values a minute. Billing keeps the default policy's.

const REGISTRAR_LIMITS = { rowsPerRequest: 4, phiValuesPerRequest: 6, rowsPerMinute: 8, phiValuesPerMinute: 10 };

function testPolicy() {
  const tree = parse(readFileSync(POLICY_FILE, 'utf8')) as { roles: Record<string, Record<string, unknown>> };
  tree.roles.registrar!.limits = REGISTRAR_LIMITS;
  return parsePolicy(stringify(tree), PHI_FIELDS);
}

let gw: TestGateway;
let replica: TestGateway;
beforeAll(async () => {
  const policy = testPolicy();
  gw = await startTestGateway({ patients: 30, gatewayOptions: { policy } });
  replica = await startTestGateway({ replicaOf: gw, gatewayOptions: { policy } });
});
afterAll(async () => {
  await replica?.close();
  await gw?.close();
});

// ---- helpers -------------------------------------------------------------------------------------

/** A registrar of c-north nobody else in this file uses: every test starts with a fresh minute. */
async function freshRegistrar(roles: string[] = ['registrar']): Promise<{ sub: string; token: string }> {
  const sub = `reg-cap-${randomBytes(4).toString('hex')}`;
  return { sub, token: await gw.tokenFor(sub, { roles, clinics: ['c-north'] }) };
}

const north = (): SeedPatient[] => gw.data.patients.filter((p) => p.clinicId === 'c-north');

async function send(on: TestGateway, token: string, query: string, variables?: Record<string, unknown>): Promise<GqlResponse & { requestId: string }> {
  const response = await on.gql(token, query, variables);
  // The gateway's own id, the one its audit rows carry (a client's X-Request-Id never replaces it).
  return { ...response, requestId: response.headers.get('x-request-id') ?? '' };
}

const SSN_PAGE = (first: number) => `{ patients(first: ${first}) { edges { node { id ssn } } } }`;
const NAME_PAGE = (first: number) => `{ patients(first: ${first}) { edges { node { id givenName familyName birthDate } } } }`;

const ssnDecrypts = () => gw.cipher.stats.decryptsByColumn.get('patients.ssn') ?? 0;
const auditOf = (requestId: string) => gw.auditRows('request_id = $1', [requestId]);
const usageOf = async (sub: string) =>
  (await gw.admin((c) => c.query('SELECT rows_used, values_used FROM phigate.phi_usage WHERE actor = $1', [sub]))).rows[0] ?? null;

const capErrors = (r: GqlResponse) => (r.body.errors ?? []).filter((e) => e.extensions?.code === 'RATE_LIMITED');

/**
 * Tests that spend a principal's minute must not straddle two minutes (by the database clock, which
 * the gateway charges by): a run that did is run again with a fresh principal.
 */
const inOneMinute = <T>(attempt: () => Promise<T>): Promise<T> => inOneWindow(gw.db.adminUrl, MINUTE, attempt);

/** Spends a fresh registrar's whole minute of rows: two full pages of SSNs. */
async function exhaust(on: TestGateway, token: string): Promise<void> {
  for (let i = 0; i < REGISTRAR_LIMITS.rowsPerMinute / REGISTRAR_LIMITS.rowsPerRequest; i++) {
    const r = await send(on, token, SSN_PAGE(REGISTRAR_LIMITS.rowsPerRequest));
    expect(r.status, r.text).toBe(200);
    expect(r.body.errors, r.text).toBeUndefined();
  }
}

function expectMinuteRefusal(r: GqlResponse): void {
  expect(r.status, r.text).toBe(429);
  const retryAfter = Number(r.headers.get('retry-after'));
  expect(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, `Retry-After ${r.headers.get('retry-after')}`).toBe(true);
  expect(r.body.errors!.map((e) => [e.extensions?.code, e.extensions?.reason])).toEqual([['RATE_LIMITED', 'phi_minute_cap']]);
  expect(r.body.data ?? null).toBeNull();
  for (const p of gw.data.patients) expect(r.text).not.toContain(p.ssn);
}

/** A request past its own cap: 429 with no Retry-After (the same request would be refused again), no data. */
function expectRequestRefusal(r: GqlResponse, reason: string): void {
  expect(r.status, r.text).toBe(429);
  expect(r.headers.get('retry-after')).toBeNull();
  expect(r.body.errors!.map((e) => [e.extensions?.code, e.extensions?.reason])).toEqual([['RATE_LIMITED', reason]]);
  expect(r.body.data ?? null).toBeNull();
}

// ---- per request ---------------------------------------------------------------------------------

describe('per-request caps', () => {
  it('a registrar paging SSNs past the row cap is refused whole: 429, no SSN in the body, none past the cap decrypted, one limited row', async () => {
    await inOneMinute(async () => {
      const { sub, token } = await freshRegistrar();
      const decryptsBefore = ssnDecrypts();
      const r = await send(gw, token, SSN_PAGE(10));
      expectRequestRefusal(r, 'phi_request_cap');
      for (const p of north()) expect(r.text).not.toContain(p.ssn);
      // Those within the cap were opened before the cap was reached, and are not shown either.
      expect(ssnDecrypts() - decryptsBefore).toBe(REGISTRAR_LIMITS.rowsPerRequest);
      // One row for the request, with the number withheld; no read, since nothing was shown.
      const audit = await auditOf(r.requestId);
      expect(audit.map((a) => [a.action, a.type_name, a.field, a.patient_id, a.detail])).toEqual([['limited', 'Query', null, null, 'phi_request_cap:6']]);
      expect(await usageOf(sub)).toBeNull();
    });
  });

  it('past the value cap, within rows already shown, the request is refused whole', async () => {
    const { token } = await freshRegistrar();
    const before = gw.cipher.stats.decrypts;
    const r = await send(gw, token, NAME_PAGE(3)); // 3 rows x 3 fields = 9 values, cap 6
    expectRequestRefusal(r, 'phi_request_cap');
    expect(gw.cipher.stats.decrypts - before).toBe(REGISTRAR_LIMITS.phiValuesPerRequest);
    expect((await auditOf(r.requestId)).map((a) => [a.action, a.detail])).toEqual([['limited', 'phi_request_cap:3']]);
  });

  it('a request within the cap is answered whole; one value more refuses it, non-PHI fields and all', async () => {
    const { token } = await freshRegistrar();
    const within = await send(gw, token, `{ patients(first: 4) { edges { node { id clinicId ssn } } } }`);
    expect(within.status, within.text).toBe(200);
    expect(within.body.errors, within.text).toBeUndefined();
    expect(within.body.data!.patients.edges.every((e: { node: { ssn: string | null } }) => e.node.ssn !== null)).toBe(true);
    const over = await send(gw, token, `{ patients(first: 5) { edges { node { id clinicId ssn } } } }`);
    expectRequestRefusal(over, 'phi_request_cap');
  });

  it('however much is withheld, the answer is one error and the audit one limited row', async () => {
    // 30 patients x 3 fields against a cap of 6: 84 values withheld.
    const { token } = await freshRegistrar();
    const r = await send(gw, token, `{ a: patients(first: 30) { edges { node { givenName familyName birthDate } } } b: patients(first: 30) { edges { node { givenName } } } }`);
    expectRequestRefusal(r, 'phi_request_cap');
    const audit = await auditOf(r.requestId);
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({ action: 'limited', type_name: 'Query', patient_id: null });
    expect(Number(audit[0]!.detail.split(':')[1])).toBeGreaterThan(30);
  });

  it('denied fields count against nothing: a registrar asking for clinical notes uses none of its minute', async () => {
    const { sub, token } = await freshRegistrar();
    for (let i = 0; i < 3; i++) {
      const r = await send(gw, token, `{ patients(first: 10) { edges { node { id encounters { notes reason } } } } }`);
      expect(r.status).toBe(200);
      expect(capErrors(r)).toEqual([]);
      expect((r.body.errors ?? []).every((e) => e.extensions?.code === 'FIELD_DENIED')).toBe(true);
    }
    expect(await usageOf(sub)).toBeNull();
  });

  it('the minute is charged what was shown, not what was reserved', async () => {
    await inOneMinute(async () => {
      const { sub, token } = await freshRegistrar();
      const r = await send(gw, token, SSN_PAGE(3));
      expect(r.body.errors, r.text).toBeUndefined();
      expect(await usageOf(sub)).toEqual({ rows_used: 3, values_used: 3 });
    });
  });

  it('an answer withheld whole (a mutation rolled back) charges nothing to the minute', async () => {
    await inOneMinute(async () => {
      const { sub, token } = await freshRegistrar();
      const [p] = north();
      const before = (await gw.admin((c) => c.query('SELECT phone FROM phigate.patients WHERE id = $1', [p!.id]))).rows[0];
      const r = await send(
        gw,
        token,
        `mutation($id: ID!) {
          a: updatePatient(id: $id, input: { phone: "+1 555 0100" }) { id givenName phone }
          b: updatePatient(id: "00000000-0000-4000-8000-000000000000", input: { phone: "+1 555 0101" }) { id }
        }`,
        { id: p!.id },
      );
      expect(r.body.data ?? null, r.text).toBeNull();
      expect(await usageOf(sub)).toBeNull();
      expect((await gw.admin((c) => c.query('SELECT phone FROM phigate.patients WHERE id = $1', [p!.id]))).rows[0]).toEqual(before);
    });
  });

  it('a mutation whose answer would pass the cap is rolled back whole: 429, nothing written, one limited row', async () => {
    const { token } = await freshRegistrar();
    const mrn = `CAP-${randomBytes(4).toString('hex').toUpperCase()}`;
    const count = async () => Number((await gw.admin((c) => c.query('SELECT count(*) AS n FROM phigate.patients'))).rows[0].n);
    const before = await count();
    const r = await send(
      gw,
      token,
      `mutation($input: CreatePatientInput!) { createPatient(input: $input) { id mrn ssn givenName familyName birthDate phone email address } }`,
      { input: { clinicId: 'c-north', mrn, ssn: '900-55-0123', givenName: 'Capped', familyName: 'Answer', birthDate: '1990-01-02', phone: '+1 555 0199', email: 'capped@example.invalid', address: '1 Limit Road' } },
    );
    expectRequestRefusal(r, 'phi_request_cap');
    expect(await count()).toBe(before);
    expect((await auditOf(r.requestId)).map((a) => [a.action, a.type_name, a.detail])).toEqual([['limited', 'Mutation', `phi_request_cap:${8 - REGISTRAR_LIMITS.phiValuesPerRequest}`]]);
  });
});

// ---- per minute ----------------------------------------------------------------------------------

describe('per-minute caps', () => {
  it('past the per-minute cap the whole request is refused: 429, Retry-After, nothing decrypted, one audit row limited', async () => {
    await inOneMinute(async () => {
      const { sub, token } = await freshRegistrar();
      await exhaust(gw, token);
      const decrypts = gw.cipher.stats.decrypts;

      const r = await send(gw, token, SSN_PAGE(1));
      expectMinuteRefusal(r);
      expect(gw.cipher.stats.decrypts).toBe(decrypts);
      const audit = await auditOf(r.requestId);
      expect(audit).toHaveLength(1);
      expect(audit[0]).toMatchObject({ action: 'limited', actor: sub, type_name: 'Query', field: null, patient_id: null });
      // The refusal itself takes nothing from the minute.
      expect(await usageOf(sub)).toEqual({ rows_used: REGISTRAR_LIMITS.rowsPerMinute, values_used: REGISTRAR_LIMITS.rowsPerMinute });
    });
  });

  it('a used-up minute refuses mutations too, and the database is unchanged', async () => {
    await inOneMinute(async () => {
      const { token } = await freshRegistrar();
      await exhaust(gw, token);
      const count = async () => Number((await gw.admin((c) => c.query('SELECT count(*) AS n FROM phigate.patients'))).rows[0].n);
      const before = await count();
      const r = await send(gw, token, `mutation { createPatient(input: { clinicId: "c-north", mrn: "CAP-REFUSED-1" }) { id } }`);
      expectMinuteRefusal(r);
      expect(await count()).toBe(before);
      expect((await auditOf(r.requestId)).map((a) => [a.action, a.type_name])).toEqual([['limited', 'Mutation']]);
    });
  });

  it('what is left of the minute caps a request below its own cap (reason phi_minute_cap)', async () => {
    await inOneMinute(async () => {
      const { token } = await freshRegistrar();
      const first = await send(gw, token, NAME_PAGE(2)); // 6 values of the minute's 10
      expect(first.body.errors, first.text).toBeUndefined();
      const second = await send(gw, token, NAME_PAGE(2)); // 6 asked, 4 left
      expectMinuteRefusal(second);
      expect((await auditOf(second.requestId)).map((a) => [a.action, a.detail])).toEqual([['limited', 'phi_minute_cap:2']]);
      // Refused whole, it took nothing: the 4 left still answer a request within them.
      const third = await send(gw, token, NAME_PAGE(1));
      expect(third.body.errors, third.text).toBeUndefined();
    });
  });

  it('caps are per principal: another registrar of the same clinic is unaffected', async () => {
    await inOneMinute(async () => {
      const a = await freshRegistrar();
      const b = await freshRegistrar();
      await exhaust(gw, a.token);
      expectMinuteRefusal(await send(gw, a.token, SSN_PAGE(1)));

      const r = await send(gw, b.token, SSN_PAGE(4));
      expect(r.status, r.text).toBe(200);
      expect(r.body.errors, r.text).toBeUndefined();
      expect(r.body.data!.patients.edges.every((e: { node: { ssn: string | null } }) => e.node.ssn !== null)).toBe(true);
    });
  });

  it('the minute is shared by two gateway replicas on one database', async () => {
    await inOneMinute(async () => {
      const { sub, token } = await freshRegistrar();
      // Half the minute on each replica, then neither has anything left.
      const onA = await send(gw, token, SSN_PAGE(4));
      const onB = await send(replica, token, SSN_PAGE(4));
      expect([onA.body.errors, onB.body.errors]).toEqual([undefined, undefined]);
      expectMinuteRefusal(await send(replica, token, SSN_PAGE(1)));
      expectMinuteRefusal(await send(gw, token, SSN_PAGE(1)));
      expect(await usageOf(sub)).toEqual({ rows_used: 8, values_used: 8 });
    });
  });

  it('concurrent requests of one principal together never exceed its minute', async () => {
    await inOneMinute(async () => {
      const { sub, token } = await freshRegistrar();
      const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => send(i % 2 ? replica : gw, token, SSN_PAGE(4))));
      const shown = answers.flatMap((r) => r.body.data?.patients.edges ?? []).filter((e: { node: { ssn: string | null } }) => e.node.ssn !== null);
      expect(shown.length).toBeLessThanOrEqual(REGISTRAR_LIMITS.rowsPerMinute);
      expect(answers.some((r) => r.status === 429)).toBe(true);
      expect((await usageOf(sub))!.rows_used).toBe(shown.length);
      // A request refused at its commit (the others took the minute meanwhile) keeps none of its
      // read rows, only the refusal; one that committed keeps its reads.
      for (const r of answers) {
        const actions = (await auditOf(r.requestId)).map((a) => a.action);
        if (r.status === 429) {
          expectMinuteRefusal(r);
          expect(actions).toEqual(['limited']);
        } else {
          expect(actions.filter((a) => a === 'read').length, r.text).toBeGreaterThan(0);
          expect(actions).not.toContain('limited');
        }
      }
    });
  });

  it('the charge at commit refuses past the cap with SQLSTATE PH429 and the seconds left, and keeps nothing', async () => {
    await inOneMinute(async () => {
      const sub = `reg-cap-${randomBytes(4).toString('hex')}`;
      const charge = (rows: number) =>
        gw.admin(async (c) => {
          await c.query('BEGIN');
          try {
            await c.query('SELECT phigate.consume_phi_usage($1, $2, $3, $3, 8, 10)', ['user', sub, rows]);
            await c.query('COMMIT');
            return null;
          } catch (err) {
            await c.query('ROLLBACK');
            return err as { code: string; detail: string };
          }
        });
      await gw.admin((c) =>
        c.query(`INSERT INTO phigate.phi_usage VALUES ('user', $1, date_trunc('minute', now()) - interval '2 minutes', 8, 10)`, [sub]),
      );
      expect(await charge(5)).toBeNull();
      // The first charge of a minute drops the principal's past minutes.
      const minutes = await gw.admin((c) => c.query('SELECT minute FROM phigate.phi_usage WHERE actor = $1', [sub]));
      expect(minutes.rowCount).toBe(1);
      const refused = await charge(4);
      expect(refused?.code).toBe('PH429');
      expect(Number(refused?.detail)).toBeGreaterThanOrEqual(1);
      expect(Number(refused?.detail)).toBeLessThanOrEqual(60);
      expect(await usageOf(sub)).toEqual({ rows_used: 5, values_used: 5 });
      expect(await charge(3)).toBeNull();
      expect(await usageOf(sub)).toEqual({ rows_used: 8, values_used: 8 });
    });
  });

  it('a principal with a second role gets the larger caps of the two (registrar + billing)', async () => {
    const { token } = await freshRegistrar(['registrar', 'billing']);
    const r = await send(gw, token, SSN_PAGE(10));
    expect(r.body.errors, r.text).toBeUndefined();
    // SSNs through the registrar role, up to billing's 100 rows a request.
    expect(r.body.data!.patients.edges.filter((e: { node: { ssn: string | null } }) => e.node.ssn !== null)).toHaveLength(10);
  });

  it('the usage table holds counts only: no PHI, and the same actor as the audit trail', async () => {
    // A charge of this test's own, so that the table is never judged empty whatever ran before.
    const { sub, token } = await freshRegistrar();
    const r = await send(gw, token, SSN_PAGE(1));
    expect(r.body.errors, r.text).toBeUndefined();
    const { rows, fields } = await gw.admin((c) => c.query('SELECT * FROM phigate.phi_usage'));
    expect(rows.filter((row) => row.actor === sub).length).toBeGreaterThanOrEqual(1);
    expect(fields.map((f) => f.name)).toEqual(['actor_kind', 'actor', 'minute', 'rows_used', 'values_used']);
    const text = JSON.stringify(rows);
    for (const p of gw.data.patients) for (const v of [p.ssn, p.mrn, p.givenName, p.familyName]) expect(text).not.toContain(v);
    expect(rows.every((r) => r.actor_kind === 'user' && r.actor.startsWith('reg-cap-'))).toBe(true);
  });
});
