import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { CANONICAL_COLUMNS } from '../../../src/audit/canonical.ts';
import type { AuditEvent, AuditRequest } from '../../../src/audit/event.ts';
import { FEW_SHAPES } from '../../../src/audit/insert.ts';
import { createAuditWriter, shardOf, type AuditEntry, type AuditWriter, type BatchTiming } from '../../../src/audit/writer.ts';
import { createLogger } from '../../../src/log.ts';
import { createPool, type Pool } from '../../../src/db/pool.ts';
import { createTestDatabase, preparedStatements, withClient, type TestDatabase } from '../../support/db.ts';
import { inOneWindow, MINUTE } from '../../support/one-window.ts';

// The audit writer against a real PostgreSQL: group commit on its own connection, every batch's
// row count checked, a failed batch retried request by request, a bounded queue, a connection lost
// during COMMIT, the PHI charges of a batch, and what the gateway's role may do to the trail.

const PATIENT = '0b6f7a3e-2c1d-4e5f-8a9b-0c1d2e3f4a5b';
const OTHER = '5d2c9e8f-7a6b-4c3d-9e1f-2a3b4c5d6e7f';
const logger = createLogger('silent');
let db: TestDatabase;
let pools: Pool[] = [];
beforeAll(async () => {
  db = await createTestDatabase();
});
afterEach(async () => {
  await Promise.all(pools.map((p) => p.end()));
  pools = [];
  await admin(async (c) => {
    await c.query('DROP TRIGGER IF EXISTS writer_test ON phigate.audit_records');
    await c.query('DROP TRIGGER IF EXISTS writer_test ON phigate.audit_batches');
  });
});
afterAll(async () => db?.drop());

const admin = <T>(fn: (c: import('pg').Client) => Promise<T>) => withClient(db.adminUrl, fn);

/**
 * The writer charges PHI by the database clock's minute (src/audit/insert.ts): a test that counts a
 * principal's minute runs inside one, a straddling run again with fresh actors.
 */
const inOneMinute = <T>(attempt: () => Promise<T>): Promise<T> => inOneWindow(db.adminUrl, MINUTE, attempt);

function writer(queueLimit = 100, applicationName = 'phigate-audit', connections = 1) {
  const pool = createPool(db.auxUrl, { max: connections, applicationName });
  pools.push(pool);
  return createAuditWriter({ pool, queueLimit, logger, preparedStatements: preparedStatements() });
}

/** A writer on one connection, and how many writes reached its socket (what pg corks goes out as one). */
function socketWrites() {
  const pool = createPool(db.auxUrl, { max: 1 });
  pools.push(pool);
  const counter = { writes: 0 };
  pool.on('connect', (client) => {
    const stream = client.connection.stream as unknown as { _write: (...a: unknown[]) => void; _writev: (...a: unknown[]) => void };
    const { _write, _writev } = stream;
    stream._write = (...a) => void (counter.writes++, _write.apply(stream, a));
    stream._writev = (...a) => void (counter.writes++, _writev.apply(stream, a));
  });
  return { w: createAuditWriter({ pool, queueLimit: 10, logger, preparedStatements: preparedStatements() }), counter };
}

const request = (requestId = `w-${randomUUID()}`, actor = 'reg-north'): AuditRequest => ({ requestId, actor, actorKind: 'user', clientAddr: '127.0.0.1' });
const read = (field: string, detail: string | null = null): AuditEvent => ({
  action: 'read',
  typeName: 'Patient',
  field,
  patientId: PATIENT,
  recordId: null,
  role: 'registrar',
  purpose: 'healthcare_operations',
  breakGlass: false,
  detail,
});
const entry = (fields = ['ssn', 'mrn']): AuditEntry => ({ request: request(), events: fields.map((f) => read(f)) });

const rowsOf = (requestId: string) =>
  admin(async (c) => (await c.query('SELECT * FROM phigate.audit_events WHERE request_id = $1 ORDER BY id', [requestId])).rows);

describe('group commit', () => {
  it('commits what queued during the previous commit as one batch, each batch row counting its events', async () => {
    const w = writer();
    const entries = Array.from({ length: 20 }, () => entry());
    const outcomes = await Promise.all(entries.map((e) => w.write(e)));
    expect(outcomes.every((o) => o.outcome === 'committed')).toBe(true);
    const rows = await admin(
      async (c) => (await c.query('SELECT request_id, batch_id FROM phigate.audit_events WHERE request_id = ANY($1)', [entries.map((e) => e.request.requestId)])).rows,
    );
    expect(rows).toHaveLength(40);
    const batches = new Set(rows.map((r) => r.batch_id));
    // The first write goes out alone; the 19 that queued meanwhile share the next commit.
    expect(batches.size).toBeLessThanOrEqual(3);
    expect(w.stats.batches).toBe(batches.size);
    const counted = await admin(async (c) => (await c.query('SELECT id, events FROM phigate.audit_batches WHERE id = ANY($1)', [[...batches]])).rows);
    for (const b of counted) expect(b.events).toBe(rows.filter((r) => r.batch_id === b.id).length);
  });

  it("a batch that charges nothing leaves in one socket write: BEGIN, its settings, the INSERT and COMMIT", async () => {
    const { w, counter } = socketWrites();
    await w.write(entry());
    counter.writes = 0;
    expect(await w.write(entry())).toEqual({ outcome: 'committed' });
    expect(counter.writes).toBe(1);
  });

  it('a batch whose PHI charges are all accepted also leaves in one socket write: the charge rides in the INSERT', async () => {
    await inOneMinute(async () => {
      const { w, counter } = socketWrites();
      const actor = `reg-${randomUUID()}`;
      const charged = (): AuditEntry => ({ ...entry(), charge: { owner: { kind: 'user', subject: actor }, rows: 1, values: 2, cap: { rows: 100, values: 100 } } });
      await w.write(charged());
      counter.writes = 0;
      const e = charged();
      expect(await w.write(e)).toEqual({ outcome: 'committed' });
      expect(counter.writes).toBe(1);
      expect(await rowsOf(e.request.requestId)).toHaveLength(2);
      const usage = await admin(async (c) => (await c.query('SELECT rows_used, values_used FROM phigate.phi_usage WHERE actor = $1', [actor])).rows);
      expect(usage).toEqual([{ rows_used: 2, values_used: 4 }]);
    });
  });

  it('implements AuditRecorder: record() resolves once the events are committed', async () => {
    const w = writer();
    const req = request();
    await w.record(req, [read('ssn', 'hit')]);
    expect((await rowsOf(req.requestId)).map((r) => [r.action, r.detail, r.actor])).toEqual([['read', 'hit', 'reg-north']]);
  });
});

describe('the narrow layout', () => {
  const recordsOf = (requestId: string) =>
    admin(async (c) => (await c.query('SELECT * FROM phigate.audit_records WHERE request_id = $1 ORDER BY id', [requestId])).rows);

  it("writes one record per patient, role, purpose, break-glass and grant of a request, keeping each record's events in order", async () => {
    const w = writer();
    const grant = randomUUID();
    const req = request();
    const events: AuditEvent[] = [
      read('ssn', 'hit'),
      { ...read('mrn'), patientId: OTHER, recordId: OTHER },
      read('mrn'),
      { ...read('givenName'), role: 'physician', breakGlass: true, grantId: grant },
      { ...read('familyName'), patientId: OTHER, recordId: OTHER },
      { action: 'search', typeName: 'Query', field: 'patientBySsn', patientId: null, recordId: null, role: null, purpose: 'treatment', breakGlass: false, detail: 'ssn:miss' },
      { action: 'denied', typeName: 'Encounter', field: 'notes', patientId: PATIENT, recordId: OTHER, role: null, purpose: 'healthcare_operations', breakGlass: false },
      { action: 'refused', typeName: 'Query', field: null, patientId: null, recordId: null, role: null, purpose: 'treatment', breakGlass: false, detail: 'rate' },
    ];
    await w.record(req, events);
    const records = await recordsOf(req.requestId);
    expect(records.map((r) => [r.patient_id, r.role, r.purpose, r.break_glass, r.grant_id, r.actions, r.fields, r.record_ids, r.details])).toEqual([
      [PATIENT, 'registrar', 'healthcare_operations', false, null, ['read', 'read'], ['ssn', 'mrn'], [null, null], ['hit', null]],
      [OTHER, 'registrar', 'healthcare_operations', false, null, ['read', 'read'], ['mrn', 'familyName'], [OTHER, OTHER], [null, null]],
      [PATIENT, 'physician', 'healthcare_operations', true, grant, ['read'], ['givenName'], [null], [null]],
      [null, null, 'treatment', false, null, ['search', 'refused'], ['patientBySsn', null], [null, null], ['ssn:miss', 'rate']],
      [PATIENT, null, 'healthcare_operations', false, null, ['denied'], ['notes'], [OTHER], [null]],
    ]);
    expect(new Set(records.map((r) => r.batch_id)).size).toBe(1);
    const [batch] = await admin(async (c) => (await c.query('SELECT events FROM phigate.audit_batches WHERE id = $1', [records[0].batch_id])).rows);
    expect(batch.events).toBe(events.length);
    // The view: one row per event, id (record << 16) + position, the record's facts on each.
    const rows = await rowsOf(req.requestId);
    expect(rows.map((r) => BigInt(r.id))).toEqual(records.flatMap((r) => r.actions.map((_: string, i: number) => (BigInt(r.id) << 16n) + BigInt(i))));
    expect(rows.map((r) => [r.action, r.field, r.patient_id, r.actor, r.client_addr])).toEqual(
      records.flatMap((r) => r.actions.map((a: string, i: number) => [a, r.fields[i], r.patient_id, 'reg-north', '127.0.0.1'])),
    );
  });

  // src/audit/insert.ts sends every event's record id in one flat uuid[], a sentinel for NULL, and
  // slices each record's out of it: the slices must fall on the records' own events.
  it("stores each record's record ids as its events carry them, NULLs and the nil uuid included", async () => {
    const w = writer();
    const nil = '00000000-0000-0000-0000-000000000000';
    const [a, b] = [randomUUID(), randomUUID()];
    const plain = request();
    await w.record(plain, [
      { ...read('kind'), recordId: a },
      read('ssn'),
      { ...read('kind'), patientId: OTHER, recordId: b.toUpperCase() },
      { ...read('reason'), patientId: OTHER, recordId: b },
      { ...read('notes'), patientId: OTHER },
      { ...read('mrn'), recordId: a },
    ]);
    expect((await recordsOf(plain.requestId)).map((r) => r.record_ids)).toEqual([[a, null, a], [b, b, null]]);
    const withNil = request();
    await w.record(withNil, [read('ssn'), { ...read('kind'), recordId: nil }, { ...read('ssn'), patientId: OTHER }]);
    expect((await recordsOf(withNil.requestId)).map((r) => r.record_ids)).toEqual([[null, nil], [null]]);
  });

  // src/audit/insert.ts: up to FEW_SHAPES shapes a record scans them (no sort), past it they are
  // hashed and the records sorted. Either statement must store the same records, in order.
  it('stores the same records, in order, whether a batch holds few shapes or many', async () => {
    const w = writer();
    // Patient i has i + 1 fields read: every record a shape of its own.
    const recordsFor = async (patients: number) => {
      const req = request();
      const ids = Array.from({ length: patients }, () => randomUUID());
      const events = ids.flatMap((patientId, i) => Array.from({ length: i + 1 }, (_, k) => ({ ...read(`f${k}`), patientId, recordId: k % 2 ? patientId : null })));
      const shuffled = events.filter((_, k) => k % 3 === 0).concat(events.filter((_, k) => k % 3 !== 0));
      await w.record(req, shuffled);
      const records = await recordsOf(req.requestId);
      const expected = [...new Set(shuffled.map((e) => e.patientId))].map((p) => shuffled.filter((e) => e.patientId === p));
      expect(records.map((r) => [r.patient_id, r.fields, r.record_ids])).toEqual(expected.map((es) => [es[0]!.patientId, es.map((e) => e.field), es.map((e) => e.recordId)]));
      return records.length;
    };
    expect(await recordsFor(FEW_SHAPES)).toBe(FEW_SHAPES);
    expect(await recordsFor(FEW_SHAPES + 9)).toBe(FEW_SHAPES + 9);
  });

  it('splits a record above 65,536 events, in order', async () => {
    const w = writer();
    const req = request();
    const n = 65_536 + 3;
    await w.record(req, Array.from({ length: n }, (_, i) => read(`f${i}`)));
    const records = await recordsOf(req.requestId);
    expect(records.map((r) => r.actions.length)).toEqual([65_536, 3]);
    expect([records[0].fields[0], records[0].fields[65_535], records[1].fields[0], records[1].fields[2]]).toEqual(['f0', 'f65535', 'f65536', 'f65538']);
    const [count] = await admin(async (c) => (await c.query('SELECT count(*)::int AS n FROM phigate.audit_events WHERE request_id = $1', [req.requestId])).rows);
    expect(count.n).toBe(n);
  });
});

describe('failures', () => {
  it('a batch with one bad request is retried request by request: only that request fails', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const pool = createPool(db.auxUrl, { max: 1, applicationName: 'phigate-audit' });
    pools.push(pool);
    const w = createAuditWriter({ pool, queueLimit: 100, logger: createLogger('info', { write: (l: string) => void lines.push(JSON.parse(l)) }), preparedStatements: preparedStatements() });
    const first = w.write(entry());
    // Queued while the first commits, so these three form one batch.
    const good1 = entry();
    const bad: AuditEntry = { request: request(), events: [read('ssn', 'NOT A CODE')] };
    const good2 = entry();
    const outcomes = await Promise.allSettled([first, w.write(good1), w.write(bad), w.write(good2)]);
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect((outcomes[2] as PromiseRejectedResult).reason).toMatchObject({ code: 'AUDIT_UNAVAILABLE', reason: 'audit_write_failed' });
    expect(await rowsOf(good1.request.requestId)).toHaveLength(2);
    expect(await rowsOf(good2.request.requestId)).toHaveLength(2);
    expect(await rowsOf(bad.request.requestId)).toHaveLength(0);
    // The batch's lines belong to no one request: they name the writer and the requests it served.
    const batchIds = [good1, bad, good2].map((e) => e.request.requestId);
    expect(lines.map((l) => [l.msg, l.task, l.requestIds])).toEqual([
      ['audit batch failed; retrying its requests one by one', 'audit-writer', batchIds],
      ['audit batch not committed; its requests are answered with AUDIT_UNAVAILABLE', 'audit-writer', [bad.request.requestId]],
    ]);
  });

  // Events of one request about one patient are one row of audit_records: a trigger can drop a
  // whole record, or keep it with fewer events; either way the events stored differ from those sent.
  it('a trigger that silently drops a record fails every request of the batch, and nothing of it is kept', async () => {
    await admin(async (c) => {
      await c.query(`CREATE OR REPLACE FUNCTION public.writer_test_drop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$`);
      await c.query(`CREATE TRIGGER writer_test BEFORE INSERT ON phigate.audit_records FOR EACH ROW WHEN (NEW.patient_id = '${OTHER}') EXECUTE FUNCTION public.writer_test_drop()`);
    });
    const w = writer();
    const e: AuditEntry = { request: request(), events: [read('ssn'), { ...read('mrn'), patientId: OTHER }] };
    await expect(w.write(e)).rejects.toMatchObject({ code: 'AUDIT_UNAVAILABLE', reason: 'audit_rows_mismatch' });
    // The first patient's record was not dropped, but the batch did not commit, so it is not there either.
    expect(await rowsOf(e.request.requestId)).toEqual([]);
  });

  it('a trigger that keeps a record but trims its events fails the batch', async () => {
    await admin(async (c) => {
      await c.query(`CREATE OR REPLACE FUNCTION public.writer_test_trim() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          NEW.actions := NEW.actions[1:1]; NEW.type_names := NEW.type_names[1:1]; NEW.fields := NEW.fields[1:1];
          NEW.record_ids := NEW.record_ids[1:1]; NEW.details := NEW.details[1:1];
          RETURN NEW;
        END $$`);
      await c.query(`CREATE TRIGGER writer_test BEFORE INSERT ON phigate.audit_records FOR EACH ROW EXECUTE FUNCTION public.writer_test_trim()`);
    });
    const w = writer();
    const e = entry(['ssn', 'mrn']);
    await expect(w.write(e)).rejects.toMatchObject({ code: 'AUDIT_UNAVAILABLE', reason: 'audit_rows_mismatch' });
    expect(await rowsOf(e.request.requestId)).toEqual([]);
  });

  it('a connection lost during COMMIT: the batch is looked up by its id, and not found, its requests fail', async () => {
    // A deferred constraint trigger runs inside COMMIT and waits there on an advisory lock the test
    // holds: the commit cannot end before the kill, and should the test fail first, its lock goes
    // with its connection and the commit ends at once (a sleep would outlive the test by its length).
    await admin(async (c) => {
      await c.query(
        `CREATE OR REPLACE FUNCTION public.writer_test_held() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_xact_lock(4243); RETURN NULL; END $$`,
      );
      await c.query(
        `CREATE CONSTRAINT TRIGGER writer_test AFTER INSERT ON phigate.audit_batches DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.writer_test_held()`,
      );
    });
    await withClient(db.adminUrl, async (holder) => {
      await holder.query('SELECT pg_advisory_lock(4243)');
      const w = writer(100, 'phigate-audit-killed');
      const e = entry();
      const writing = w.write(e);
      writing.catch(() => undefined);
      // Killed once it is inside the COMMIT (waiting on the test's lock), not after a guessed delay
      // that a slow run might spend before the COMMIT or a fast one after it.
      const inCommit = `SELECT pid FROM pg_stat_activity WHERE application_name = 'phigate-audit-killed' AND state = 'active' AND wait_event_type = 'Lock'`;
      await vi.waitFor(async () => expect((await admin((c) => c.query(inCommit))).rows).toHaveLength(1), { timeout: 30_000, interval: 20 });
      const killed = await admin(
        async (c) => (await c.query(`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = 'phigate-audit-killed' AND state = 'active'`)).rows,
      );
      expect(killed).toEqual([{ ok: true }]);
      await expect(writing).rejects.toMatchObject({ code: 'AUDIT_UNAVAILABLE' });
      expect(await rowsOf(e.request.requestId)).toEqual([]);
      await admin((c) => c.query('DROP TRIGGER writer_test ON phigate.audit_batches'));
      // The writer carries on, on a new connection.
      const next = entry();
      await expect(w.write(next)).resolves.toEqual({ outcome: 'committed' });
      expect(await rowsOf(next.request.requestId)).toHaveLength(2);
    });
  });

  it('closed twice while a batch is in flight: both callers are answered once it commits', async () => {
    const w = writer();
    const writing = w.write(entry());
    const closes = [w.close(), w.close()];
    await expect(writing).resolves.toEqual({ outcome: 'committed' });
    await expect(Promise.all(closes)).resolves.toEqual([undefined, undefined]);
  });

  it('a full queue refuses at once with AUDIT_UNAVAILABLE, and says it is saturated', async () => {
    const w = writer(2);
    const first = w.write(entry()); // taken by the connection at once
    const queued = [w.write(entry()), w.write(entry())];
    expect(w.saturated).toBe(true);
    await expect(w.write(entry())).rejects.toMatchObject({ code: 'AUDIT_UNAVAILABLE', reason: 'audit_queue_full' });
    await Promise.all([first, ...queued]);
    expect(w.saturated).toBe(false);
  });
});

describe('PHI charged per batch', () => {
  it('accepts each principal\'s reads in order while the minute stays within the cap; a refused one writes its refusal only', async () => {
    await inOneMinute(async () => {
      const w = writer();
      const cap = { rows: 5, values: 100 };
      const sub = `reg-${randomUUID()}`;
      const other = `reg-${randomUUID()}`;
      const limited: AuditEvent = { action: 'limited', typeName: 'Query', field: null, patientId: null, recordId: null, role: null, purpose: 'unspecified', breakGlass: false };
      const charged = (actor: string, rows: number): AuditEntry => ({
        request: request(undefined, actor),
        events: [read('ssn')],
        charge: { owner: { kind: 'user', subject: actor }, rows, values: rows, cap },
        refusal: limited,
      });
      const first = w.write(entry());
      const batch = [charged(sub, 3), charged(other, 5), charged(sub, 3), charged(sub, 2)];
      const outcomes = await Promise.all([first, ...batch.map((e) => w.write(e))]);
      expect(outcomes.slice(1).map((o) => o.outcome)).toEqual(['committed', 'committed', 'limited', 'committed']);
      const refused = outcomes[3]!;
      expect(refused.outcome === 'limited' && refused.retryAfterSeconds >= 1 && refused.retryAfterSeconds <= 60).toBe(true);
      expect((await rowsOf(batch[2]!.request.requestId)).map((r) => r.action)).toEqual(['limited']);
      expect((await rowsOf(batch[3]!.request.requestId)).map((r) => r.action)).toEqual(['read']);
      const usage = await admin(async (c) => (await c.query('SELECT actor, rows_used FROM phigate.phi_usage WHERE actor = ANY($1)', [[sub, other]])).rows);
      expect(Object.fromEntries(usage.map((u) => [u.actor, u.rows_used]))).toEqual({ [sub]: 5, [other]: 5 });
      // The first attempt, every event as if accepted, left nothing: each request's rows are in one batch, counted once.
      const batches = await admin(
        async (c) =>
          (await c.query('SELECT b.events, count(*)::int AS written FROM phigate.audit_events e JOIN phigate.audit_batches b ON b.id = e.batch_id WHERE e.request_id = ANY($1) GROUP BY b.id, b.events', [batch.map((e) => e.request.requestId)])).rows,
      );
      expect(batches).toHaveLength(1);
      expect(batches[0]).toEqual({ events: 4, written: 4 });
    });
  });

  // The one-round-trip statement charges in plain SQL (src/audit/insert.ts, CHARGED_INSERT): the
  // sums, the caps and the past minutes must come out as charge_phi_usage's would.
  const chargedTo = (actor: string, rows: number, capRows: number): AuditEntry => ({
    request: request(undefined, actor),
    events: [read('ssn')],
    charge: { owner: { kind: 'user', subject: actor }, rows, values: rows, cap: { rows: capRows, values: 1000 } },
  });
  const usageOf = (actors: string[]) =>
    admin(async (c) => (await c.query('SELECT actor, rows_used, values_used FROM phigate.phi_usage WHERE actor = ANY($1) ORDER BY actor, minute', [actors])).rows);

  it("charges a batch that fills a minute to each charge's own cap in its one round trip, several principals at once", async () => {
    await inOneMinute(async () => {
      const { w, counter } = socketWrites();
      const [a, b] = [`reg-${randomUUID()}`, `reg-${randomUUID()}`];
      await w.write(entry());
      const before = w.stats.batches;
      counter.writes = 0;
      const batch = [chargedTo(a, 2, 9), chargedTo(b, 4, 4), chargedTo(a, 3, 5), chargedTo(b, 0, 4)];
      expect(await Promise.all(batch.map((e) => w.write(e)))).toEqual(batch.map(() => ({ outcome: 'committed' })));
      // a: 2 then 2 + 3 = 5 within the second charge's cap of 5; b: 4 of 4, then 4 + 0. However the
      // writer grouped them, each batch went in one socket write: no charge was refused.
      expect(counter.writes).toBe(w.stats.batches - before);
      expect(await usageOf([a, b])).toEqual(
        [
          { actor: a, rows_used: 5, values_used: 5 },
          { actor: b, rows_used: 4, values_used: 4 },
        ].sort((x, y) => (x.actor < y.actor ? -1 : 1)),
      );
    });
  });

  it("a charge past its own cap, the principal's total counted up to it, sends the batch again for the verdicts", async () => {
    await inOneMinute(async () => {
      const { w, counter } = socketWrites();
      const a = `reg-${randomUUID()}`;
      await w.write(entry());
      const before = w.stats.batches;
      counter.writes = 0;
      // 2 + 3 = 5 is past the second charge's cap of 4: refused, and the third is counted without it.
      const batch = [chargedTo(a, 2, 9), { ...chargedTo(a, 3, 4), refusal: { ...read('ssn'), action: 'limited' as const, field: null } }, chargedTo(a, 1, 9)];
      expect((await Promise.all(batch.map((e) => w.write(e)))).map((o) => o.outcome)).toEqual(['committed', 'limited', 'committed']);
      // The batch holding the refused charge went twice more: the charge on its own, then its INSERT with COMMIT.
      expect(counter.writes).toBe(w.stats.batches - before + 2);
      expect(await usageOf([a])).toEqual([{ actor: a, rows_used: 3, values_used: 3 }]);
    });
  });

  it("a principal's first charge of a minute drops its past minutes; a later one leaves others' rows alone", async () => {
    const w = writer();
    const [a, b] = [`reg-${randomUUID()}`, `reg-${randomUUID()}`];
    await admin((c) =>
      c.query(
        `INSERT INTO phigate.phi_usage (actor_kind, actor, minute, rows_used, values_used)
         SELECT 'user', p, date_trunc('minute', clock_timestamp()) - m * interval '1 minute', 7, 7 FROM unnest($1::text[]) AS p, unnest('{2,3}'::int[]) AS m`,
        [[a, b]],
      ),
    );
    await w.write(chargedTo(a, 1, 9));
    expect(await usageOf([a, b])).toEqual([
      { actor: a, rows_used: 1, values_used: 1 },
      { actor: b, rows_used: 7, values_used: 7 },
      { actor: b, rows_used: 7, values_used: 7 },
    ].sort((x, y) => (x.actor < y.actor ? -1 : x.actor > y.actor ? 1 : 0)));
  });
});

describe('durability of a batch', () => {
  // No PHI leaves before its audit rows are durable: the writer turns synchronous_commit on in the
  // batch's first statement, whichever it is (its settings ride in the charge when there is one).
  it('commits every batch with synchronous_commit on, with a charge or without, whatever the database default', async () => {
    const name = db.name;
    await admin(async (c) => {
      await c.query(`ALTER DATABASE ${name} SET synchronous_commit = off`);
      await c.query('CREATE TABLE IF NOT EXISTS public.writer_settings (batch uuid, synchronous text, plans text)');
      await c.query(`CREATE OR REPLACE FUNCTION public.writer_settings_seen() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
        BEGIN
          INSERT INTO public.writer_settings VALUES (NEW.id, current_setting('synchronous_commit'), current_setting('plan_cache_mode'));
          RETURN NEW;
        END $$`);
      await c.query('CREATE TRIGGER writer_test AFTER INSERT ON phigate.audit_batches FOR EACH ROW EXECUTE FUNCTION public.writer_settings_seen()');
    });
    try {
      const w = writer();
      const actor = `reg-${randomUUID()}`;
      const charged: AuditEntry = { ...entry(), charge: { owner: { kind: 'user', subject: actor }, rows: 1, values: 1, cap: { rows: 100, values: 100 } } };
      expect((await w.write(entry())).outcome).toBe('committed');
      expect((await w.write(charged)).outcome).toBe('committed');
      const seen = await admin(async (c) => (await c.query('SELECT synchronous, plans FROM public.writer_settings')).rows);
      expect(seen).toEqual([
        { synchronous: 'on', plans: 'force_generic_plan' },
        { synchronous: 'on', plans: 'force_generic_plan' },
      ]);
    } finally {
      await admin((c) => c.query(`ALTER DATABASE ${name} RESET synchronous_commit`));
    }
  });
});

describe('one shard per principal', () => {
  const cap = { rows: 100, values: 100 };
  const charged = (actor: string): AuditEntry => ({
    request: request(undefined, actor),
    events: [read('ssn')],
    charge: { owner: { kind: 'user', subject: actor }, rows: 1, values: 1, cap },
  });
  const backends = (app: string) =>
    admin(
      async (c) =>
        (await c.query<{ state: string; wait_event_type: string | null }>('SELECT state, wait_event_type FROM pg_stat_activity WHERE application_name = $1 AND state = $2', [app, 'active'])).rows,
    );
  const until = async (what: () => Promise<boolean>) => {
    for (let i = 0; i < 240 && !(await what()); i++) await new Promise((r) => setTimeout(r, 250));
    expect(await what()).toBe(true);
  };

  it('picks the same shard for every request of a principal', () => {
    const a = charged(`reg-${randomUUID()}`);
    expect(shardOf(request(undefined, a.request.actor), 4)).toBe(shardOf(a.request, 4));
    // The kind is part of the key: a partner and a user of one subject are two principals.
    expect(shardOf({ ...request(undefined, 'reg-north'), actorKind: 'partner' }, 4 ** 8)).not.toBe(shardOf(request(undefined, 'reg-north'), 4 ** 8));
    const shards = new Set(Array.from({ length: 64 }, () => shardOf(request(undefined, `reg-${randomUUID()}`), 4)));
    expect(shards.size).toBe(4);
  });

  it("a principal's batches wait on one connection only, while another principal's commit on the other", async () => {
    await inOneMinute(async () => {
      let a = `reg-${randomUUID()}`;
      let b = `reg-${randomUUID()}`;
      while (shardOf(charged(a).request, 2) === shardOf(charged(b).request, 2)) b = `reg-${randomUUID()}`;
      // A's first batch holds A's phi_usage row while its INSERT waits on a lock the test holds.
      await admin(async (c) => {
        await c.query(
          `CREATE OR REPLACE FUNCTION public.writer_test_hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$`,
        );
        // A straddled attempt left its trigger for the actor it had: this one holds the new actor.
        await c.query('DROP TRIGGER IF EXISTS writer_test ON phigate.audit_records');
        await c.query(`CREATE TRIGGER writer_test BEFORE INSERT ON phigate.audit_records FOR EACH ROW WHEN (NEW.actor = '${a}') EXECUTE FUNCTION public.writer_test_hold()`);
      });
      await withClient(db.adminUrl, async (holder) => {
        await holder.query('SELECT pg_advisory_lock(4242)');
        const w = writer(100, 'phigate-audit-shards', 2);
        const a1 = w.write(charged(a));
        await until(async () => (await backends('phigate-audit-shards')).some((r) => r.wait_event_type === 'Lock'));
        const a2 = w.write(charged(a));
        // Two connections sharing one queue would send a2 with b, and b would wait on A's row.
        await expect(w.write(charged(b))).resolves.toEqual({ outcome: 'committed' });
        expect(await backends('phigate-audit-shards')).toEqual([{ state: 'active', wait_event_type: 'Lock' }]);
        await holder.query('SELECT pg_advisory_unlock(4242)');
        await expect(Promise.all([a1, a2])).resolves.toEqual([{ outcome: 'committed' }, { outcome: 'committed' }]);
      });
      const usage = await admin(async (c) => (await c.query('SELECT actor, rows_used FROM phigate.phi_usage WHERE actor = ANY($1)', [[a, b]])).rows);
      expect(Object.fromEntries(usage.map((u) => [u.actor, u.rows_used]))).toEqual({ [a]: 2, [b]: 1 });
    });
  });
});

describe('what the gateway role may do to the trail', () => {
  const asApp = <T>(fn: (c: import('pg').Client) => Promise<T>) => withClient(db.appUrl, fn);
  const refused = (sql: string, params: unknown[] = []) => asApp((c) => c.query(sql, params).then(() => null, (e: { code: string }) => e.code));
  const COLUMNS = `(request_id, actor, actor_kind, purpose, action, type_name)`;
  const VALUES = `('forged', 'x', 'user', 'p', 'read', 'Patient')`;

  it('inserts events and records, but never chooses their id, time or transaction', async () => {
    expect(await refused(`INSERT INTO phigate.audit_events ${COLUMNS} VALUES ${VALUES}`)).toBeNull();
    expect(await refused(`INSERT INTO phigate.audit_events (id, request_id, actor, actor_kind, purpose, action, type_name) OVERRIDING SYSTEM VALUE VALUES (9000000000, 'forged', 'x', 'user', 'p', 'read', 'Patient')`)).toBe('42501');
    expect(await refused(`INSERT INTO phigate.audit_events (id, request_id, actor, actor_kind, purpose, action, type_name) VALUES (9000000000, 'forged', 'x', 'user', 'p', 'read', 'Patient')`)).toMatch(/^(42501|428C9)$/);
    expect(await refused(`INSERT INTO phigate.audit_events (occurred_at, request_id, actor, actor_kind, purpose, action, type_name) VALUES ('2000-01-01', 'forged', 'x', 'user', 'p', 'read', 'Patient')`)).toBe('42501');
    const RECORD = `(request_id, actor, actor_kind, purpose, actions, type_names, fields, record_ids, details)`;
    const ONE = `('forged', 'x', 'user', 'p', '{read}', '{Patient}', '{ssn}', '{NULL}', '{NULL}')`;
    expect(await refused(`INSERT INTO phigate.audit_records ${RECORD} VALUES ${ONE}`)).toBeNull();
    expect(await refused(`INSERT INTO phigate.audit_records (id, ${RECORD.slice(1)} OVERRIDING SYSTEM VALUE VALUES (9000000000, ${ONE.slice(1)}`)).toBe('42501');
    for (const column of ['occurred_at', 'tx']) {
      const value = column === 'tx' ? `'1'::xid8` : `'2000-01-01'`;
      expect(await refused(`INSERT INTO phigate.audit_records (${column}, ${RECORD.slice(1)} VALUES (${value}, ${ONE.slice(1)}`), column).toBe('42501');
    }
    const max = await admin(async (c) => (await c.query(`SELECT max(id)::bigint AS id FROM phigate.audit_events`)).rows[0].id);
    expect(Number(max)).toBeLessThan(9000000000);
  });

  // 035_read_cpu.sql: the same rule as 028's, as a PL/pgSQL loop.
  it("refuses a record whose details are not codes of the closed vocabulary's shape", async () => {
    const record = (details: string) =>
      refused(
        `INSERT INTO phigate.audit_records (request_id, actor, actor_kind, purpose, actions, type_names, fields, record_ids, details)
         VALUES ('details', 'x', 'user', 'p', '{read,read,read}', '{Patient,Patient,Patient}', '{ssn,mrn,phone}', '{NULL,NULL,NULL}', $1)`,
        [details],
      );
    for (const ok of ['{NULL,NULL,NULL}', '{hit,NULL,miss}', `{ssn,bad_signature,${'a'.repeat(64)}}`, '{a:b.c-d_1,NULL,x}']) expect(await record(ok), ok).toBeNull();
    for (const bad of ['{hit,"",miss}', '{hit,NULL,Miss}', '{"a b",NULL,NULL}', `{NULL,NULL,${'a'.repeat(65)}}`, '{NULL,NULL,"x;y"}']) expect(await record(bad), bad).toBe('23514');
  });

  it('can neither change nor remove an event, a record or a batch (nor can the owner)', async () => {
    await admin((c) =>
      c.query(`INSERT INTO phigate.audit_events_v1 (request_id, actor, actor_kind, purpose, action, type_name) VALUES ('forged-v1', 'x', 'user', 'p', 'read', 'Patient')`),
    );
    await asApp((c) => c.query(`INSERT INTO phigate.audit_events ${COLUMNS} VALUES ${VALUES}`));
    for (const relation of ['audit_events', 'audit_records', 'audit_events_v1']) {
      for (const sql of [`UPDATE phigate.${relation} SET actor = $1`, `DELETE FROM phigate.${relation} WHERE actor = $1`]) {
        expect(await refused(sql, ['x']), sql).toBe('42501');
      }
    }
    for (const table of ['audit_records', 'audit_events_v1']) expect(await refused(`TRUNCATE phigate.${table}`), table).toBe('42501');
    // A view cannot be truncated at all.
    expect(await refused('TRUNCATE phigate.audit_events')).toBe('42809');
    expect(await refused(`UPDATE phigate.audit_batches SET events = 1`)).toBe('42501');
    expect(await refused(`DELETE FROM phigate.audit_batches`)).toBe('42501');
    const asOwner = (sql: string) => admin((c) => c.query(sql).then(() => null, (e: { code: string }) => e.code));
    for (const sql of [
      `DELETE FROM phigate.audit_events WHERE request_id IN ('forged', 'forged-v1')`,
      `UPDATE phigate.audit_events SET actor = 'y' WHERE request_id IN ('forged', 'forged-v1')`,
      `DELETE FROM phigate.audit_records WHERE request_id = 'forged'`,
      `UPDATE phigate.audit_records SET actor = 'y' WHERE request_id = 'forged'`,
      'TRUNCATE phigate.audit_records',
      `DELETE FROM phigate.audit_events_v1 WHERE request_id = 'forged-v1'`,
      `UPDATE phigate.audit_events_v1 SET actor = 'y' WHERE request_id = 'forged-v1'`,
      'TRUNCATE phigate.audit_events_v1',
    ]) {
      expect(await asOwner(sql), sql).toBe('42501');
    }
  });

  // Beside them only `tx` (016_audit_log.sql): the inserting transaction, which orders the
  // Merkle log's leaves and is no fact of the event (docs/audit-log.md).
  it('the relation has exactly the columns the canonical encoding covers, and the leaf-ordering tx', async () => {
    const columns = await admin(
      async (c) =>
        (await c.query(`SELECT column_name FROM information_schema.columns WHERE table_schema = 'phigate' AND table_name = 'audit_events' ORDER BY column_name`)).rows,
    );
    expect(columns.map((c) => c.column_name)).toEqual([...CANONICAL_COLUMNS, 'tx'].sort());
  });
});

describe('gathering the entries of requests still running', () => {
  // Every commit takes at least 50 ms (a deferred trigger inside COMMIT), so the wait a batch may
  // make (the last commit's time here, at most a minute) is long enough never to end by itself
  // while a test's own steps run: what ends it is what the test does.
  const slowCommits = () =>
    admin(async (c) => {
      await c.query(`CREATE OR REPLACE FUNCTION public.writer_test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END $$`);
      await c.query(
        `CREATE CONSTRAINT TRIGGER writer_test AFTER INSERT ON phigate.audit_batches DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.writer_test_slow_commit()`,
      );
    });
  const gathering = (opts: { maxBatchEvents?: number; onBatch?: (b: BatchTiming) => void } = {}) => {
    const pool = createPool(db.auxUrl, { max: 1, applicationName: 'phigate-audit-gather' });
    pools.push(pool);
    return createAuditWriter({ pool, queueLimit: 100, logger, preparedStatements: preparedStatements(), gather: { percent: 100, maxMs: 60_000 }, ...opts });
  };
  const one = (req: AuditRequest): AuditEntry => ({ request: req, events: [read('ssn')] });
  const batchOf = async (requestId: string) => (await rowsOf(requestId)).map((r) => r.batch_id as string);
  const nextTurn = () => new Promise((r) => setImmediate(r));
  /** `w` past one slow commit (so it has a commit's time to gather within), and two requests it expects. */
  const twoExpected = async (w: AuditWriter, first: AuditEntry = entry()) => {
    await w.write(first);
    await nextTurn();
    const [r1, r2] = [request(), request()];
    return { r1, r2, c1: w.expect(r1), c2: w.expect(r2) };
  };

  it('tells its observer each batch: the entries in it, how long it was held for them, when it left and settled', async () => {
    await slowCommits();
    const seen: BatchTiming[] = [];
    const w = gathering({ onBatch: (b) => seen.push(b) });
    const lone = entry();
    const { r1, r2, c1, c2 } = await twoExpected(w, lone);
    const first = w.write(one(r1), c1);
    await nextTurn();
    await Promise.all([first, w.write(one(r2), c2)]);
    await w.close();
    expect(seen.map((b) => b.entries.map((e) => e.request.requestId))).toEqual([[lone.request.requestId], [r1.requestId, r2.requestId]]);
    expect(seen[0]!.heldMs).toBe(0);
    expect(seen[1]!.heldMs).toBeGreaterThan(0);
    for (const b of seen) {
      expect(b.shard).toBe(0);
      expect(b.settledAt).toBeGreaterThan(b.startedAt);
    }
    expect(seen[1]!.startedAt).toBeGreaterThanOrEqual(seen[0]!.settledAt);
  });

  it('a lone request never waits: nothing else is running', async () => {
    await slowCommits();
    const w = gathering();
    await w.write(entry());
    await nextTurn();
    const req = request();
    await expect(w.write(one(req), w.expect(req))).resolves.toEqual({ outcome: 'committed' });
    expect(w.stats).toMatchObject({ batches: 2, gathers: 0, coming: 0 });
  });

  it('a batch waits for requests running when it was to leave, and their entries join it', async () => {
    await slowCommits();
    const w = gathering();
    await w.write(entry());
    await nextTurn();
    const [r1, r2, r3] = [request(), request(), request()];
    const [c1, c2, c3] = [w.expect(r1), w.expect(r2), w.expect(r3)];
    const first = w.write(one(r1), c1);
    expect(w.stats).toMatchObject({ gathers: 1, coming: 2 });
    await nextTurn();
    const second = w.write(one(r2), c2);
    await nextTurn();
    // The third request read no PHI: it ends without an entry, and the batch has heard from everyone.
    c3.end();
    c3.end();
    await expect(Promise.all([first, second])).resolves.toEqual([{ outcome: 'committed' }, { outcome: 'committed' }]);
    const [b1, b2] = [await batchOf(r1.requestId), await batchOf(r2.requestId)];
    expect(b1).toHaveLength(1);
    expect(b2).toEqual(b1);
    expect(w.stats).toMatchObject({ batches: 2, gathers: 1, coming: 0 });
  });

  it('a request that never comes holds the batch back no longer than the bound', async () => {
    await slowCommits();
    const w = gathering();
    const { r1, r2, c1, c2 } = await twoExpected(w);
    await expect(w.write(one(r1), c1)).resolves.toEqual({ outcome: 'committed' });
    expect(w.stats).toMatchObject({ batches: 2, gathers: 1, coming: 1 });
    c2.end();
    expect(w.stats.coming).toBe(0);
  });

  it("write() takes only its own writer's expect(): another's, or any object with end(), is not heard", async () => {
    const w = gathering();
    const other = gathering();
    const [r1, r2] = [request(), request()];
    const c1 = other.expect(r1);
    await expect(w.write(one(r1), c1)).resolves.toEqual({ outcome: 'committed' });
    expect(other.stats.coming).toBe(1);
    let ended = 0;
    await expect(w.write(one(r2), { end: () => void ended++ })).resolves.toEqual({ outcome: 'committed' });
    expect(ended).toBe(0);
    c1.end();
    expect([w.stats.coming, other.stats.coming]).toEqual([0, 0]);
    // Written, a Coming is closed: ending it after does nothing.
    const c2 = w.expect(r2);
    await w.write(one(r2), c2);
    c2.end();
    expect(w.stats.coming).toBe(0);
  });

  it('a batch already at its size does not wait', async () => {
    await slowCommits();
    const w = gathering({ maxBatchEvents: 1 });
    const { r1, c1, c2 } = await twoExpected(w, entry(['ssn']));
    const first = w.write(one(r1), c1);
    expect(w.stats.gathers).toBe(0);
    await expect(first).resolves.toEqual({ outcome: 'committed' });
    c2.end();
    expect(w.stats).toMatchObject({ batches: 2, gathers: 0, coming: 0 });
  });

  it('closing while a batch waits: the batch commits, close() resolves, and a request expected meanwhile is refused', async () => {
    await slowCommits();
    const w = gathering();
    const { r1, r2, c1, c2 } = await twoExpected(w);
    const first = w.write(one(r1), c1);
    expect(w.stats.gathers).toBe(1);
    const closed = w.close();
    await expect(w.write(one(r2), c2)).rejects.toMatchObject({ code: 'AUDIT_UNAVAILABLE', reason: 'audit_writer_closed' });
    await expect(first).resolves.toEqual({ outcome: 'committed' });
    await closed;
    expect(w.stats).toMatchObject({ batches: 2, coming: 0 });
  });
});
