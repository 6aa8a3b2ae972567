import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestDatabase, type TestDatabase } from '../../support/db.ts';

// The compliance views and the alert sweep on 200,000 audit events: each filter of auditEvents is
// answered through an index (the plans PostgreSQL chose are read back with auto_explain), and the
// timings are printed for bench/README.md.

const EVENTS = 200_000;
const CLINICS = ['c-north', 'c-south', 'c-east'];

let db: TestDatabase;
let admin: pg.Client;
const plans: string[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  admin = new pg.Client({ connectionString: db.adminUrl });
  await admin.connect();
  admin.on('notice', (n) => plans.push(n.message ?? ''));
  // 3,000 patients over three clinics, 300 actors, a month of events in time order: reads, masked
  // reads and denials make most of it, as in production; a few break-glass reads and searches.
  await admin.query(`INSERT INTO phigate.patient_clinics (patient_id, clinic_id)
    SELECT md5('p' || g)::uuid, (ARRAY['c-north', 'c-south', 'c-east'])[1 + g % 3] FROM generate_series(1, 3000) g`);
  await admin.query(`INSERT INTO phigate.audit_events (occurred_at, request_id, actor, actor_kind, role, purpose, break_glass, action, type_name, field, patient_id, detail)
    SELECT now() - interval '30 days' + (g * interval '30 days' / $1), 'req-' || (g / 9), 'user-' || (g / 9 % 300), 'user', 'physician', 'treatment',
           g % 5000 = 0,
           CASE WHEN g % 1000 = 7 THEN 'search' WHEN g % 13 = 0 THEN 'denied' WHEN g % 7 = 0 THEN 'masked' ELSE 'read' END,
           'Patient', 'givenName',
           CASE WHEN g % 1000 = 7 AND g % 2 = 1 THEN NULL ELSE md5('p' || (1 + (g / 9) % 3000))::uuid END,
           CASE WHEN g % 1000 = 7 THEN 'ssn:hit' END
    FROM generate_series(1, $1) g`, [EVENTS]);
  // What autovacuum does behind a production log (autosummarize), done at once here.
  await admin.query(`SELECT brin_summarize_new_values('phigate.audit_events_occurred_brin')`);
  await admin.query('ANALYZE phigate.audit_events; ANALYZE phigate.patient_clinics');
  await admin.query(`LOAD 'auto_explain'`);
  await admin.query(`SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; SET auto_explain.log_level = notice; SET auto_explain.log_analyze = on; SET auto_explain.log_timing = off`);
}, 120_000);
afterAll(async () => {
  await admin?.end();
  await db?.drop();
});

/** Calls a view as a compliance request of `clinics` would, and returns rows, the elapsed ms and the inner plan. */
async function asCompliance(sql: string, params: unknown[], clinics = CLINICS) {
  await admin.query('BEGIN');
  try {
    await admin.query(`SELECT set_config('phigate.roles', 'compliance', true), set_config('phigate.clinics', $1, true)`, [clinics.join(',')]);
    plans.length = 0;
    const started = performance.now();
    const { rows } = await admin.query(sql, params);
    const ms = performance.now() - started;
    const plan = plans.find((p) => p.includes('phigate.audit_events e')) ?? plans.join('\n');
    return { rows, ms, plan };
  } finally {
    await admin.query('ROLLBACK');
  }
}

const page = (f: { patient?: string; actor?: string; action?: string; bg?: boolean; since?: string; until?: string; before?: number }, clinics?: string[]) =>
  asCompliance('SELECT * FROM phigate.compliance_audit_events($1, $2, $3, $4, $5, $6, $7, 51)', [
    f.patient ?? null, f.actor ?? null, f.action ?? null, f.bg ?? false, f.since ?? null, f.until ?? null, f.before ?? null,
  ], clinics);

describe(`compliance views on ${EVENTS.toLocaleString('en')} events`, () => {
  it('answers every filter through an index, never a scan of the whole log', async () => {
    const patient = (await admin.query(`SELECT md5('p42')::uuid AS id`)).rows[0].id as string;
    const mid = new Date(Date.now() - 15 * 86_400_000).toISOString();
    const cases = {
      'no filter': await page({}),
      'one clinic': await page({}, ['c-east']),
      patientId: await page({ patient }),
      actor: await page({ actor: 'user-17' }),
      'action (rare)': await page({ action: 'search' }),
      'action (common)': await page({ action: 'denied' }),
      breakGlassOnly: await page({ bg: true }),
      'since..until (a day, mid-month)': await page({ since: mid, until: new Date(Date.parse(mid) + 86_400_000).toISOString() }),
      'after (page 100)': await page({ before: EVENTS - 5_000 }),
    };
    for (const [name, r] of Object.entries(cases)) {
      console.log(`auditEvents ${name}: ${r.rows.length} rows, ${r.ms.toFixed(1)} ms\n${r.plan}`);
      expect(r.rows.length, name).toBeGreaterThan(0);
      expect(r.plan, name).not.toMatch(/Seq Scan on audit_events/);
    }
    expect(cases.patientId.plan).toMatch(/audit_events_patient/);
    expect(cases.actor.plan).toMatch(/audit_events_actor/);
    expect(cases['action (rare)'].plan).toMatch(/audit_events_rare_action/);
    expect(cases.breakGlassOnly.plan).toMatch(/audit_events_break_glass/);
    expect(cases['since..until (a day, mid-month)'].plan).toMatch(/audit_events_occurred_brin|audit_events_pkey/);
  });

  it('accounts for one patient from its own events only', async () => {
    const patient = (await admin.query(`SELECT md5('p42')::uuid AS id`)).rows[0].id as string;
    const r = await asCompliance('SELECT * FROM phigate.compliance_disclosures($1, NULL, NULL, 1001)', [patient]);
    console.log(`disclosures: ${r.rows.length} rows, ${r.ms.toFixed(1)} ms\n${r.plan}`);
    expect(r.rows.length).toBeGreaterThan(0);
    expect(r.plan).toMatch(/audit_events_patient/);
  });

  it('sweeps a minute of a busy log for alerts in milliseconds', async () => {
    // A busy minute: 20,000 events of 300 actors just now (each reading ~67 patients, a bulk read
    // past 50, and ~5 denials, below 20), then one sweep over it.
    await admin.query(`UPDATE phigate.alert_sweep SET swept_until = clock_timestamp()`);
    await admin.query(`INSERT INTO phigate.audit_events (occurred_at, request_id, actor, actor_kind, role, purpose, action, type_name, field, patient_id)
      SELECT clock_timestamp(), 'busy-' || (g / 9), 'user-' || (g % 300), 'user', 'physician', 'treatment',
             CASE WHEN g % 13 = 0 THEN 'denied' ELSE 'read' END, 'Patient', 'givenName', md5('p' || (1 + (g / 300) % 3000))::uuid
      FROM generate_series(1, 20000) g`);
    const started = performance.now();
    const { rows } = await admin.query(`SELECT * FROM phigate.sweep_alerts(50, 20, '00:00', '24:00', 'UTC', 0)`);
    const ms = performance.now() - started;
    console.log(`sweep of 20,000 events of one minute: ${rows.length} alerts, ${ms.toFixed(1)} ms\n${plans.filter((p) => p.includes('alerts_raised')).join('\n')}`);
    expect(rows.length).toBe(300);
    expect(new Set(rows.map((r) => r.kind))).toEqual(new Set(['bulk_read']));
  });
});
