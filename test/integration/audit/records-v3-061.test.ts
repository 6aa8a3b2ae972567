import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { decodeLeaf } from '../../../src/audit/canonical-decode.ts';
import type { AuditAction, AuditEvent, AuditRequest } from '../../../src/audit/event.ts';
import { parseVerifierKey, verifierKey, type NoteSigner } from '../../../src/audit/log/note.ts';
import { checkProof } from '../../../src/audit/log/proof.ts';
import { checkpoint, sealAll } from '../../../src/audit/log/seal.ts';
import { fileSigner } from '../../../src/audit/log/signer.ts';
import { deliver } from '../../../src/audit/sink/deliver.ts';
import { fileSink } from '../../../src/audit/sink/file.ts';
import { describeLeaf, proveEvent } from '../../../src/audit/verify/prove.ts';
import { retainAuditEvents } from '../../../src/audit/verify/retain.ts';
import { verifyLog } from '../../../src/audit/verify/verify.ts';
import { createAuditWriter, type AuditWriter } from '../../../src/audit/writer.ts';
import { ensureAppLogin, migrate, MIGRATIONS_DIR } from '../../../src/db/migrate.ts';
import { createPool, type Pool } from '../../../src/db/pool.ts';
import { createLogger } from '../../../src/log.ts';
import { withClient } from '../../support/db.ts';
import { TEST_APP_PASSWORD, TEST_APP_ROLE, withDatabase } from '../../support/global-setup.ts';

// 061_audit_records_v3.sql: the patients of a page that share a (group, shape) are one row of
// phigate.audit_records_v3. One database is migrated in steps: v1 events before 028, v2 records
// written by the writer before 061, then 061 over them; then the writer writes a page (v3) and a
// read by id (v2). The old rows read as they did, the new rows are the events that were written,
// and the log over v1, v2 and v3 leaves seals, delivers, verifies and proves.

const ORIGIN = 'phigate.test/records-v3';
let dir: string;
let signer: NoteSigner;
let adminUrl: string;
let appUrl: string;
let name: string;
let pool: Pool;
let writer: AuditWriter;

const admin = <T>(fn: (c: pg.Client) => Promise<T>) => withClient(adminUrl, fn);

/** Migrates the database with the migrations numbered up to `last` (all when null). */
async function migrateTo(last: number | null): Promise<void> {
  const files = (await readdir(MIGRATIONS_DIR)).filter((f) => f.endsWith('.sql'));
  const upTo = path.join(dir, `m-${last ?? 'all'}`);
  await mkdir(upTo);
  for (const f of files) if (last === null || Number(f.slice(0, 3)) <= last) await symlink(path.join(MIGRATIONS_DIR, f), path.join(upTo, f));
  await migrate(adminUrl, { dir: upTo });
}

const request = (id: string): AuditRequest => ({ requestId: id, actor: 'reg-v3', actorKind: 'user', clientAddr: '10.0.0.3' });
const read = (patientId: string | null, typeName: string, field: string, recordId: string | null = null, action: AuditAction = 'read'): AuditEvent => ({
  action, typeName, field, patientId, recordId, role: 'registrar', purpose: 'treatment', breakGlass: false,
});

/** A page as the gateway records it: each patient's fields, then the encounters' fields. */
function page(patients: readonly string[], encounters: (p: number) => number): AuditEvent[] {
  const events: AuditEvent[] = [];
  const later: AuditEvent[] = [];
  patients.forEach((p, i) => {
    for (const f of ['mrn', 'givenName', 'familyName']) events.push(read(p, 'Patient', f));
    events.push(read(p, 'Patient', 'ssn', null, 'masked'));
    for (let k = 0; k < encounters(i); k++) {
      const id = randomUUID();
      later.push(read(p, 'Encounter', 'kind', id), read(p, 'Encounter', 'notes', id, 'denied'));
    }
  });
  return [...events, ...later];
}

const COLUMNS = 'request_id, actor, actor_kind, role, purpose, break_glass, client_addr, action, type_name, field, patient_id, record_id, detail, grant_id, credential_id, batch_id';
const eventsOf = (requestId: string) =>
  admin(async (c) => (await c.query(`SELECT id, ${COLUMNS} FROM phigate.audit_events WHERE request_id = $1 ORDER BY id`, [requestId])).rows);
const key = (e: { action: string; typeName?: string; type_name?: string; field: string | null; patientId?: string | null; patient_id?: string | null; recordId?: string | null; record_id?: string | null }) =>
  [e.action, e.typeName ?? e.type_name, e.field, e.patientId ?? e.patient_id, e.recordId ?? e.record_id].join('|');

/**
 * Seals every committed row. The sealer stops below the oldest transaction running anywhere in the
 * cluster, which other test files share: it goes round until nothing is left.
 */
async function sealEverything(): Promise<void> {
  const unsealed = () =>
    admin(async (c) =>
      Number((await c.query<{ n: string }>(
        `SELECT (SELECT count(*) FROM phigate.audit_records r WHERE NOT EXISTS (SELECT 1 FROM phigate.audit_log l WHERE l.event_id = r.id << 16))
              + (SELECT count(*) FROM phigate.audit_records_v3 r WHERE NOT EXISTS (SELECT 1 FROM phigate.audit_log l WHERE l.event_id = r.id << 16))
              + (SELECT count(*) FROM phigate.audit_events_v1 e WHERE NOT EXISTS (SELECT 1 FROM phigate.audit_log l WHERE l.event_id = e.id)) AS n`,
      )).rows[0]!.n),
    );
  for (;;) {
    await sealAll(pool, 1000);
    if ((await unsealed()) === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'phigate-v3-'));
  signer = await fileSigner(path.join(dir, 'key.pem'), ORIGIN);
  const cluster = inject('phigateDb').adminUrl;
  name = `phigate_t_v3_${randomBytes(5).toString('hex')}`;
  await withClient(cluster, (c) => c.query(`CREATE DATABASE ${name}`));
  adminUrl = withDatabase(cluster, name);
  const u = new URL(adminUrl);
  [u.username, u.password] = [TEST_APP_ROLE, TEST_APP_PASSWORD];
  appUrl = u.toString();
});
afterAll(async () => {
  await writer?.close();
  await pool?.end();
  await withClient(inject('phigateDb').adminUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  await rm(dir, { recursive: true, force: true });
});

// One story in steps: migrate to 027, write v1 events, to 060, write v2 records, then to the end,
// and each test after reads what the ones before it wrote. Its order is the test: never shuffled.
describe('061: records of several patients (v3)', { shuffle: false }, () => {
  const patients = Array.from({ length: 5 }, () => randomUUID());
  const pageId = `v3-page-${randomUUID()}`;
  const byId = `v3-by-id-${randomUUID()}`;
  let written: AuditEvent[];
  let before: unknown[];

  it('migrates over v1 events and v2 records, which read as they did', async () => {
    await migrateTo(27);
    await admin((c) =>
      c.query(`INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name, field, patient_id)
               SELECT 'v3-v1-' || g, 'reg-v3', 'user', 'treatment', 'read', 'Patient', 'ssn', $1 FROM generate_series(1, 3) g`, [patients[0]]),
    );
    await migrateTo(60);
    await ensureAppLogin(adminUrl, appUrl);
    pool = createPool(appUrl, { max: 2 });
    writer = createAuditWriter({ pool, queueLimit: 100, logger: createLogger('silent') });
    // The writer before 061 wrote a record per patient; a batch of one patient each still does.
    await writer.record(request('v3-v2-a'), page([patients[0]!], () => 1));
    await writer.record(request('v3-v2-b'), page([patients[1]!], () => 2));
    const old = () => admin(async (c) => (await c.query(`SELECT id, ${COLUMNS} FROM phigate.audit_events ORDER BY id`)).rows);
    before = await old();
    expect(before).toHaveLength(3 + 6 + 8);
    await migrateTo(null);
    expect(await old()).toEqual(before);
    expect(await admin(async (c) => (await c.query('SELECT count(*)::int AS n FROM phigate.audit_records_v3')).rows[0].n)).toBe(0);
  });

  it('writes a page of patients of one shape as one v3 record, and the view gives back every event written', async () => {
    // Patients 0-2 have one encounter (one shape), 3 has two (a shape of its own: a v2 record),
    // 4 has none (a second shape); an event about no patient is a v2 record too.
    written = [...page(patients, (i) => (i < 3 ? 1 : i === 3 ? 2 : 0)), read(null, 'Query', 'patients', null, 'search')];
    await writer.record(request(pageId), written);
    await writer.record(request(byId), page([patients[2]!], () => 0));
    const rows = await admin(async (c) =>
      (await c.query(`SELECT cardinality(patient_ids) AS patients, cardinality(actions) AS shape, cardinality(record_ids) AS events
                      FROM phigate.audit_records_v3 WHERE request_id = $1 ORDER BY id`, [pageId])).rows,
    );
    expect(rows).toEqual([{ patients: 3, shape: 6, events: 18 }]);
    const v2 = await admin(async (c) => (await c.query('SELECT count(*)::int AS n FROM phigate.audit_records WHERE request_id = ANY ($1)', [[pageId, byId]])).rows[0].n);
    expect(v2).toBe(4);
    const events = await eventsOf(pageId);
    // The same rows the v2 layout gave: every event written once, with the request's facts.
    expect(events.map(key).sort()).toEqual(written.map(key).sort());
    expect(new Set(events.map((e) => e.id)).size).toBe(written.length);
    for (const e of events) expect(e).toMatchObject({ actor: 'reg-v3', actor_kind: 'user', role: 'registrar', purpose: 'treatment', break_glass: false, client_addr: '10.0.0.3' });
    // Within the v3 record, patient by patient in the order of their first event, each in the shape's order.
    const v3 = events.filter((e) => patients.slice(0, 3).includes(e.patient_id));
    expect(v3.map((e) => e.patient_id)).toEqual(patients.slice(0, 3).flatMap((p) => Array<string>(6).fill(p)));
    expect(v3.map((e) => BigInt(e.id) - BigInt(v3[0]!.id))).toEqual(v3.map((_, i) => BigInt(i)));
    expect((await eventsOf(byId)).map(key).sort()).toEqual(page([patients[2]!], () => 0).map((e) => key({ ...e, recordId: null })).sort());
    expect(await eventsOf('v3-v2-a')).toEqual(before.filter((e) => (e as { request_id: string }).request_id === 'v3-v2-a'));
  });

  it('finds a patient\'s events of every kind through the patient\'s indexes, in the view as auditors query it', async () => {
    const ofPatient = (p: string) =>
      admin(async (c) => (await c.query(`SELECT id, ${COLUMNS} FROM phigate.audit_events WHERE patient_id = $1 ORDER BY id`, [p])).rows);
    const all = await admin(async (c) => (await c.query(`SELECT id, ${COLUMNS} FROM phigate.audit_events ORDER BY id`)).rows);
    for (const p of patients) expect(await ofPatient(p)).toEqual(all.filter((e) => e.patient_id === p));
    expect((await ofPatient(patients[0]!)).map((e) => e.request_id)).toEqual([...['v3-v1-1', 'v3-v1-2', 'v3-v1-3'], ...Array(6).fill('v3-v2-a'), ...Array(6).fill(pageId)]);
    const rows = await admin(async (c) => (await c.query('SELECT patient_id, slot FROM phigate.audit_record_patients ORDER BY record_id, slot')).rows);
    expect(rows).toEqual(patients.slice(0, 3).map((p, i) => ({ patient_id: p, slot: i + 1 })));
    const plan = await admin(async (c) => {
      await c.query('SET enable_seqscan = off');
      return (await c.query('EXPLAIN SELECT * FROM phigate.audit_events WHERE patient_id = $1', [patients[1]])).rows.map((r) => r['QUERY PLAN'] as string).join('\n');
    });
    expect(plan).toMatch(/Index Scan on audit_record_patients_patient|Index (Only )?Scan using audit_record_patients_patient/);
    expect(plan).toContain('audit_records_patient');
  });

  it('pages compliance_audit_events and compliance_disclosures over v3 records, only the patients of the reader\'s clinics', async () => {
    // Patients 0 and 3 in clinic c-a, 1 and 2 in c-b, 4 in none (kept, as the v2 rows always were).
    await admin((c) => c.query(`INSERT INTO phigate.patient_clinics (patient_id, clinic_id) VALUES ($1, 'c-a'), ($2, 'c-b'), ($3, 'c-b'), ($4, 'c-a')`, patients.slice(0, 4)));
    const asCompliance = (sql: string, params: unknown[]) =>
      admin(async (c) => {
        await c.query('BEGIN');
        await c.query(`SELECT set_config('phigate.roles', 'compliance', true), set_config('phigate.clinics', 'c-a', true)`);
        return (await c.query(sql, params)).rows;
      });
    const inScope = (p: string | null) => p === null || p === patients[0] || p === patients[3] || p === patients[4];
    const all = (await admin(async (c) => (await c.query(`SELECT id, patient_id FROM phigate.audit_events ORDER BY id DESC`)).rows)) as { id: string; patient_id: string | null }[];
    const pages = async (patient: string | null) => {
      const ids: string[] = [];
      let before: string | null = null;
      for (;;) {
        const rows = (await asCompliance('SELECT id FROM phigate.compliance_audit_events($1, NULL, NULL, false, NULL, NULL, $2, 5)', [patient, before])) as { id: string }[];
        ids.push(...rows.map((r) => r.id));
        if (rows.length < 5) return ids;
        before = rows.at(-1)!.id;
      }
    };
    expect(await pages(null)).toEqual(all.filter((e) => inScope(e.patient_id)).map((e) => e.id));
    expect(await pages(patients[0]!)).toEqual(all.filter((e) => e.patient_id === patients[0]).map((e) => e.id));
    expect(await pages(patients[1]!)).toEqual([]);
    const disclosed = (await asCompliance('SELECT request_id, fields, masked_fields, events FROM phigate.compliance_disclosures($1, NULL, NULL, 100)', [patients[0]])) as {
      request_id: string; fields: string[]; masked_fields: string[]; events: number;
    }[];
    expect(disclosed.find((d) => d.request_id === pageId)).toEqual({
      request_id: pageId, fields: ['Encounter.kind', 'Patient.familyName', 'Patient.givenName', 'Patient.mrn'], masked_fields: ['Patient.ssn'], events: 5,
    });
  });

  it('counts each patient of a v3 record in the alert sweep, as the view\'s events would', async () => {
    // Seven patients read in one v3 record only: one record has one time, so its minute crosses the
    // sweep's threshold of six whatever minute the earlier tests' records fell in.
    await writer.record(request(`v3-sweep-${randomUUID()}`), page(Array.from({ length: 7 }, () => randomUUID()), () => 1));
    const expected = await admin(async (c) =>
      (await c.query(`SELECT date_trunc('minute', occurred_at) AS minute, count(DISTINCT patient_id)::int AS patients
                      FROM phigate.audit_events WHERE actor = 'reg-v3' AND action IN ('read', 'masked') AND patient_id IS NOT NULL
                      GROUP BY 1 HAVING count(DISTINCT patient_id) > 6 ORDER BY 1`)).rows,
    );
    expect(expected.length).toBeGreaterThan(0);
    const raised = await admin(async (c) => {
      await c.query(`UPDATE phigate.alert_sweep SET swept_until = clock_timestamp() - interval '30 minutes'`);
      return (await c.query(`SELECT window_start AS minute, observed AS patients FROM phigate.sweep_alerts_unchecked(6, 1000000, '00:00', '23:59', 'UTC', 0)
                             WHERE kind = 'bulk_read' AND actor = 'reg-v3' ORDER BY 1`)).rows;
    });
    expect(raised).toEqual(expected);
  });

  it('seals, delivers, verifies and proves a log of v1, v2 and v3 leaves, and names a changed v3 record', async () => {
    await sealEverything();
    await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
    const sinkDir = path.join(dir, 'sink');
    await mkdir(sinkDir);
    expect(await deliver(pool, await fileSink(sinkDir, 1 << 20), 1000)).toBeGreaterThan(0);
    const verifier = parseVerifierKey(verifierKey(signer.name, signer.publicKey))!;
    const versions = await admin(async (c) => (await c.query<{ version: number }>('SELECT version FROM phigate.audit_log_leaves(0, 100)')).rows.map((r) => r.version));
    expect(new Set(versions)).toEqual(new Set([1, 2, 3]));
    expect(await admin((client) => verifyLog({ client, verifier, sinkDir }))).toMatchObject({ problem: null, unsealed: 0, sinkCompared: versions.length });

    const events = await eventsOf(pageId);
    const third = events.filter((e) => e.patient_id === patients[2])[3]!;
    const proof = await admin((c) => proveEvent(c, third.id));
    const checked = checkProof(proof, verifierKey(signer.name, signer.publicKey));
    expect(checked.ok).toBe(true);
    if (!checked.ok || checked.kind !== 'inclusion') throw new Error('not an inclusion proof');
    expect(decodeLeaf(checked.leaf)?.version).toBe(3);
    const said = describeLeaf(checked.leaf, BigInt(third.id));
    expect(said).toMatchObject({ ok: true });
    expect(said.ok && said.text).toContain(`patient ${patients[2]}`);

    // A patient swapped in the stored record: verify names the record's first event.
    await admin(async (c) => {
      await c.query('SET session_replication_role = replica');
      await c.query('UPDATE phigate.audit_records_v3 SET patient_ids = patient_ids[2:3] || patient_ids[1:1] WHERE request_id = $1', [pageId]);
    });
    const report = await admin((client) => verifyLog({ client, verifier, sinkDir }));
    expect(report.problem).toMatchObject({ kind: 'event_altered', eventId: events.find((e) => e.patient_id === patients[0])!.id });
  });

  it('retires v1, v2 and v3 leaves by retention, counting every event, and the log still verifies', async () => {
    // The record reordered above, put back as it was logged.
    await admin(async (c) => {
      await c.query('SET session_replication_role = replica');
      await c.query('UPDATE phigate.audit_records_v3 SET patient_ids = patient_ids[3:3] || patient_ids[1:2] WHERE request_id = $1', [pageId]);
    });
    await sealEverything();
    await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
    const count = (table: string) => admin(async (c) => Number((await c.query(`SELECT count(*) AS n FROM phigate.${table}`)).rows[0].n));
    const events = await count('audit_events');
    expect(await count('audit_records_v3')).toBeGreaterThan(0);
    // Retention goes by the checkpoint's signed time: a cutoff after it (and in the past) takes everything under it.
    await new Promise((r) => setTimeout(r, 50));
    const verifier = parseVerifierKey(verifierKey(signer.name, signer.publicKey))!;
    const run = await admin((c) => retainAuditEvents(c, new Date(Date.now() - 10), 'v3-retain', [], verifier));
    expect(run.events).toBe(events);
    // Left: the run's own event, after the range.
    expect([await count('audit_records_v3'), await count('audit_record_patients'), await count('audit_records'), await count('audit_events_v1')]).toEqual([0, 0, 1, 0]);
    expect(await admin((client) => verifyLog({ client, verifier }))).toMatchObject({ problem: null });
  });

  it('fails the whole batch when a trigger trims a v3 record', async () => {
    await admin((c) =>
      c.query(`CREATE FUNCTION phigate.trim_v3() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN
                 NEW.patient_ids := NEW.patient_ids[1:cardinality(NEW.patient_ids) - 1];
                 NEW.record_ids := NEW.record_ids[1:cardinality(NEW.record_ids) - cardinality(NEW.actions)];
                 RETURN NEW;
               END $$;
               CREATE TRIGGER trim_v3 BEFORE INSERT ON phigate.audit_records_v3 FOR EACH ROW EXECUTE FUNCTION phigate.trim_v3()`),
    );
    const trimmed = `v3-trimmed-${randomUUID()}`;
    const three = Array.from({ length: 3 }, () => randomUUID());
    await expect(writer.record(request(trimmed), page(three, () => 1))).rejects.toMatchObject({ code: 'AUDIT_UNAVAILABLE' });
    expect(await eventsOf(trimmed)).toEqual([]);
    await admin((c) => c.query('DROP TRIGGER trim_v3 ON phigate.audit_records_v3'));
    await writer.record(request(trimmed), page(three, () => 1));
    expect(await eventsOf(trimmed)).toHaveLength(18);
  });

  it('fails the whole batch when a trigger drops the rows that list a v3 record\'s patients', async () => {
    // The view and the disclosures reach a v3 record's events only through audit_record_patients.
    await admin((c) =>
      c.query(`CREATE FUNCTION phigate.drop_listing() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
               CREATE TRIGGER drop_listing BEFORE INSERT ON phigate.audit_record_patients FOR EACH ROW EXECUTE FUNCTION phigate.drop_listing()`),
    );
    const dropped = `v3-unlisted-${randomUUID()}`;
    const three = Array.from({ length: 3 }, () => randomUUID());
    await expect(writer.record(request(dropped), page(three, () => 1))).rejects.toMatchObject({ code: 'AUDIT_UNAVAILABLE' });
    expect(await eventsOf(dropped)).toEqual([]);
    expect(await admin(async (c) => (await c.query('SELECT count(*)::int AS n FROM phigate.audit_records_v3 WHERE request_id = $1', [dropped])).rows[0].n)).toBe(0);
    await admin((c) => c.query('DROP TRIGGER drop_listing ON phigate.audit_record_patients'));
    await writer.record(request(dropped), page(three, () => 1));
    expect(await eventsOf(dropped)).toHaveLength(18);
  });

  it('shows a v3 record\'s events only for the patient its slot lists, and lists a patient once a record', async () => {
    const listed = await admin(async (c) => (await c.query<{ record_id: string; patient_id: string; slot: number }>('SELECT record_id, patient_id, slot FROM phigate.audit_record_patients LIMIT 1')).rows[0]!);
    const before = await admin(async (c) => (await c.query('SELECT count(*)::int AS n FROM phigate.audit_events')).rows[0].n);
    // A row beside the writer's naming another patient at a listed slot attributes nothing to it.
    const stranger = randomUUID();
    await admin((c) => c.query('INSERT INTO phigate.audit_record_patients (patient_id, record_id, slot) VALUES ($1, $2, $3)', [stranger, listed.record_id, listed.slot]));
    expect(await admin(async (c) => (await c.query('SELECT count(*)::int AS n FROM phigate.audit_events WHERE patient_id = $1', [stranger])).rows[0].n)).toBe(0);
    expect(await admin(async (c) => (await c.query('SELECT count(*)::int AS n FROM phigate.audit_events')).rows[0].n)).toBe(before);
    // Nor can a second row double the listed patient's events.
    await expect(
      admin((c) => c.query('INSERT INTO phigate.audit_record_patients (patient_id, record_id, slot) VALUES ($1, $2, $3)', [listed.patient_id, listed.record_id, listed.slot])),
    ).rejects.toMatchObject({ code: '23505' });
  });

  it('keeps v3 records append-only and the app role to INSERT', async () => {
    await expect(admin((c) => c.query('DELETE FROM phigate.audit_records_v3'))).rejects.toMatchObject({ code: '42501' });
    await expect(admin((c) => c.query('UPDATE phigate.audit_records_v3 SET actor = actor'))).rejects.toMatchObject({ code: '42501' });
    await expect(admin((c) => c.query('TRUNCATE phigate.audit_records_v3'))).rejects.toMatchObject({ code: '42501' });
    await expect(admin((c) => c.query('DELETE FROM phigate.audit_record_patients'))).rejects.toMatchObject({ code: '42501' });
    await expect(admin((c) => c.query('UPDATE phigate.audit_record_patients SET slot = slot'))).rejects.toMatchObject({ code: '42501' });
    await expect(withClient(appUrl, (c) => c.query('SELECT 1 FROM phigate.audit_record_patients'))).rejects.toMatchObject({ code: '42501' });
    await expect(withClient(appUrl, (c) => c.query('SELECT 1 FROM phigate.audit_records_v3'))).rejects.toMatchObject({ code: '42501' });
    await expect(
      withClient(appUrl, (c) =>
        c.query(`INSERT INTO phigate.audit_records_v3 (id, request_id, actor, actor_kind, purpose, patient_ids, actions, type_names, fields, record_ids, details)
                 VALUES (1, 'x', 'x', 'user', 'p', ARRAY[gen_random_uuid(), gen_random_uuid()], '{read}', '{Patient}', '{ssn}', '{NULL,NULL}', '{NULL}')`),
      ),
    ).rejects.toMatchObject({ code: '42501' });
    // The shape times the patients must be the record ids, the patients two or more, none NULL.
    const insert = (patientIds: string, recordIds: string) =>
      withClient(appUrl, (c) =>
        c.query(`INSERT INTO phigate.audit_records_v3 (request_id, actor, actor_kind, purpose, patient_ids, actions, type_names, fields, record_ids, details)
                 VALUES ('x', 'x', 'user', 'p', $1, '{read}', '{Patient}', '{ssn}', $2, '{NULL}')`, [patientIds, recordIds]),
      ).then(() => null, (e: { code: string }) => e.code);
    const [a, b] = [randomUUID(), randomUUID()];
    expect(await insert(`{${a},${b}}`, '{NULL}')).toBe('23514');
    expect(await insert(`{${a}}`, '{NULL}')).toBe('23514');
    expect(await insert(`{${a},NULL}`, '{NULL,NULL}')).toBe('23514');
    expect(await insert(`{${a},${b}}`, '{NULL,NULL}')).toBeNull();
  });
});
