import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { startTestIssuer, type TestIssuer } from '../support/oidc-issuer.ts';
import { PATIENT_SELECTION, seededSecrets } from '../support/phi-expect.ts';

// 028's grant, given back after a test revokes it: reads' events are inserted into audit_records.
const AUDIT_RECORDS_GRANT = `GRANT INSERT (batch_id, request_id, actor, actor_kind, client_addr, credential_id, role, purpose, break_glass, grant_id, patient_id,
  actions, type_names, fields, record_ids, details) ON phigate.audit_records TO phigate_app`;

// Every line the gateway logs, at debug level, and everything written to stdout and stderr while
// a realistic day's traffic runs: all roles, lookups by identifier, writes, denied fields, a
// failing audit, a failing database, bad and stolen-looking tokens. None of it may carry a PHI
// value or a credential.

let gw: TestGateway;
let stranger: TestIssuer;
const lines: string[] = [];
// README, "Logs": what names a line that no single request owns.
const BACKGROUND_TASKS = ['audit-writer', 'alert-sweep', 'alert-webhook', 'audit-log', 'refusal-trail', 'api-key-last-used'];
const written: string[] = [];
const tokens: string[] = [];
const restore: (() => void)[] = [];

/** Values this test sends in writes: as secret as the seeded ones. */
const NEW_PATIENT = {
  clinicId: 'c-north',
  mrn: 'MRN-LOGTEST-0000001',
  ssn: '900-77-4321',
  givenName: 'Wrenna',
  familyName: 'Logsworth',
  birthDate: '1979-11-23',
  phone: '+1 555 0199',
  email: 'wrenna.logsworth@example.invalid',
  address: '7 Hushed Row, Quietville',
};
const NEW_ENCOUNTER = { occurredAt: '2026-01-05T10:00:00Z', kind: 'visit', reason: 'Confidential rash consult', diagnosisCodes: ['L30.9'], notes: 'Patient confided a private worry' };

beforeAll(async () => {
  for (const stream of [process.stdout, process.stderr]) {
    const original = stream.write.bind(stream);
    stream.write = ((chunk: unknown, ...rest: unknown[]) => {
      written.push(String(chunk));
      return (original as (...a: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof stream.write;
    restore.push(() => (stream.write = original));
  }
  gw = await startTestGateway({
    patients: 12,
    gatewayOptions: { logger: createLogger('debug', { write: (line: string) => void lines.push(line) }) },
  });
  stranger = await startTestIssuer();
});

afterAll(async () => {
  for (const r of restore) r();
  await stranger?.close();
  await gw?.close();
});

const token = async (sub: string, over?: { mfa?: boolean }) => {
  const t = await gw.tokenFor(sub, over);
  tokens.push(t);
  return t;
};

async function raw(authorization: string, query: string) {
  tokens.push(authorization.replace(/^Bearer /, ''));
  const res = await fetch(gw.url, { method: 'POST', headers: { 'content-type': 'application/json', authorization }, body: JSON.stringify({ query }) });
  return res.status;
}

const ALL = `{ me { subject roles } patients(first: 50) { edges { node { ${PATIENT_SELECTION} } } } }`;

describe('log hygiene', () => {
  it('logs carry no PHI value and no token after traffic of every kind', async () => {
    // Every role reads everything it can ask for; denied fields are part of each answer.
    for (const sub of ['dr-north-1', 'rn-north-1', 'reg-north', 'bill-north', 'admin-north', 'compliance-1']) {
      expect((await gw.gql(await token(sub), ALL)).status).toBe(200);
    }
    // Without MFA: refused per role.
    await gw.gql(await token('dr-north-1', { mfa: false }), ALL);

    // Identifier lookups, with the identifier as a variable and inline in the document.
    const north = gw.data.patients.filter((p) => p.clinicId === 'c-north');
    for (const p of north.slice(0, 3)) {
      await gw.gql(await token('reg-north'), 'query($m: String!) { patientByMrn(mrn: $m) { id givenName } }', { m: p.mrn });
      await gw.gql(await token('reg-north'), `{ patientBySsn(ssn: "${p.ssn}") { id familyName } }`);
    }
    // A document that does not parse, quoting PHI: the error goes to the client, not the log.
    await gw.gql(await token('reg-north'), `{ patientBySsn(ssn: "${north[0]!.ssn}") { id ${north[0]!.familyName} `);

    // Writes: a new patient, a change, an encounter; and a write that is refused.
    const created = await gw.gql(
      await token('reg-north'),
      'mutation($input: CreatePatientInput!) { createPatient(input: $input) { id mrn } }',
      { input: NEW_PATIENT },
    );
    const id = created.body.data?.createPatient?.id as string | undefined;
    expect(id, created.text).toBeTruthy();
    await gw.gql(await token('reg-north'), 'mutation($id: ID!, $input: UpdatePatientInput!) { updatePatient(id: $id, input: $input) { id } }', {
      id,
      input: { email: 'wrenna.changed@example.invalid' },
    });
    const treated = north.find((p) => p.careTeam.includes('dr-north-1'))!;
    await gw.gql(await token('dr-north-1'), 'mutation($p: ID!, $input: AddEncounterInput!) { addEncounter(patientId: $p, input: $input) { id notes } }', {
      p: treated.id,
      input: NEW_ENCOUNTER,
    });
    await gw.gql(await token('bill-north'), 'mutation($input: CreatePatientInput!) { createPatient(input: $input) { id } }', {
      input: { ...NEW_PATIENT, mrn: 'MRN-LOGTEST-0000002' },
    });

    // The audit cannot be written; then the database fails mid-request.
    await gw.admin((c) => c.query('REVOKE INSERT ON phigate.audit_records FROM phigate_app'));
    try {
      await gw.gql(await token('reg-north'), ALL);
    } finally {
      await gw.admin((c) => c.query(AUDIT_RECORDS_GRANT));
    }
    await gw.admin((c) => c.query('REVOKE SELECT ON phigate.encounters FROM phigate_app'));
    try {
      await gw.gql(await token('dr-north-1'), ALL);
    } finally {
      await gw.admin((c) => c.query('GRANT SELECT ON phigate.encounters TO phigate_app'));
    }

    // Bad credentials: expired, wrong audience, another issuer's, tampered, malformed, oversized.
    const good = await token('reg-north');
    const claims = { sub: 'reg-north', roles: ['registrar'], clinics: ['c-north'], mfa: true };
    expect(await raw(`Bearer ${await gw.issuer.token({ ...claims, ttlSeconds: -120 })}`, ALL)).toBe(401);
    expect(await raw(`Bearer ${await gw.issuer.token({ ...claims, audience: 'someone-else' })}`, ALL)).toBe(401);
    expect(await raw(`Bearer ${await stranger.token(claims)}`, ALL)).toBe(401);
    expect(await raw(`Bearer ${good.slice(0, -4)}AAAA`, ALL)).toBe(401);
    expect(await raw(`Bearer ${good.split('.').slice(0, 2).join('.')}`, ALL)).toBe(401);
    expect(await raw(`Bearer ${'x'.repeat(9000)}`, ALL)).toBe(401);
    expect(await raw(`Basic ${Buffer.from('reg-north:hunter2-password').toString('base64')}`, ALL)).toBe(401);

    // ---- what was logged -------------------------------------------------------------------------
    const summaries = lines.filter((l) => JSON.parse(l).msg === 'request');
    expect(summaries.length).toBeGreaterThan(15);
    expect(lines.some((l) => JSON.parse(l).level >= 50), 'the audit and database failures were logged').toBe(true);
    // Every line names its request, error lines from code that never sees the request included;
    // a line of work no request owns (a batch serving many, a background sweep) names its task.
    for (const l of lines) {
      const { requestId, task } = JSON.parse(l) as { requestId?: unknown; task?: unknown };
      if (requestId === undefined) expect(task, l).toBeOneOf(BACKGROUND_TASKS);
      else expect(requestId, l).toMatch(/^[\w.-]{8,64}$/);
    }

    const everything = [...lines, ...written].join('\n');
    const secrets = seededSecrets(gw.data.patients);
    for (const [k, v] of Object.entries({ ...NEW_PATIENT, ...NEW_ENCOUNTER })) {
      if (k !== 'clinicId' && k !== 'kind' && k !== 'occurredAt') for (const s of [v].flat()) secrets.set(String(s), `written ${k}`);
    }
    secrets.set('wrenna.changed@example.invalid', 'updated email');
    secrets.set(NEW_PATIENT.ssn.replace(/\D/g, ''), 'written ssn (digits)');
    for (const [secret, what] of secrets) {
      if (everything.includes(secret)) throw new Error(`the logs carry ${what}`);
    }
    for (const t of tokens) {
      // The whole credential and its signature alone (the part that makes it usable).
      for (const part of [t, t.split('.')[2]].filter((x): x is string => !!x && x.length >= 16)) {
        if (everything.includes(part)) throw new Error('the logs carry a credential');
      }
    }
    expect(everything).not.toContain('hunter2-password');
    expect(everything).not.toContain(Buffer.from('reg-north:hunter2-password').toString('base64'));
    // Nor SQL text, which can quote values.
    expect(everything).not.toMatch(/\b(SELECT|INSERT INTO|UPDATE phigate)\b/);
  });
});
