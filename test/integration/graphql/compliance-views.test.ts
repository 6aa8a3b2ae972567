import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadPolicy } from '../../../src/policy/load.ts';
import { PHI_FIELDS } from '../../../src/policy/phi-fields.ts';
import type { SeedPatient } from '../../../src/seed/dataset.ts';
import { POLICY_FILE, startTestGateway, type TestGateway } from '../../support/gateway.ts';
import { codesOf } from '../../support/gql-expect.ts';

// The compliance views end to end on a real gateway: auditEvents (filters, cursor pages, clinic
// scope) and disclosures (the HIPAA 164.528 accounting), for role compliance, which sees no PHI
// value in either; each query is itself an audit event.

const EVENTS = `query($p: ID, $a: String, $act: String, $bg: Boolean, $s: String, $u: String, $f: Int, $after: String) {
  auditEvents(patientId: $p, actor: $a, action: $act, breakGlassOnly: $bg, since: $s, until: $u, first: $f, after: $after) {
    edges { cursor node { id occurredAt requestId actor actorKind credentialId role purpose breakGlass grantId clientAddr action typeName field patientId recordId detail clinicId } }
    pageInfo { hasNextPage endCursor } } }`;
const DISCLOSURES = `query($p: ID!, $s: String, $u: String) {
  disclosures(patientId: $p, since: $s, until: $u) { disclosedAt requestId actor actorKind credentialId role purpose breakGlass grantId clientAddr fields maskedFields searches events } }`;
const READ = `query($id: ID!) { patient(id: $id) { id mrn ssn givenName familyName birthDate phone email address encounters { reason diagnosisCodes notes } } }`;
const BREAK = `mutation($id: ID!, $reason: String!) { breakGlass(patientId: $id, reason: $reason) { id } }`;

let gw: TestGateway;
let compliance: string;
const responses: string[] = [];

type Node = Record<string, any>;

async function views(token: string, query: string, variables: Record<string, unknown>) {
  const r = await gw.gql(token, query, variables);
  responses.push(r.text);
  return r;
}

async function page(variables: Record<string, unknown>, token = compliance): Promise<{ nodes: Node[]; hasNextPage: boolean; endCursor: string | null }> {
  const r = await views(token, EVENTS, variables);
  expect(r.body.errors, r.text).toBeUndefined();
  const c = r.body.data!.auditEvents;
  return { nodes: c.edges.map((e: { node: Node }) => e.node), ...c.pageInfo };
}

async function all(variables: Record<string, unknown>, token = compliance): Promise<Node[]> {
  const out: Node[] = [];
  let after: string | null = null;
  for (;;) {
    const p = await page({ ...variables, f: 100, after }, token);
    out.push(...p.nodes);
    if (!p.hasNextPage) return out;
    after = p.endCursor;
  }
}

/** Rows written as the partner-key and search code of the other branches write them (neither is merged here). */
async function insertEvents(rows: Record<string, unknown>[]): Promise<void> {
  await gw.admin(async (c) => {
    for (const r of rows) {
      const cols = Object.keys(r);
      await c.query(`INSERT INTO phigate.audit_events (${cols.join(', ')}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(', ')})`, Object.values(r));
    }
  });
}

const inClinic = (clinic: string) => gw.data.patients.filter((p) => p.clinicId === clinic);
let north: SeedPatient;
let south: SeedPatient;
let searchRequest: string;
let partnerRequest: string;
let grantId: string;

beforeAll(async () => {
  gw = await startTestGateway({ patients: 24 });
  compliance = await gw.tokenFor('compliance-1');
  const [n, s] = gw.data.clinics.map((c) => c.id) as [string, string];
  north = inClinic(n).find((p) => p.careTeam.length > 0 && p.ssn)!;
  south = inClinic(s)[0]!;
  // Reads by three roles (allowed, masked, denied fields) of one north patient, and one south read.
  const registrar = gw.data.staff.find((x) => x.roles.includes('registrar') && x.clinics.includes(n))!.sub;
  const billing = gw.data.staff.find((x) => x.roles.includes('billing') && x.clinics.includes(n))!.sub;
  for (const sub of [registrar, north.careTeam[0]!, billing]) await gw.gql(await gw.tokenFor(sub), READ, { id: north.id });
  const southRegistrar = gw.data.staff.find((x) => x.roles.includes('registrar') && x.clinics.includes(s))!.sub;
  await gw.gql(await gw.tokenFor(southRegistrar), READ, { id: south.id });
  // Break-glass by a physician of the clinic who is not on the care team, and a read under it.
  const outsider = gw.data.staff.find((x) => x.roles.includes('physician') && x.clinics.includes(n) && !north.careTeam.includes(x.sub))!.sub;
  const token = await gw.tokenFor(outsider);
  const opened = await gw.gql(token, BREAK, { id: north.id, reason: 'Unconscious in the emergency department, no care-team physician reachable' });
  expect(opened.body.errors, opened.text).toBeUndefined();
  grantId = opened.body.data!.breakGlass.id;
  await gw.gql(token, READ, { id: north.id });
  // A search hit and a search miss (SSN), and a partner's read through an API key.
  searchRequest = randomUUID();
  partnerRequest = randomUUID();
  const base = { purpose: 'treatment', client_addr: '127.0.0.1' };
  await insertEvents([
    { ...base, request_id: searchRequest, actor: registrar, actor_kind: 'user', role: 'registrar', action: 'search', type_name: 'Query', field: 'patientBySsn', patient_id: north.id, detail: 'ssn:hit' },
    { ...base, request_id: randomUUID(), actor: registrar, actor_kind: 'user', role: 'registrar', action: 'search', type_name: 'Query', field: 'patientBySsn', detail: 'ssn:miss' },
    { ...base, request_id: partnerRequest, actor: 'acme-labs', actor_kind: 'partner', credential_id: 'key_1', role: null, action: 'read', type_name: 'Patient', field: 'birthDate', patient_id: north.id, record_id: north.id },
    { ...base, request_id: partnerRequest, actor: 'acme-labs', actor_kind: 'partner', credential_id: 'key_1', role: null, action: 'read', type_name: 'Patient', field: 'familyName', patient_id: north.id, record_id: north.id },
  ]);
});
afterAll(async () => {
  await gw?.close();
});

describe('auditEvents', () => {
  it('shows the events of its clinics and those without a patient, newest first, and never a PHI value', async () => {
    const events = await all({});
    const ids = events.map((e) => Number(e.id));
    expect(ids).toEqual([...ids].sort((a, b) => b - a));
    const stored = await gw.auditRows();
    const clinicOf = new Map(gw.data.patients.map((p) => [p.id, p.clinicId]));
    // compliance-1 holds every clinic: it sees every event written before its query.
    expect(new Set(ids)).toEqual(new Set(stored.filter((r) => Number(r.id) <= ids[0]!).map((r) => Number(r.id))));
    for (const e of events) expect(e.clinicId).toBe(e.patientId === null ? null : clinicOf.get(e.patientId));
    expect(events).toContainEqual(expect.objectContaining({ action: 'search', detail: 'ssn:miss', patientId: null }));

    // One clinic only: nothing of another clinic's patients, still the events without a patient.
    const northOnly = await gw.tokenFor('compliance-1', { clinics: [north.clinicId] });
    const scoped = await all({}, northOnly);
    expect(scoped.some((e) => e.patientId === south.id)).toBe(false);
    expect(scoped.some((e) => e.patientId === north.id)).toBe(true);
    expect(scoped).toContainEqual(expect.objectContaining({ detail: 'ssn:miss' }));
    expect((await page({ p: south.id }, northOnly)).nodes).toEqual([]);
  });

  it('filters by patient, actor, action, break-glass and time, each as the stored rows say', async () => {
    const stored = await gw.auditRows();
    const check = async (variables: Record<string, unknown>, keep: (r: Record<string, any>) => boolean) => {
      const got = (await all(variables)).map((e) => e.id);
      const until = Math.max(...stored.map((r) => Number(r.id)));
      const want = stored.filter((r) => Number(r.id) <= until && keep(r)).map((r) => String(r.id)).reverse();
      expect(got.filter((id) => Number(id) <= until)).toEqual(want);
      expect(want.length).toBeGreaterThan(0);
    };
    await check({ p: north.id }, (r) => r.patient_id === north.id);
    await check({ a: 'acme-labs' }, (r) => r.actor === 'acme-labs');
    await check({ act: 'denied' }, (r) => r.action === 'denied');
    await check({ act: 'search' }, (r) => r.action === 'search');
    await check({ bg: true }, (r) => r.break_glass === true);
    await check({ bg: true, act: 'read', p: north.id }, (r) => r.break_glass && r.action === 'read' && r.patient_id === north.id);
    const mid = stored[Math.floor(stored.length / 2)]!.occurred_at as Date;
    await check({ s: mid.toISOString() }, (r) => r.occurred_at.getTime() >= mid.getTime());
    await check({ u: mid.toISOString() }, (r) => r.occurred_at.getTime() < mid.getTime());
    const grantEvents = (await all({ bg: true })).filter((e) => e.grantId === grantId);
    expect(grantEvents.map((e) => e.action)).toContain('break_glass');
    expect(grantEvents.map((e) => e.action)).toContain('read');
  });

  it('pages by cursor: stable while new events arrive, no event twice, none skipped', async () => {
    const first = await page({ p: north.id, f: 3 });
    expect(first.hasNextPage).toBe(true);
    const top = Number(first.nodes[0]!.id);
    // New events of the same patient arrive between pages (a read, and each page query's own event).
    await gw.gql(await gw.tokenFor(north.careTeam[0]!), READ, { id: north.id });
    const seen: string[] = first.nodes.map((e) => e.id);
    let after = first.endCursor;
    for (;;) {
      const p = await page({ p: north.id, f: 3, after });
      seen.push(...p.nodes.map((e) => e.id));
      if (!p.hasNextPage) break;
      after = p.endCursor;
    }
    const stored = (await gw.auditRows('patient_id = $1 AND id <= $2', [north.id, top])).map((r) => String(r.id)).reverse();
    expect(seen).toEqual(stored);
  });

  it('refuses bad arguments with messages naming them', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ f: 0 }, /first must be between 1 and 100/],
      [{ f: 101 }, /first must be between 1 and 100/],
      [{ after: 'bm90LWEtY3Vyc29y' }, /after is not a cursor/],
      [{ act: 'peek' }, /action must be one of read, masked, denied/],
      [{ p: 'not-a-uuid' }, /patientId must be an id/],
      [{ s: 'yesterday' }, /since must be an ISO 8601 date-time/],
      [{ u: '2026-02-30T00:00:00Z' }, /until must be a valid date-time/],
      [{ s: '2026-01-02T00:00:00Z', u: '2026-01-01T00:00:00Z' }, /since must be before until/],
      [{ a: '' }, /actor must not be empty/],
    ];
    for (const [variables, message] of cases) {
      const r = await gw.gql(compliance, EVENTS, variables);
      expect(codesOf(r), JSON.stringify(variables)).toEqual(['BAD_USER_INPUT']);
      expect(r.body.errors![0]!.message).toMatch(message);
    }
  });

  it('is refused to other roles, and to compliance without MFA; the database refuses a request without the role too', async () => {
    expect(codesOf(await gw.gql(await gw.tokenFor(north.careTeam[0]!), EVENTS, {}))).toEqual(['FORBIDDEN']);
    expect(codesOf(await gw.gql(await gw.tokenFor('compliance-1', { mfa: false }), EVENTS, {}))).toEqual(['MFA_REQUIRED']);
    await expect(gw.pool.query('SELECT id FROM phigate.audit_events LIMIT 1')).rejects.toMatchObject({ code: '42501' });
    await expect(gw.pool.query('SELECT * FROM phigate.compliance_audit_events(NULL, NULL, NULL, false, NULL, NULL, NULL, 10)')).rejects.toMatchObject({ code: '42501' });
    expect((await gw.pool.query(`SELECT phigate.compliance_patient_in_scope($1) AS ok`, [north.id])).rows[0].ok).toBe(false);
  });

  it('mirrors the policy: the database lets exactly the roles the policy grants readAuditTrail read the trail', async () => {
    const policy = await loadPolicy(POLICY_FILE, PHI_FIELDS);
    const readers = [...policy.roles.values()].filter((r) => r.operations.has('readAuditTrail')).map((r) => r.name);
    for (const role of policy.roles.keys()) {
      const { rows } = await gw.admin(async (c) => {
        await c.query('BEGIN');
        await c.query(`SELECT set_config('phigate.roles', $1, true)`, [role]);
        const r = await c.query('SELECT phigate.ctx_audit_reader() AS ok');
        await c.query('ROLLBACK');
        return r;
      });
      expect(rows[0].ok, role).toBe(readers.includes(role));
    }
  });

  it('is itself audited, once per query, under the request id of its answer', async () => {
    const rowsOf = async (sent: string, r: { headers: Headers }) => gw.auditRows('request_id IN ($1, $2)', [sent, r.headers.get('x-request-id')]);
    const sent = `views-${randomUUID()}`;
    const r = await gw.gql(compliance, EVENTS, { p: north.id, f: 2 }, { 'x-request-id': sent });
    expect(await rowsOf(sent, r)).toEqual([
      expect.objectContaining({ action: 'view', actor: 'compliance-1', type_name: 'Query', field: 'auditEvents', patient_id: north.id, detail: 'rows:2', role: 'compliance' }),
    ]);
    const sentToo = `views-${randomUUID()}`;
    const d = await gw.gql(compliance, DISCLOSURES, { p: north.id }, { 'x-request-id': sentToo });
    expect(await rowsOf(sentToo, d)).toEqual([
      expect.objectContaining({ action: 'view', field: 'disclosures', patient_id: north.id, detail: `rows:${d.body.data!.disclosures.length}` }),
    ]);
  });
});

describe('disclosures', () => {
  it("is the patient's accounting: reads, masked reads, searches, break-glass and partner reads, by request", async () => {
    const r = await views(compliance, DISCLOSURES, { p: north.id });
    expect(r.body.errors, r.text).toBeUndefined();
    const list: Node[] = r.body.data!.disclosures;
    const times = list.map((d) => Date.parse(d.disclosedAt));
    expect(times).toEqual([...times].sort((a, b) => b - a));
    const registrar = list.find((d) => d.role === 'registrar' && d.fields.includes('Patient.ssn'))!;
    expect(registrar).toMatchObject({ actorKind: 'user', purpose: 'healthcare_operations', breakGlass: false, maskedFields: [] });
    const physician = list.find((d) => d.actor === north.careTeam[0] && !d.breakGlass)!;
    expect(physician.maskedFields).toEqual(['Patient.ssn']);
    expect(physician.fields).toContain('Encounter.notes');
    const billing = list.find((d) => d.role === 'billing')!;
    expect(billing.fields).not.toContain('Patient.ssn');
    expect(billing.fields).not.toContain('Encounter.notes');
    expect(list.find((d) => d.requestId === searchRequest)).toMatchObject({ searches: ['ssn:hit'], fields: [] });
    expect(list.find((d) => d.requestId === partnerRequest)).toMatchObject({
      actor: 'acme-labs', actorKind: 'partner', credentialId: 'key_1', fields: ['Patient.birthDate', 'Patient.familyName'], events: 2,
    });
    const emergency = list.filter((d) => d.grantId === grantId);
    expect(emergency.length).toBe(2);
    for (const d of emergency) expect(d).toMatchObject({ breakGlass: true, purpose: 'emergency_treatment' });
    expect(emergency.some((d) => d.fields.includes('Patient.givenName'))).toBe(true);
    // Denied fields and the compliance queries are not disclosures.
    expect(list.some((d) => d.actor === 'compliance-1')).toBe(false);
  });

  it('keeps to the dates asked and to the reader\'s clinics', async () => {
    const list: Node[] = (await views(compliance, DISCLOSURES, { p: north.id })).body.data!.disclosures;
    const newest = list[0]!.disclosedAt;
    const since = (await views(compliance, DISCLOSURES, { p: north.id, s: newest })).body.data!.disclosures as Node[];
    expect(since.map((d) => d.requestId)).toEqual(list.filter((d) => d.disclosedAt >= newest).map((d) => d.requestId));
    const until = (await views(compliance, DISCLOSURES, { p: north.id, u: newest })).body.data!.disclosures as Node[];
    expect(until.length).toBe(list.length - since.length);
    const southOnly = await gw.tokenFor('compliance-1', { clinics: [south.clinicId] });
    const refused = await gw.gql(southOnly, DISCLOSURES, { p: north.id });
    expect(codesOf(refused)).toEqual(['BAD_USER_INPUT']);
    expect(refused.body.errors![0]!.message).toBe('There is no patient with this id in your clinics.');
    expect((await gw.gql(southOnly, DISCLOSURES, { p: randomUUID() })).body.errors![0]!.message).toBe('There is no patient with this id in your clinics.');
  });
});

describe('no PHI value in any view', () => {
  it('holds for every answer the views gave in this file', () => {
    expect(responses.length).toBeGreaterThan(10);
    const text = responses.join('\n');
    for (const p of gw.data.patients) {
      for (const value of [p.mrn, p.ssn, p.givenName, p.familyName, p.birthDate, p.phone, p.email, p.address]) {
        if (value) expect(text.includes(value), 'a PHI value in a compliance view').toBe(false);
      }
      for (const e of p.encounters) for (const value of [e.reason, e.notes]) if (value) expect(text.includes(value)).toBe(false);
    }
  });
});
