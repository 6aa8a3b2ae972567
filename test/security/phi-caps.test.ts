import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { parsePolicy } from '../../src/policy/load.ts';
import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';
import type { SeedPatient } from '../../src/seed/dataset.ts';
import { POLICY_FILE, startTestGateway, type GqlResponse, type TestGateway } from '../support/gateway.ts';
import { inOneWindow, MINUTE } from '../support/one-window.ts';

// PHI minimum necessary (policies/default.yaml, `limits`): per request, past the cap, further PHI
// fields come back null with RATE_LIMITED and are never decrypted; per principal and minute, in
// the database so every replica shares it, a used-up minute refuses the whole request (429,
// Retry-After). Every cap hit leaves an audit row 'limited'.
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

/** Patients this file's tests created, by id: a page of c-north may show them in any test order. */
const created = new Map<string, { ssn: string }>();

/** The SSN of a patient a page shows: seeded, or created by a test of this file. */
const ssnOf = (id: string): string => {
  const ssn = north().find((p) => p.id === id)?.ssn ?? created.get(id)?.ssn;
  if (ssn === undefined) throw new Error(`patient ${id} is neither seeded in c-north nor created by this file`);
  return ssn;
};

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

// ---- per request ---------------------------------------------------------------------------------

describe('per-request caps', () => {
  it('a registrar paging SSNs past the row cap gets 4 SSNs; the rest are null, RATE_LIMITED, never decrypted, audited as limited', async () => {
    const { token } = await freshRegistrar();
    const decryptsBefore = ssnDecrypts();
    const r = await send(gw, token, SSN_PAGE(10));

    expect(r.status, r.text).toBe(200);
    const nodes = r.body.data!.patients.edges.map((e: { node: { id: string; ssn: string | null } }) => e.node);
    expect(nodes).toHaveLength(10);
    const shown = nodes.filter((n: { ssn: string | null }) => n.ssn !== null);
    const withheld = nodes.filter((n: { ssn: string | null }) => n.ssn === null);
    expect(shown).toHaveLength(REGISTRAR_LIMITS.rowsPerRequest);
    for (const n of shown) expect(n.ssn).toBe(ssnOf(n.id));
    // The withheld SSNs appear nowhere in the answer, and were not even decrypted.
    for (const n of withheld) expect(r.text).not.toContain(ssnOf(n.id));
    expect(ssnDecrypts() - decryptsBefore).toBe(REGISTRAR_LIMITS.rowsPerRequest);

    const errors = capErrors(r);
    expect(errors).toHaveLength(6);
    for (const e of errors) {
      expect(e.extensions!.reason).toBe('phi_request_cap');
      expect(e.path!.at(-1)).toBe('ssn');
    }

    const audit = await auditOf(r.requestId);
    expect(audit.filter((a) => a.action === 'read').map((a) => a.patient_id).sort()).toEqual(shown.map((n: { id: string }) => n.id).sort());
    expect(audit.filter((a) => a.action === 'limited').map((a) => a.patient_id).sort()).toEqual(withheld.map((n: { id: string }) => n.id).sort());
    expect(audit.filter((a) => a.action === 'limited').every((a) => a.field === 'ssn' && a.role === 'registrar')).toBe(true);
  });

  it('past the value cap, the fields beyond it are withheld even within rows already shown', async () => {
    const { token } = await freshRegistrar();
    const before = gw.cipher.stats.decrypts;
    const r = await send(gw, token, NAME_PAGE(3)); // 3 rows x 3 fields = 9 values, cap 6
    expect(r.status, r.text).toBe(200);
    const values = r.body.data!.patients.edges.flatMap((e: { node: Record<string, string | null> }) => [e.node.givenName, e.node.familyName, e.node.birthDate]);
    expect(values.filter((v: string | null) => v !== null)).toHaveLength(REGISTRAR_LIMITS.phiValuesPerRequest);
    expect(capErrors(r)).toHaveLength(3);
    expect(gw.cipher.stats.decrypts - before).toBe(REGISTRAR_LIMITS.phiValuesPerRequest);
    expect((await auditOf(r.requestId)).filter((a) => a.action === 'limited')).toHaveLength(3);
  });

  it('a withheld field does not spoil the answer: HTTP 200, non-PHI fields of every row stand', async () => {
    const { token } = await freshRegistrar();
    const r = await send(gw, token, `{ patients(first: 8) { edges { node { id clinicId ssn } } } }`);
    expect(r.status).toBe(200);
    const nodes: { id: string; clinicId: string; ssn: string | null }[] = r.body.data!.patients.edges.map((e: { node: unknown }) => e.node);
    expect(nodes).toHaveLength(8);
    expect(nodes.every((n) => n.clinicId === 'c-north' && /^[0-9a-f-]{36}$/.test(n.id))).toBe(true);
    expect(nodes.filter((n) => n.ssn !== null)).toHaveLength(REGISTRAR_LIMITS.rowsPerRequest);
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

  it('a mutation whose answer is cut by the cap still stands, with its limited fields audited', async () => {
    const { token } = await freshRegistrar();
    const mrn = `CAP-${randomBytes(4).toString('hex').toUpperCase()}`;
    const ssn = '900-55-0123';
    const r = await send(
      gw,
      token,
      `mutation($input: CreatePatientInput!) { createPatient(input: $input) { id mrn ssn givenName familyName birthDate phone email address } }`,
      { input: { clinicId: 'c-north', mrn, ssn, givenName: 'Capped', familyName: 'Answer', birthDate: '1990-01-02', phone: '+1 555 0199', email: 'capped@example.invalid', address: '1 Limit Road' } },
    );
    expect(r.status, r.text).toBe(200);
    const patient = r.body.data!.createPatient;
    created.set(patient.id, { ssn });
    expect(Object.values(patient).filter((v) => v === null)).toHaveLength(8 - REGISTRAR_LIMITS.phiValuesPerRequest);
    expect(capErrors(r)).toHaveLength(8 - REGISTRAR_LIMITS.phiValuesPerRequest);
    const stored = await gw.admin((c) => c.query('SELECT id FROM phigate.patients WHERE id = $1', [patient.id]));
    expect(stored.rowCount).toBe(1);
    const actions = (await auditOf(r.requestId)).map((a) => a.action);
    expect(actions.filter((a) => a === 'create').length).toBeGreaterThan(0);
    expect(actions.filter((a) => a === 'limited')).toHaveLength(8 - REGISTRAR_LIMITS.phiValuesPerRequest);
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
      expect(second.status).toBe(200);
      const errors = capErrors(second);
      expect(errors).toHaveLength(2);
      expect(errors.every((e) => e.extensions!.reason === 'phi_minute_cap')).toBe(true);
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
