import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withRequestTransaction } from '../../../src/db/transaction.ts';
import type { SeedPatient } from '../../../src/seed/dataset.ts';
import { startTestGateway, type GqlResponse, type TestGateway } from '../../support/gateway.ts';
import { codesOf } from '../../support/gql-expect.ts';
import { preparedStatements, viaPgBouncer } from '../../support/db.ts';

// One request's identity must never reach another request, however the pool hands out its
// connections. The row-security context is set with set_config(..., true) right after BEGIN and
// must vanish at COMMIT or ROLLBACK, including when the request fails half-way. With a pool of two
// connections every connection serves dozens of principals in turn, so a context that survived a
// request (or a transaction left open after an error) would show up as rows of the wrong clinic or
// care team in somebody else's answer.
//
// Failures mid-transaction are real database errors, caused by triggers that the test installs as
// superuser (the gateway's role cannot create or alter anything):
//   - an audit row of an actor `fault-audit-*` is refused by a BEFORE INSERT trigger: the
//     request has read and decrypted rows, then the audit insert fails inside its transaction
//     (SQLSTATE P0001), which PostgreSQL aborts; the gateway must roll back and answer
//     AUDIT_UNAVAILABLE with no data;
//   - an audit row of an actor `fault-commit-*` trips a DEFERRED constraint trigger, so the
//     statement succeeds and the failure comes at COMMIT itself: for a read, the COMMIT of the
//     audit writer's batch, so the answer is AUDIT_UNAVAILABLE too (and the other requests of
//     that batch are retried on their own);
//   - an encounter dated in 1901 (the marker: kinds are ciphertext) is refused by a BEFORE INSERT trigger: a mutation that
//     has already read the patient (and possibly written an earlier field of the same document)
//     hits a database error.
// Besides these, application errors after rows were read (an MRN that matches in both clinics of
// a two-clinic registrar) and mutation documents whose second field is refused (rolled back whole).

let gw: TestGateway;

const FAULTS_SQL = `
CREATE FUNCTION phigate.isolation_test_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'isolation test fault on %', TG_TABLE_NAME;
END
$$;
CREATE TRIGGER isolation_fault_audit BEFORE INSERT ON phigate.audit_records
  FOR EACH ROW WHEN (NEW.actor LIKE 'fault-audit-%') EXECUTE FUNCTION phigate.isolation_test_fault();
CREATE CONSTRAINT TRIGGER isolation_fault_commit AFTER INSERT ON phigate.audit_records
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (NEW.actor LIKE 'fault-commit-%') EXECUTE FUNCTION phigate.isolation_test_fault();
CREATE TRIGGER isolation_fault_audit BEFORE INSERT ON phigate.audit_records_v3
  FOR EACH ROW WHEN (NEW.actor LIKE 'fault-audit-%') EXECUTE FUNCTION phigate.isolation_test_fault();
CREATE CONSTRAINT TRIGGER isolation_fault_commit AFTER INSERT ON phigate.audit_records_v3
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (NEW.actor LIKE 'fault-commit-%') EXECUTE FUNCTION phigate.isolation_test_fault();
CREATE TRIGGER isolation_fault_encounter BEFORE INSERT ON phigate.encounters
  FOR EACH ROW WHEN (NEW.occurred_at < '1902-01-01') EXECUTE FUNCTION phigate.isolation_test_fault();
`;

interface Who {
  readonly name: string;
  readonly sub: string;
  readonly roles: readonly string[];
  readonly clinics: readonly string[];
}

const CLINIC_WIDE = ['registrar', 'billing', 'clinic_admin'];
const CARE_TEAM = ['physician', 'nurse'];

const seeded = (sub: string, clinic: string, role: string): Who => ({ name: sub, sub, roles: [role], clinics: [clinic] });
const PRINCIPALS: Who[] = [
  seeded('dr-north-1', 'c-north', 'physician'),
  seeded('dr-north-2', 'c-north', 'physician'),
  seeded('rn-north-1', 'c-north', 'nurse'),
  seeded('rn-north-2', 'c-north', 'nurse'),
  seeded('reg-north', 'c-north', 'registrar'),
  seeded('bill-north', 'c-north', 'billing'),
  seeded('dr-south-1', 'c-south', 'physician'),
  seeded('rn-south-2', 'c-south', 'nurse'),
  seeded('reg-south', 'c-south', 'registrar'),
  seeded('bill-south', 'c-south', 'billing'),
  seeded('dr-east-2', 'c-east', 'physician'),
  seeded('rn-east-1', 'c-east', 'nurse'),
  seeded('reg-east', 'c-east', 'registrar'),
  // Not in the manifest: a registrar of two clinics, the principal an MRN can be ambiguous for.
  { name: 'reg-multi', sub: 'reg-multi', roles: ['registrar'], clinics: ['c-north', 'c-south'] },
];
// The faults' triggers pick their requests by actor (the request id is the gateway's own): registrars
// of one clinic each, so that their page reads rows and reaches the audit insert.
const FAULTY = {
  faultAudit: { name: 'fault-audit-reg', sub: 'fault-audit-reg', roles: ['registrar'], clinics: ['c-south'] },
  faultCommit: { name: 'fault-commit-reg', sub: 'fault-commit-reg', roles: ['registrar'], clinics: ['c-east'] },
} as const satisfies Record<string, Who>;

const isClinicWide = (who: Who) => who.roles.some((r) => CLINIC_WIDE.includes(r));
const isCareTeam = (who: Who) => who.roles.some((r) => CARE_TEAM.includes(r));

/** The contract's row scope, from the seed manifest: clinic-wide roles see the clinic, treating roles their care team. */
function allowed(who: Who, p: SeedPatient): boolean {
  if (!who.clinics.includes(p.clinicId)) return false;
  return isClinicWide(who) || (isCareTeam(who) && p.careTeam.includes(who.sub));
}
const allowedSeeded = (who: Who) => gw.data.patients.filter((p) => allowed(who, p));

const PAGE = `query Page { patients(first: 50) { edges { node {
  id clinicId mrn ssn givenName email encounters { id patientId reason notes } } } } }`;

const tokens = new Map<string, string>();
const tokenOf = (who: Who) => tokens.get(who.name)!;

let twin: { northPatient: SeedPatient; southId: string };

beforeAll(async () => {
  gw = await startTestGateway({ patients: 36, poolSize: 2 });
  await gw.admin((c) => c.query(FAULTS_SQL));
  for (const who of [...PRINCIPALS, ...Object.values(FAULTY)]) tokens.set(who.name, await gw.tokenFor(who.sub, { roles: [...who.roles], clinics: [...who.clinics] }));
  // The same MRN in c-south as a c-north patient: unique per clinic, ambiguous for reg-multi.
  const northPatient = gw.data.patients.find((p) => p.clinicId === 'c-north')!;
  const r = await gw.gql(
    await gw.tokenFor('reg-south'),
    `mutation($mrn: String!) { createPatient(input: { clinicId: "c-south", mrn: $mrn, givenName: "Twin" }) { id } }`,
    { mrn: northPatient.mrn },
  );
  expect(r.body.errors, r.text).toBeUndefined();
  twin = { northPatient, southId: r.body.data!.createPatient.id };
});
afterAll(async () => gw?.close());

// ---- checking one answer --------------------------------------------------------------------------

const UUID_G = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;
const seededById = () => new Map(gw.data.patients.map((p) => [p.id, p]));
const seededEncounters = () => new Map(gw.data.patients.flatMap((p) => p.encounters.map((e) => [e.id, p] as const)));

interface Seen {
  readonly who: Who;
  readonly label: string;
  /** Ids in the answer that are neither seeded patients nor seeded encounters: checked against the database afterwards. */
  readonly unknownIds: string[];
}

/**
 * Everything an answer carries must be the principal's to see: no id, MRN, SSN, e-mail or note of
 * a seeded patient outside its rows; SSNs only in the form its role allows; and every patient node
 * is internally consistent (its values are those of the patient with that id, not of another).
 */
function checkAnswer(who: Who, label: string, r: GqlResponse, problems: string[]): Seen {
  const text = r.text;
  const byId = seededById();
  const encounterOwner = seededEncounters();
  const ssnVisible = who.roles.includes('registrar');
  for (const p of gw.data.patients) {
    // The c-south twin carries this c-north patient's MRN: whoever sees the twin sees that string legitimately.
    const seesTwin = p.id === twin.northPatient.id && who.clinics.includes('c-south') && isClinicWide(who);
    const secrets = [...(seesTwin ? [] : [p.mrn]), p.email, ...p.encounters.map((e) => e.notes)];
    if (!allowed(who, p)) {
      for (const s of [p.id, ...secrets, p.ssn, p.ssn.replace(/-/g, ''), ...p.encounters.map((e) => e.id)]) {
        if (text.includes(s)) problems.push(`${label}: ${who.name} received a value of patient ${p.id} (${p.clinicId}) outside its rows`);
      }
    } else if (!ssnVisible && (text.includes(p.ssn) || text.includes(p.ssn.replace(/-/g, '')))) {
      problems.push(`${label}: ${who.name} received a full SSN its role may not see`);
    }
  }
  const unknownIds: string[] = [];
  for (const id of new Set(text.match(UUID_G) ?? [])) {
    if (!byId.has(id) && !encounterOwner.has(id)) unknownIds.push(id);
    const owner = encounterOwner.get(id);
    if (owner && !allowed(who, owner)) problems.push(`${label}: ${who.name} received encounter ${id} of a patient outside its rows`);
  }
  const nodes: any[] = [
    ...(r.body.data?.patients?.edges ?? []).map((e: any) => e.node),
    ...['patient', 'byMrn', 'bySsn', 'patientByMrn'].map((k) => r.body.data?.[k]).filter(Boolean),
  ];
  for (const n of nodes) {
    const seed = byId.get(n.id);
    if (!seed) {
      if (!who.clinics.includes(n.clinicId) || !isClinicWide(who)) problems.push(`${label}: ${who.name} received new patient ${n.id} of ${n.clinicId}`);
      continue;
    }
    if (n.clinicId !== seed.clinicId) problems.push(`${label}: clinic of ${n.id} is ${n.clinicId}, not ${seed.clinicId}`);
    if ('mrn' in n && n.mrn !== seed.mrn) problems.push(`${label}: mrn of ${n.id} is not its own`);
    if ('givenName' in n && n.givenName !== seed.givenName) problems.push(`${label}: givenName of ${n.id} is not its own`);
    if ('email' in n && n.email !== seed.email && n.email !== '+1 555 0999') problems.push(`${label}: email of ${n.id} is not its own`);
    if ('ssn' in n) {
      const expected = who.roles.includes('registrar') ? seed.ssn : who.roles.includes('billing') ? null : `***-**-${seed.ssn.slice(-4)}`;
      if (n.ssn !== expected) problems.push(`${label}: ssn of ${n.id} for ${who.name} is ${n.ssn === null ? 'null' : 'not the expected form'}`);
    }
    for (const e of n.encounters ?? []) {
      if (e.patientId !== n.id) problems.push(`${label}: encounter ${e.id} under ${n.id} belongs to ${e.patientId}`);
      const seedEnc = seed.encounters.find((x) => x.id === e.id);
      if (seedEnc && e.notes !== null && e.notes !== seedEnc.notes) problems.push(`${label}: notes of ${e.id} are not its own`);
    }
  }
  return { who, label, unknownIds };
}

// ---- the pool, directly ---------------------------------------------------------------------------

interface ConnectionState {
  pid: number;
  actor: string | null;
  clinics: string | null;
  roles: string | null;
  requestId: string | null;
  visiblePatients: number;
  inTransaction: boolean;
}

/**
 * Takes every connection of the pool at once (it has two) and reads what each one still carries.
 * Through PgBouncer (as many server connections as the pool has clients) a statement outside a
 * transaction may run on any server connection: each client opens one, so that the two of them
 * hold, and read, every server connection; a transaction left open there would make BEGIN warn.
 */
async function poolConnections(): Promise<ConnectionState[]> {
  const clients: pg.PoolClient[] = [await gw.pool.connect(), await gw.pool.connect()];
  const pinned = viaPgBouncer();
  const warnings: string[] = [];
  try {
    if (pinned) {
      for (const c of clients) c.on('notice', (n) => warnings.push(n.message ?? ''));
      await Promise.all(clients.map((c) => c.query('BEGIN')));
    }
    const states = await Promise.all(
      clients.map(async (c) => {
        const { rows } = await c.query(`SELECT pg_backend_pid() AS pid,
          current_setting('phigate.actor', true) AS actor, current_setting('phigate.clinics', true) AS clinics,
          current_setting('phigate.roles', true) AS roles, current_setting('phigate.request_id', true) AS request_id,
          (SELECT count(*) FROM phigate.patients)::int AS visible,
          now() <> statement_timestamp() AS in_tx`);
        const r = rows[0];
        return { pid: r.pid, actor: r.actor, clinics: r.clinics, roles: r.roles, requestId: r.request_id, visiblePatients: r.visible, inTransaction: pinned ? warnings.length > 0 : r.in_tx };
      }),
    );
    if (pinned) await Promise.all(clients.map((c) => c.query('COMMIT')));
    return states;
  } finally {
    for (const c of clients) {
      c.removeAllListeners('notice');
      c.release();
    }
  }
}

/** A connection back in the pool carries no request context: the settings are empty, row security shows nothing. */
function expectClean(states: ConnectionState[]): void {
  expect(states).toHaveLength(2);
  expect(new Set(states.map((s) => s.pid)).size).toBe(2);
  for (const s of states) {
    // A custom setting once set in a session reads '' (not NULL) after its transaction ends.
    expect([s.actor, s.clinics, s.roles, s.requestId].map((v) => v ?? '')).toEqual(['', '', '', '']);
    expect(s.visiblePatients).toBe(0);
    expect(s.inTransaction).toBe(false);
  }
}

/** States of the gateway pool's sessions as the server sees them ('idle', never 'idle in transaction'). */
async function appSessionStates(): Promise<string[]> {
  return gw.admin(async (c) =>
    (await c.query<{ state: string }>(`SELECT state FROM pg_stat_activity WHERE datname = $1 AND application_name = 'phigate'`, [gw.db.name])).rows.map(
      (r) => r.state,
    ),
  );
}

/**
 * The app's sessions that are not idle once they have had a moment to finish: a read gives its
 * connection back as soon as its COMMIT is sent (src/db/transaction.ts), so right after the last
 * answer a session may still be 'active' running that COMMIT. One left in a transaction is a leak
 * at once; one still busy after 30 s is too (the bound only ends a hang: a COMMIT on CI's loaded
 * 2 cores can take seconds, and a healthy session answers at its first idle poll).
 */
async function busyAppSessions(): Promise<string[]> {
  for (const deadline = Date.now() + 30_000; ; await new Promise((r) => setTimeout(r, 50))) {
    const busy = (await appSessionStates()).filter((s) => s !== 'idle');
    if (busy.length === 0 || busy.some((s) => s !== 'active') || Date.now() > deadline) return busy;
  }
}

describe('connections go back to the pool clean', () => {
  it('after a failed audit insert, a failed COMMIT, a failed mutation and a failed direct transaction', async () => {
    expect(gw.pool.options.max).toBe(2);
    const before = await poolConnections();
    expectClean(before);
    const dr = PRINCIPALS.find((w) => w.name === 'dr-north-1')!;
    const drPatient = allowedSeeded(dr)[0]!;

    // 1. Rows read and decrypted, then the audit insert fails: nothing leaves, the connection is rolled back and reused.
    const audit = await gw.gql(tokenOf(FAULTY.faultAudit), PAGE);
    expect(codesOf(audit)).toEqual(['AUDIT_UNAVAILABLE']);
    expect(audit.body.data ?? null).toBeNull();
    const afterAudit = await poolConnections();
    expectClean(afterAudit);
    expect(new Set(afterAudit.map((s) => s.pid))).toEqual(new Set(before.map((s) => s.pid)));

    // 2. The failure comes at the audit batch's COMMIT: none of the pool's connections carries the context.
    const commit = await gw.gql(tokenOf(FAULTY.faultCommit), PAGE);
    expect(codesOf(commit)).toEqual(['AUDIT_UNAVAILABLE']);
    expect(commit.body.data ?? null).toBeNull();
    expectClean(await poolConnections());

    // 3. A mutation hits a database error after reading the patient.
    const mutation = await gw.gql(
      tokenOf(dr),
      `mutation($id: ID!) { addEncounter(patientId: $id, input: { occurredAt: "1901-01-01T00:00:00Z", kind: "visit", notes: "never" }) { id } }`,
      { id: drPatient.id },
    );
    expect(codesOf(mutation)).toEqual(['INTERNAL']);
    expectClean(await poolConnections());

    // 4. Directly through the transaction module: read under a context, then a statement fails.
    const ctx = { actor: 'reg-north', actorKind: 'user' as const, roles: ['registrar'], clinics: ['c-north'], requestId: randomUUID(), purpose: 'healthcare_operations' };
    let seen = -1;
    await expect(
      withRequestTransaction(
        gw.pool,
        ctx,
        async (tx) => {
          seen = (await tx.query('SELECT id FROM phigate.patients')).rowCount ?? 0;
          await tx.query('SELECT 1 / 0');
        },
        { preparedStatements: preparedStatements() },
      ),
    ).rejects.toThrow();
    expect(seen).toBe(gw.data.patients.filter((p) => p.clinicId === 'c-north').length);
    expectClean(await poolConnections());

    // None of the failed requests left an audit row, an encounter or a session inside a transaction.
    expect(await gw.auditRows(`actor LIKE 'fault-%'`)).toEqual([]);
    const { rows } = await gw.admin((c) => c.query(`SELECT count(*)::int AS n FROM phigate.encounters WHERE occurred_at < '1902-01-01'`));
    expect(rows[0].n).toBe(0);
    expect(await busyAppSessions()).toEqual([]);
  });
});

// ---- the storm ------------------------------------------------------------------------------------

type Kind = 'read' | 'byId' | 'byMrn' | 'faultAudit' | 'faultCommit' | 'write' | 'rollback' | 'ambiguous';
const KINDS: Kind[] = ['read', 'byId', 'faultAudit', 'read', 'write', 'byMrn', 'rollback', 'faultCommit', 'ambiguous', 'read'];

interface Job {
  readonly n: number;
  readonly who: Who;
  readonly kind: Kind;
  readonly query: string;
  readonly variables?: Record<string, unknown>;
  /** What the answer must be, beyond carrying nothing it may not. */
  readonly expect: (r: GqlResponse) => string | null;
}

/** Deterministic choice without Math.random, so a failure reproduces. */
const pick = <T>(xs: readonly T[], n: number): T => xs[(n * 7919 + 13) % xs.length]!;

const onlyFieldDenied = (r: GqlResponse) => (codesOf(r).every((c) => c === 'FIELD_DENIED') ? null : `unexpected errors ${codesOf(r).join(',')}`);
const refusedWith = (code: string) => (r: GqlResponse) =>
  r.body.data != null ? `data despite ${code}` : codesOf(r).join(',') === code ? null : `expected ${code}, got ${codesOf(r).join(',') || 'no error'}`;

function readExpectation(who: Who) {
  return (r: GqlResponse): string | null => {
    const problem = onlyFieldDenied(r);
    if (problem) return problem;
    const ids = new Set<string>(r.body.data!.patients.edges.map((e: any) => e.node.id));
    const mine = allowedSeeded(who).map((p) => p.id);
    const missing = mine.filter((id) => !ids.has(id));
    if (missing.length) return `${missing.length} of its own patients missing`;
    // Treating roles see exactly their care teams (patients created during the run have none).
    if (isCareTeam(who) && !isClinicWide(who) && ids.size !== mine.length) return `saw ${ids.size} patients, expected ${mine.length}`;
    return null;
  };
}

function buildJobs(count: number): Job[] {
  const jobs: Job[] = [];
  for (let n = 0; n < count; n++) {
    const kind = KINDS[Math.floor(n / PRINCIPALS.length + n) % KINDS.length]!;
    const who = kind === 'faultAudit' || kind === 'faultCommit' ? FAULTY[kind] : PRINCIPALS[n % PRINCIPALS.length]!;
    const mine = allowedSeeded(who);
    const anyPatient = pick(gw.data.patients, n);
    const base = { n, who, kind };
    switch (kind) {
      case 'read':
        jobs.push({ ...base, query: PAGE, expect: readExpectation(who) });
        break;
      case 'byId':
        jobs.push({
          ...base,
          query: `query($id: ID!) { patient(id: $id) { id clinicId mrn givenName ssn } }`,
          variables: { id: anyPatient.id },
          expect: (r) => onlyFieldDenied(r) ?? ((r.body.data?.patient?.id ?? null) === (allowed(who, anyPatient) ? anyPatient.id : null) ? null : 'wrong visibility'),
        });
        break;
      case 'byMrn': {
        const target = n % 2 ? anyPatient : pick(mine, n);
        jobs.push({
          ...base,
          query: `query($mrn: String!) { patientByMrn(mrn: $mrn) { id clinicId mrn givenName } }`,
          variables: { mrn: target.mrn.toLowerCase() },
          expect: (r) => {
            if (who.name === 'reg-multi' && target.mrn === twin.northPatient.mrn) {
              return codesOf(r).join(',') === 'BAD_USER_INPUT' && r.body.data?.patientByMrn == null ? null : 'an ambiguous MRN was not refused';
            }
            return onlyFieldDenied(r) ?? ((r.body.data?.patientByMrn?.id ?? null) === (allowed(who, target) ? target.id : null) ? null : 'wrong visibility');
          },
        });
        break;
      }
      case 'faultAudit':
        jobs.push({ ...base, query: PAGE, expect: refusedWith('AUDIT_UNAVAILABLE') });
        break;
      case 'faultCommit':
        jobs.push({ ...base, query: PAGE, expect: refusedWith('AUDIT_UNAVAILABLE') });
        break;
      case 'ambiguous':
        // Rows are read and decrypted, and another field of the same query fails after its own SQL ran.
        jobs.push({
          ...base,
          query: `query($mrn: String!, $ssn: String!) {
            patients(first: 50) { edges { node { id clinicId mrn givenName email } } }
            byMrn: patientByMrn(mrn: $mrn) { id clinicId mrn }
            bySsn: patientBySsn(ssn: $ssn) { id clinicId givenName }
          }`,
          variables: { mrn: twin.northPatient.mrn, ssn: anyPatient.ssn },
          expect: (r) => {
            const codes = codesOf(r).filter((c) => c !== 'FIELD_DENIED').sort();
            const ambiguous = who.clinics.includes('c-north') && who.clinics.includes('c-south') && isClinicWide(who);
            // Only a role that sees the SSN in full may search by it: here, the registrars.
            const searchesBySsn = who.roles.includes('registrar');
            const expected = [...(ambiguous ? ['BAD_USER_INPUT'] : []), ...(searchesBySsn ? [] : ['FORBIDDEN'])].sort();
            if (codes.join(',') !== expected.join(',')) return `unexpected errors ${codes.join(',')}`;
            if (!r.body.data?.patients) return 'the rest of the query did not stand';
            return (r.body.data.bySsn?.id ?? null) === (searchesBySsn && allowed(who, anyPatient) ? anyPatient.id : null) ? null : 'wrong visibility by SSN';
          },
        });
        break;
      case 'write':
      case 'rollback':
        jobs.push(writeJob(base, mine, kind === 'rollback'));
        break;
    }
  }
  return jobs;
}

const committed = { patients: 0, encounters: 0 };
const rolledBack = { mrns: [] as string[], phones: new Map<string, string>() };

function writeJob(base: { n: number; who: Who; kind: Kind }, mine: SeedPatient[], rollback: boolean): Job {
  const { who, n } = base;
  const target = pick(mine, n);
  const clinic = who.clinics[0]!;
  if (who.roles.includes('registrar')) {
    const mrn = `STORM-${n}`;
    if (!rollback) {
      committed.patients++;
      return {
        ...base,
        query: `mutation($c: ID!, $m: String!) { createPatient(input: { clinicId: $c, mrn: $m, givenName: "Storm" }) { id clinicId mrn } }`,
        variables: { c: clinic, m: mrn },
        expect: (r) => (r.body.errors ? `create failed: ${codesOf(r)}` : r.body.data!.createPatient.mrn === mrn ? null : 'wrong mrn'),
      };
    }
    // Update, then a create that violates the MRN uniqueness: both roll back.
    rolledBack.phones.set(target.id, target.phone);
    rolledBack.mrns.push(mrn);
    return {
      ...base,
      query: `mutation($id: ID!, $c: ID!, $m: String!, $dup: String!) {
        a: updatePatient(id: $id, input: { phone: "+1 555 0999" }) { id phone }
        b: createPatient(input: { clinicId: $c, mrn: $m }) { id }
        c: createPatient(input: { clinicId: $c, mrn: $dup }) { id }
      }`,
      variables: { id: target.id, c: clinic, m: mrn, dup: target.mrn },
      expect: refusedWith('BAD_USER_INPUT'),
    };
  }
  if (who.roles.includes('billing')) {
    // Billing may not write at all: refused before any SQL.
    return {
      ...base,
      query: `mutation($id: ID!) { updatePatient(id: $id, input: { phone: "+1 555 0999" }) { id } }`,
      variables: { id: target.id },
      expect: refusedWith('FORBIDDEN'),
    };
  }
  const notes = who.roles.includes('physician') ? `, notes: "Storm note ${n}"` : '';
  if (!rollback) {
    committed.encounters++;
    return {
      ...base,
      query: `mutation($id: ID!) { addEncounter(patientId: $id, input: { occurredAt: "2025-06-01T10:00:00Z", kind: "visit", reason: "Storm" ${notes} }) { id patientId reason } }`,
      variables: { id: target.id },
      expect: (r) => (r.body.errors ? `addEncounter failed: ${codesOf(r)}` : r.body.data!.addEncounter.patientId === target.id ? null : 'wrong patient'),
    };
  }
  // A good encounter, then one the database refuses: neither remains.
  return {
    ...base,
    query: `mutation($id: ID!) {
      a: addEncounter(patientId: $id, input: { occurredAt: "2025-06-01T10:00:00Z", kind: "visit", reason: "Rolled back" ${notes} }) { id }
      b: addEncounter(patientId: $id, input: { occurredAt: "1901-01-01T00:00:00Z", kind: "visit" }) { id }
    }`,
    variables: { id: target.id },
    expect: refusedWith('INTERNAL'),
  };
}

// Refusals that say nothing of the request ran: no connection came within the pool's timeout, or
// admission refused it. On a loaded machine 40 requests queued on two connections wait past that
// timeout; the gateway answers 503 with Retry-After, and a client sends the request again.
const NOTHING_RAN = new Set(['db_unavailable', 'overloaded']);
const retryable = (r: GqlResponse) =>
  r.status === 503 && r.headers.get('retry-after') !== null && r.body.data == null && (r.body.errors ?? []).some((e) => NOTHING_RAN.has(e.extensions?.reason));

/**
 * Runs every job with at most `width` in flight: far more than the pool's two connections, below
 * the gateway's admission limit. A retryable refusal is sent again after its Retry-After, a few
 * times at most; the last answer is the one checked.
 */
async function storm(jobs: Job[], width: number): Promise<{ job: Job; r: GqlResponse }[]> {
  const out: { job: Job; r: GqlResponse }[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < jobs.length) {
        const job = jobs[next++]!;
        let r = await gw.gql(tokenOf(job.who), job.query, job.variables);
        for (let attempt = 1; attempt < 5 && retryable(r); attempt++) {
          await new Promise((resolve) => setTimeout(resolve, Number(r.headers.get('retry-after')) * 1000));
          r = await gw.gql(tokenOf(job.who), job.query, job.variables);
        }
        out.push({ job, r });
      }
    }),
  );
  return out;
}

describe('150 interleaved requests of 14 principals over a pool of two connections', () => {
  it('no answer carries anything its principal may not see, failures leave nothing, and the pool ends clean', { timeout: 180_000 }, async () => {
    const seededCounts = await gw.admin(async (c) => (await c.query(`SELECT (SELECT count(*) FROM phigate.patients)::int AS p, (SELECT count(*) FROM phigate.encounters)::int AS e`)).rows[0]);
    // The keyring starts cold on purpose: keys load through a pool of their own (src/app.ts), so
    // requests holding both of the main pool's connections while they wait for a key cannot
    // deadlock it, as they did when keys shared that pool.
    const jobs = buildJobs(150);
    expect(new Set(jobs.map((j) => j.kind))).toEqual(new Set(KINDS));
    const results = await storm(jobs, 40);
    expect(results).toHaveLength(150);

    const problems: string[] = [];
    const seen: Seen[] = [];
    for (const { job, r } of results) {
      const label = `#${job.n} ${job.kind}`;
      // Withheld for want of an audit record: 503 with Retry-After; every other answer here is 200.
      const audited = r.body.errors?.some((e) => e.extensions?.code === 'AUDIT_UNAVAILABLE');
      if (r.status !== (audited ? 503 : 200)) problems.push(`${label}: HTTP ${r.status} ${r.text.slice(0, 200)}`);
      if (audited && r.headers.get('retry-after') !== '1') problems.push(`${label}: no Retry-After`);
      const problem = job.expect(r);
      if (problem) problems.push(`${label} (${job.who.name}): ${problem}`);
      seen.push(checkAnswer(job.who, label, r, problems));
    }

    // Ids the answers carried that are not seeded must be rows that were committed, of the principal's rows.
    const unknown = [...new Set(seen.flatMap((s) => s.unknownIds))];
    const found = await gw.admin(async (c) => {
      const patients = (await c.query('SELECT id, clinic_id FROM phigate.patients WHERE id = ANY($1::uuid[])', [unknown])).rows;
      const encounters = (await c.query('SELECT id, patient_id FROM phigate.encounters WHERE id = ANY($1::uuid[])', [unknown])).rows;
      return { patients: new Map(patients.map((p) => [p.id, p.clinic_id])), encounters: new Map(encounters.map((e) => [e.id, e.patient_id])) };
    });
    const byId = seededById();
    for (const s of seen) {
      for (const id of s.unknownIds) {
        const clinic = found.patients.get(id);
        const patientOfEncounter = found.encounters.get(id);
        if (clinic !== undefined) {
          if (!s.who.clinics.includes(clinic) || !isClinicWide(s.who)) problems.push(`${s.label}: ${s.who.name} saw created patient ${id} of ${clinic}`);
        } else if (patientOfEncounter !== undefined) {
          const owner = byId.get(patientOfEncounter);
          if (!owner || !allowed(s.who, owner)) problems.push(`${s.label}: ${s.who.name} saw encounter ${id} of a patient outside its rows`);
        } else {
          problems.push(`${s.label}: ${s.who.name} received id ${id} that no committed row has`);
        }
      }
    }
    expect(problems).toEqual([]);

    // What was committed is there, what was rolled back is not.
    const after = await gw.admin(async (c) =>
      (await c.query(`SELECT (SELECT count(*) FROM phigate.patients)::int AS p, (SELECT count(*) FROM phigate.encounters)::int AS e,
        (SELECT count(*) FROM phigate.encounters WHERE occurred_at < '1902-01-01')::int AS faults`)).rows[0],
    );
    expect(after).toEqual({ p: seededCounts.p + committed.patients, e: seededCounts.e + committed.encounters, faults: 0 });
    // The gateway's own request id of each answer, the one its audit rows carry.
    const idOf = (r: GqlResponse) => r.headers.get('x-request-id') ?? '';
    const rolledBackIds = results.filter(({ job }) => job.kind === 'rollback' || job.kind.startsWith('fault')).map(({ r }) => idOf(r));
    expect(await gw.auditRows(`request_id = ANY($1::text[]) AND action <> 'refused'`, [rolledBackIds])).toEqual([]);
    // Every request that answered data left its audit rows; none that failed did.
    const audited = new Set((await gw.auditRows()).map((a) => a.request_id));
    for (const { job, r } of results) {
      if (job.kind === 'read' && r.body.data) expect(audited.has(idOf(r))).toBe(true);
    }
    // The rolled-back phone changes and patients are nowhere (read back through the gateway: the values are ciphertext).
    const allClinics = await gw.tokenFor('registrar-all-clinics', { roles: ['registrar'], clinics: ['c-north', 'c-south', 'c-east'] });
    for (const [id, phone] of rolledBack.phones) {
      const r = await gw.gql(allClinics, `query($id: ID!) { patient(id: $id) { phone } }`, { id });
      expect(r.body.data!.patient.phone).toBe(phone);
    }
    for (const mrn of rolledBack.mrns) {
      const r = await gw.gql(allClinics, `query($m: String!) { patientByMrn(mrn: $m) { id } }`, { m: mrn });
      expect(r.body.errors).toBeUndefined();
      expect(r.body.data!.patientByMrn).toBeNull();
    }

    // After the storm, a c-east registrar sees c-east rows and nothing else.
    const east = PRINCIPALS.find((w) => w.name === 'reg-east')!;
    const r = await gw.gql(tokenOf(east), PAGE);
    expect(onlyFieldDenied(r)).toBeNull();
    const nodes = r.body.data!.patients.edges.map((e: any) => e.node);
    expect(new Set(nodes.map((n: any) => n.clinicId))).toEqual(new Set(['c-east']));
    const eastSeeded = allowedSeeded(east).map((p) => p.id);
    expect(nodes.map((n: any) => n.id)).toEqual(expect.arrayContaining(eastSeeded));
    const eastCreated = jobs.filter((j) => j.who === east && j.kind === 'write').length;
    expect(nodes).toHaveLength(eastSeeded.length + eastCreated);
    const afterProblems: string[] = [];
    checkAnswer(east, 'after the storm', r, afterProblems);
    expect(afterProblems).toEqual([]);

    // And the pool's two connections carry nothing of anyone.
    expect(gw.pool.totalCount).toBeLessThanOrEqual(2);
    expectClean(await poolConnections());
    expect(await busyAppSessions()).toEqual([]);
  });
});
