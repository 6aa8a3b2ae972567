import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRequestTransaction } from '../../src/db/transaction.ts';
import { patientsByIds } from '../../src/db/patients.ts';
import type { SeedPatient } from '../../src/seed/dataset.ts';
import { readFileSync } from 'node:fs';
import { parsePolicy } from '../../src/policy/load.ts';
import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';
import { POLICY_FILE, startTestGateway, type GqlResponse, type TestGateway } from '../support/gateway.ts';

// Reads are audited by the audit writer's group commits (issue 10) and every audit write is
// checked (issue 11, item 3): whatever makes the audit insert fail or lose rows in the middle of a
// load, no answer carries PHI unless its request's rows are committed, and the refusals are
// AUDIT_UNAVAILABLE with HTTP 503 and Retry-After (issue 11, item 8). A read's transaction is
// READ ONLY and writes nothing.

let gw: TestGateway;
beforeAll(async () => {
  // One principal drives three loads in a minute: neither its fair share nor, on a fast machine,
  // the physician's per-minute PHI cap (phi-caps.test.ts tests both) may answer 429 instead of the
  // audit outcome under test.
  const policy = parsePolicy(readFileSync(POLICY_FILE, 'utf8').replaceAll('rowsPerMinute: 500, phiValuesPerMinute: 10000', 'rowsPerMinute: 1000000, phiValuesPerMinute: 1000000'), PHI_FIELDS);
  gw = await startTestGateway({ patients: 24, poolSize: 6, gatewayOptions: { policy, principals: { concurrency: 5, queue: 100, ratePerSecond: 100_000, burst: 100_000 } } });
});
afterAll(async () => gw?.close());

const ONE = 'query One($id: ID!) { patient(id: $id) { id givenName familyName mrn } }';
const PHI_PER_READ = 3;

const onTeam = (sub: string): SeedPatient[] => gw.data.patients.filter((p) => p.clinicId === 'c-north' && p.careTeam.includes(sub));

/** When a request was sent: before the audit insert was broken, while it was, or after its repair committed. */
type Phase = 'before' | 'broken' | 'repaired';

interface Answer {
  readonly requestId: string;
  readonly patient: SeedPatient;
  readonly phase: Phase;
  readonly r: GqlResponse;
}

/**
 * Workers read patients as fast as they can while `during` runs; every answer is kept with the
 * phase it was sent in. `during` moves the phase and waits on the answers, not on a clock: a loaded
 * machine once answered nothing within a fixed second of breakage.
 */
async function load(workers: number, during: (answers: readonly Answer[], enter: (phase: Phase) => void) => Promise<void>): Promise<Answer[]> {
  const token = await gw.tokenFor('dr-north-1');
  const patients = onTeam('dr-north-1');
  const answers: Answer[] = [];
  let phase: Phase = 'before';
  let stop = false;
  const worker = async (w: number) => {
    for (let i = 0; !stop; i++) {
      const patient = patients[(w + i) % patients.length]!;
      const sentIn = phase;
      const r = await gw.gql(token, ONE, { id: patient.id });
      // The gateway's own id, the one its audit rows carry.
      answers.push({ requestId: r.headers.get('x-request-id')!, patient, phase: sentIn, r });
    }
  };
  const running = Array.from({ length: workers }, (_, w) => worker(w));
  try {
    await during(answers, (next) => (phase = next));
  } finally {
    stop = true;
    await Promise.all(running);
  }
  return answers;
}

const showsPhi = (a: Answer) => a.r.status === 200 && a.r.body.data?.patient != null;

/** Until some answer sent in `phase` is `what`; bounded by the test's timeout, not by a guess at the machine's speed. */
const answered = (answers: readonly Answer[], phase: Phase, what: (a: Answer) => boolean) =>
  expect.poll(() => answers.some((a) => a.phase === phase && what(a)), { timeout: 60_000, interval: 20 }).toBe(true);

/** Each answer either shows PHI with its rows committed, or shows none and says AUDIT_UNAVAILABLE (503, Retry-After). */
async function expectAuditedOrWithheld(answers: readonly Answer[]): Promise<{ shown: number; withheld: number }> {
  const rows = await gw.auditRows('request_id = ANY($1)', [answers.map((a) => a.requestId)]);
  const count = new Map<string, number>();
  for (const row of rows) count.set(row.request_id, (count.get(row.request_id) ?? 0) + 1);
  let shown = 0;
  let withheld = 0;
  for (const { requestId, patient, r } of answers) {
    const leaked = [patient.givenName, patient.familyName, patient.mrn].some((v) => r.text.includes(v));
    if (r.status === 200 && r.body.data?.patient) {
      expect(r.body.data.patient.givenName).toBe(patient.givenName);
      expect(count.get(requestId), `request ${requestId} answered without its audit rows`).toBe(PHI_PER_READ);
      shown++;
    } else {
      expect(leaked, r.text).toBe(false);
      expect(r.status, r.text).toBe(503);
      expect(r.headers.get('retry-after')).toBe('1');
      expect(r.body.errors?.map((e) => e.extensions?.code)).toEqual(['AUDIT_UNAVAILABLE']);
      expect(r.text).not.toMatch(/permission denied|trigger|audit_events|audit_records|PH500|INSERT/i);
      withheld++;
    }
  }
  return { shown, withheld };
}

describe('the audit insert refused in the middle of a load: no PHI leaves', () => {
  // Reads' events go to phigate.audit_records (028), one record per request and patient.
  const breakages: [string, string, string][] = [
    ['insert privilege revoked', 'REVOKE INSERT ON phigate.audit_records FROM phigate_app', ''],
    [
      'a trigger that raises',
      `CREATE FUNCTION public.aw_raise() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by test'; END $$;
       CREATE TRIGGER aw_break BEFORE INSERT ON phigate.audit_records FOR EACH ROW EXECUTE FUNCTION public.aw_raise()`,
      'DROP TRIGGER aw_break ON phigate.audit_records; DROP FUNCTION public.aw_raise()',
    ],
    [
      'a trigger that silently drops some events of a record',
      `CREATE FUNCTION public.aw_drop() RETURNS trigger LANGUAGE plpgsql AS $$
         DECLARE i integer := array_position(NEW.fields, 'mrn');
         BEGIN
           IF i IS NOT NULL THEN
             NEW.actions := NEW.actions[:i - 1] || NEW.actions[i + 1:];
             NEW.type_names := NEW.type_names[:i - 1] || NEW.type_names[i + 1:];
             NEW.fields := NEW.fields[:i - 1] || NEW.fields[i + 1:];
             NEW.record_ids := NEW.record_ids[:i - 1] || NEW.record_ids[i + 1:];
             NEW.details := NEW.details[:i - 1] || NEW.details[i + 1:];
           END IF;
           RETURN NEW;
         END $$;
       CREATE TRIGGER aw_break BEFORE INSERT ON phigate.audit_records FOR EACH ROW EXECUTE FUNCTION public.aw_drop()`,
      'DROP TRIGGER aw_break ON phigate.audit_records; DROP FUNCTION public.aw_drop()',
    ],
    [
      'a trigger that silently drops whole records',
      `CREATE FUNCTION public.aw_drop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
       CREATE TRIGGER aw_break BEFORE INSERT ON phigate.audit_records FOR EACH ROW WHEN ('mrn' = ANY (NEW.fields)) EXECUTE FUNCTION public.aw_drop()`,
      'DROP TRIGGER aw_break ON phigate.audit_records; DROP FUNCTION public.aw_drop()',
    ],
  ];
  // The grant 028 gives back after the REVOKE above.
  const GRANT = `GRANT INSERT (batch_id, request_id, actor, actor_kind, client_addr, credential_id, role, purpose, break_glass,
    grant_id, patient_id, actions, type_names, fields, record_ids, details) ON phigate.audit_records TO phigate_app`;

  for (const [name, breakIt, repair] of breakages) {
    it(name, { timeout: 240_000 }, async () => {
      const answers = await load(6, async (answers, enter) => {
        await answered(answers, 'before', showsPhi);
        await gw.admin((c) => c.query(breakIt));
        enter('broken');
        try {
          await answered(answers, 'broken', (a) => !showsPhi(a));
        } finally {
          await gw.admin((c) => c.query(repair || GRANT));
        }
        enter('repaired');
        await answered(answers, 'repaired', showsPhi);
      });
      const { shown, withheld } = await expectAuditedOrWithheld(answers);
      // The load did run into the broken audit, and recovered from it.
      expect(withheld).toBeGreaterThan(0);
      expect(shown).toBeGreaterThan(0);
      // A request sent after the repair committed meets only batches begun after it.
      const repaired = answers.filter((a) => a.phase === 'repaired');
      expect(repaired.length).toBeGreaterThan(0);
      expect(repaired.filter((a) => !showsPhi(a)).map((a) => a.r.text)).toEqual([]);
    });
  }
});

describe('a read transaction writes nothing', () => {
  it('the gateway reads in BEGIN READ ONLY transactions with no INSERT, charge or other write in them', async () => {
    const seen: string[][] = [];
    // Each connection's open transaction: the pool's other connections may carry statements outside
    // any transaction meanwhile (a /readyz probe's), which are no read's.
    const open = new Map<pg.PoolClient, string[]>();
    const wrapped = new WeakSet<pg.PoolClient>();
    const observe = (client: pg.PoolClient) => {
      if (wrapped.has(client)) return;
      wrapped.add(client);
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      (client as { query: unknown }).query = (...args: unknown[]) => {
        // A group of statements sharing one Sync (src/db/one-sync.ts) is handed over as one query.
        const group = (args[0] as { parts?: readonly { query: { text: string } }[] }).parts;
        const texts = typeof args[0] === 'string' ? [args[0]] : (group?.map((p) => p.query.text) ?? [(args[0] as { text: string }).text]);
        for (const text of texts) {
          if (/^BEGIN/.test(text)) {
            open.set(client, []);
            seen.push(open.get(client)!);
          }
          open.get(client)?.push(text);
          if (/^(COMMIT|ROLLBACK)/.test(text)) open.delete(client);
        }
        return query(...args);
      };
    };
    gw.pool.on('acquire', observe);
    try {
      const patient = onTeam('dr-north-1')[0]!;
      const r = await gw.gql(await gw.tokenFor('dr-north-1'), ONE, { id: patient.id });
      expect(r.body.data!.patient.givenName).toBe(patient.givenName);
      const page = await gw.gql(await gw.tokenFor('reg-north'), '{ patients(first: 50) { edges { node { ssn encounters { reason } } } } }');
      expect(page.body.data!.patients.edges.length).toBeGreaterThan(0);
    } finally {
      gw.pool.off('acquire', observe);
    }
    expect(seen).toHaveLength(2);
    for (const statements of seen) {
      expect(statements[0]).toBe('BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY');
      expect(statements.at(-1)).toBe('COMMIT');
      for (const s of statements) expect(s).not.toMatch(/\b(INSERT|UPDATE|DELETE|consume_phi_usage|charge_phi_usage)\b/);
    }
  });

  it('such a transaction, with what a read sends, is never given a transaction id: its COMMIT writes no WAL record', async () => {
    const patient = onTeam('dr-north-1')[0]!;
    const ctx = { actor: 'dr-north-1', actorKind: 'user' as const, roles: ['physician'], clinics: ['c-north'], requestId: 'ro-1', purpose: 'treatment' };
    const tx = openRequestTransaction(gw.pool, ctx, {}, { text: 'SELECT * FROM phigate.phi_usage_left($1, $2, $3, $4)', values: ['user', 'dr-north-1', 10, 10], onRows: () => undefined });
    tx.readOnly();
    expect((await patientsByIds(tx, [patient.id])).map((p) => p.id)).toEqual([patient.id]);
    const { rows } = await tx.query<{ xid: string | null; ro: string }>(
      `SELECT txid_current_if_assigned() AS xid, current_setting('transaction_read_only') AS ro`,
    );
    expect(rows[0]).toMatchObject({ xid: null, ro: 'on' });
    // A write would need a transaction id; a read-only transaction refuses to get one.
    await expect(tx.query(`SELECT phigate.consume_phi_usage('user', 'dr-north-1', 1, 1, 10, 10)`)).rejects.toMatchObject({ code: '25006' });
    await tx.rollback();
  });
});
