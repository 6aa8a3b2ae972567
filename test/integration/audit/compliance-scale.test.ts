import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestDatabase, type TestDatabase } from '../../support/db.ts';

// The compliance views and the alert sweep on 200,000 audit events in the narrow layout (028):
// 20,000 events written before it (audit_events_v1), then requests of 9 events about one patient,
// each a record of audit_records as the writer stores them. Each filter of auditEvents is answered
// through an index (the plans PostgreSQL chose are read back with auto_explain), pages equal what
// the view phigate.audit_events gives, and the timings are printed for bench/README.md.

const EVENTS = 200_000;
const V1_EVENTS = 20_000;
const V3_RECORDS = 500;
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
  // reads and denials make most of it, as in production; a few break-glass requests and searches.
  await admin.query(`INSERT INTO phigate.patient_clinics (patient_id, clinic_id)
    SELECT md5('p' || g)::uuid, (ARRAY['c-north', 'c-south', 'c-east'])[1 + g % 3] FROM generate_series(1, 3000) g`);
  const at = (g: string) => `now() - interval '30 days' + (${g} * interval '30 days' / ${EVENTS})`;
  const action = (g: string) => `CASE WHEN ${g} % 13 = 0 THEN 'denied' WHEN ${g} % 7 = 0 THEN 'masked' ELSE 'read' END`;
  // Request q: a search (alone: it may name no patient) when q % 111 = 7, else 9 field events about one patient.
  const search = (q: string) => `${q} % 111 = 7`;
  const patient = (q: string) => `CASE WHEN ${search(q)} AND ${q} % 2 = 1 THEN NULL ELSE md5('p' || (1 + ${q} % 3000))::uuid END`;
  // The events of before the migration, then the record sequence placed above them as 028 does.
  await admin.query(`INSERT INTO phigate.audit_events_v1 (occurred_at, request_id, actor, actor_kind, role, purpose, break_glass, action, type_name, field, patient_id, detail)
    SELECT ${at('g')}, 'req-' || (g / 9), 'user-' || (g / 9 % 300), 'user', 'physician', 'treatment', (g / 9) % 555 = 0,
           CASE WHEN ${search('(g / 9)')} THEN 'search' ELSE ${action('g')} END, 'Patient', 'givenName', ${patient('(g / 9)')},
           CASE WHEN ${search('(g / 9)')} THEN 'ssn:hit' END
    FROM generate_series(0, ${V1_EVENTS - 1}) g`);
  await admin.query(`SELECT setval(pg_get_serial_sequence('phigate.audit_records', 'id'), ((SELECT max(id) FROM phigate.audit_events_v1) >> 16) + 1, false)`);
  await admin.query(`INSERT INTO phigate.audit_records (occurred_at, request_id, actor, actor_kind, role, purpose, break_glass, patient_id,
                                                         actions, type_names, fields, record_ids, details)
    SELECT ${at('(q * 9)')}, 'req-' || q, 'user-' || (q % 300), 'user', 'physician', 'treatment', q % 555 = 0, ${patient('q')},
           CASE WHEN ${search('q')} THEN '{search}'::text[] ELSE ARRAY(SELECT ${action('g')} FROM generate_series(q * 9, q * 9 + 8) g) END,
           array_fill('Patient'::text, ARRAY[CASE WHEN ${search('q')} THEN 1 ELSE 9 END]),
           CASE WHEN ${search('q')} THEN '{patientBySsn}'::text[] ELSE '{mrn,ssn,givenName,familyName,birthDate,phone,email,address,clinicId}' END,
           array_fill(NULL::uuid, ARRAY[CASE WHEN ${search('q')} THEN 1 ELSE 9 END]),
           CASE WHEN ${search('q')} THEN '{ssn:hit}'::text[] ELSE array_fill(NULL::text, ARRAY[9]) END
    FROM generate_series(${Math.floor(V1_EVENTS / 9) + 1}, ${Math.floor(EVENTS / 9)}) q`);
  // Pages since 061: records of 40 patients sharing a shape of 3 events (audit_records_v3), over the
  // same month, 60,000 events more.
  await admin.query(`INSERT INTO phigate.audit_records_v3 (occurred_at, request_id, actor, actor_kind, role, purpose, break_glass, patient_ids,
                                                            actions, type_names, fields, record_ids, details)
    SELECT ${at('(q * 120)')}, 'page-' || q, 'user-' || (q % 300), 'user', 'registrar', 'treatment', false,
           ARRAY(SELECT md5('p' || (1 + (q * 40 + k) % 3000))::uuid FROM generate_series(0, 39) k),
           '{read,masked,read}', '{Patient,Patient,Patient}', '{mrn,ssn,givenName}', array_fill(NULL::uuid, ARRAY[120]), '{NULL,NULL,NULL}'
    FROM generate_series(0, ${V3_RECORDS - 1}) q`);
  // What autovacuum does behind a production log (autosummarize), done at once here.
  await admin.query(`SELECT brin_summarize_new_values('phigate.audit_events_occurred_brin'), brin_summarize_new_values('phigate.audit_records_occurred_brin'),
                            brin_summarize_new_values('phigate.audit_records_v3_occurred_brin')`);
  await admin.query('ANALYZE phigate.audit_events_v1; ANALYZE phigate.audit_records; ANALYZE phigate.audit_records_v3; ANALYZE phigate.audit_record_patients; ANALYZE phigate.patient_clinics');
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
    const plan = plans.filter((p) => /phigate\.audit_(records|records_v3|events|events_v1) e\b/.test(p)).join('\n') || plans.join('\n');
    return { rows, ms, plan };
  } finally {
    await admin.query('ROLLBACK');
  }
}

const page = (f: { patient?: string; actor?: string; action?: string; bg?: boolean; since?: string; until?: string; before?: string }, clinics?: string[]) =>
  asCompliance('SELECT * FROM phigate.compliance_audit_events($1, $2, $3, $4, $5, $6, $7, 51)', [
    f.patient ?? null, f.actor ?? null, f.action ?? null, f.bg ?? false, f.since ?? null, f.until ?? null, f.before ?? null,
  ], clinics);

/** The same page read from the view by the obvious query: what the function must return. */
async function fromView(f: { patient?: string; action?: string; before?: bigint }) {
  const { rows } = await admin.query(
    `SELECT e.id FROM phigate.audit_events e
     WHERE ($1::uuid IS NULL OR e.patient_id = $1) AND ($2::text IS NULL OR e.action = $2) AND ($3::bigint IS NULL OR e.id < $3)
     ORDER BY e.id DESC LIMIT 51`,
    [f.patient ?? null, f.action ?? null, f.before ?? null],
  );
  return rows.map((r) => String(r.id));
}

describe(`compliance views on about ${EVENTS.toLocaleString('en')} events`, () => {
  it('answers every filter through an index, never a scan of the whole log', async () => {
    const patient = (await admin.query(`SELECT md5('p42')::uuid AS id`)).rows[0].id as string;
    const mid = new Date(Date.now() - 15 * 86_400_000).toISOString();
    const { rows: [ids] } = await admin.query(`SELECT max(id) AS last, min(id) AS first FROM phigate.audit_records`);
    const recordsFrom = BigInt(ids.first) << 16n;
    const cases = {
      'no filter': await page({}),
      'one clinic': await page({}, ['c-east']),
      patientId: await page({ patient }),
      actor: await page({ actor: 'user-17' }),
      'action (rare)': await page({ action: 'search' }),
      'action (common)': await page({ action: 'denied' }),
      breakGlassOnly: await page({ bg: true }),
      'since..until (a day, mid-month)': await page({ since: mid, until: new Date(Date.parse(mid) + 86_400_000).toISOString() }),
      'after (page 100)': await page({ before: String((BigInt(ids.last) - 560n) << 16n) }),
      'after, across the migration': await page({ before: String(recordsFrom + 5n) }),
      'after, events before the migration only': await page({ before: String(recordsFrom - 1000n) }),
    };
    for (const [name, r] of Object.entries(cases)) {
      console.log(`auditEvents ${name}: ${r.rows.length} rows, ${r.ms.toFixed(1)} ms\n${r.plan}`);
      expect(r.rows.length, name).toBeGreaterThan(0);
      expect(r.plan, name).not.toMatch(/Seq Scan on audit_(records|events)/);
      const got = r.rows.map((row) => BigInt(row.id));
      expect(got.every((id, i) => i === 0 || id < got[i - 1]!), name).toBe(true);
    }
    expect(cases.patientId.plan).toMatch(/audit_records_patient/);
    expect(cases.patientId.plan).toMatch(/audit_record_patients_patient/);
    expect(cases.patientId.rows.some((row) => row.request_id.startsWith('page-'))).toBe(true);
    expect(cases.actor.plan).toMatch(/audit_records_actor/);
    expect(cases['action (rare)'].plan).toMatch(/audit_records_rare_action/);
    expect(cases.breakGlassOnly.plan).toMatch(/audit_records_break_glass/);
    expect(cases['since..until (a day, mid-month)'].plan).toMatch(/audit_records_occurred_brin|audit_records_pkey/);
    expect(cases['after, events before the migration only'].plan).toMatch(/using audit_events_pkey on audit_events_v1/);
    // The page across the migration: the first record's first 5 events, then the newest old ones.
    expect(cases['after, across the migration'].rows).toHaveLength(51);
    expect(cases['after, across the migration'].rows.filter((row) => BigInt(row.id) >= recordsFrom)).toHaveLength(5);
    // Pages equal the view's, event for event.
    const same = async (name: keyof typeof cases, f: Parameters<typeof fromView>[0]) =>
      expect(cases[name].rows.map((row) => String(row.id)), name).toEqual(await fromView(f));
    await same('no filter', {});
    await same('patientId', { patient });
    await same('action (rare)', { action: 'search' });
    await same('action (common)', { action: 'denied' });
    await same('after, across the migration', { before: recordsFrom + 5n });
    await same('after, events before the migration only', { before: recordsFrom - 1000n });
  });

  it('accounts for one patient from its own events only', async () => {
    const patient = (await admin.query(`SELECT md5('p42')::uuid AS id`)).rows[0].id as string;
    const r = await asCompliance('SELECT * FROM phigate.compliance_disclosures($1, NULL, NULL, 1001)', [patient]);
    console.log(`disclosures: ${r.rows.length} rows, ${r.ms.toFixed(1)} ms\n${r.plan}`);
    expect(r.rows.length).toBeGreaterThan(0);
    expect(r.plan).toMatch(/audit_records_patient/);
    expect(r.plan).toMatch(/audit_record_patients_patient/);
    expect(r.rows.some((row) => row.request_id.startsWith('page-'))).toBe(true);
  });

  it('sweeps a minute of a busy log for alerts in milliseconds', async () => {
    // A busy minute: 60,300 events of 300 actors just now (each reading 67 patients, a bulk read
    // past 50, and ~5 denials, below 20), then one sweep over it.
    await admin.query(`UPDATE phigate.alert_sweep SET swept_until = clock_timestamp()`);
    // As the writer stores them: per actor, 67 requests about one patient each, of 3 events; every 13th ends in a denial.
    // All at the INSERT's now(), one minute: the rows take a second or more to write, and with
    // clock_timestamp() a minute ending meanwhile split each actor's 67 patients between two
    // minutes, neither past 50, so the sweep rightly raised none (0 alerts instead of 300).
    await admin.query(`INSERT INTO phigate.audit_records (occurred_at, request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
      SELECT now(), 'busy-' || g, 'user-' || (g % 300), 'user', 'physician', 'treatment', md5('p' || (1 + (g / 300) % 3000))::uuid,
             CASE WHEN g % 13 = 0 THEN '{read,read,denied}'::text[] ELSE '{read,read,read}' END, '{Patient,Patient,Patient}', '{givenName,familyName,ssn}',
             '{NULL,NULL,NULL}', '{NULL,NULL,NULL}'
      FROM generate_series(1, 20100) g`);
    const started = performance.now();
    const { rows } = await admin.query(`SELECT * FROM phigate.sweep_alerts(50, 20, '00:00', '24:00', 'UTC', 0)`);
    const ms = performance.now() - started;
    console.log(`sweep of 60,300 events (20,100 records) of one minute: ${rows.length} alerts, ${ms.toFixed(1)} ms\n${plans.filter((p) => p.includes('alerts_raised')).join('\n')}`);
    expect(rows.length).toBe(300);
    expect(new Set(rows.map((r) => r.kind))).toEqual(new Set(['bulk_read']));
  });
});
