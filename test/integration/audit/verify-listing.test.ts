import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseCheckpoint } from '../../../src/audit/log/checkpoint.ts';
import { openNote, parseVerifierKey, verifierKey, type NoteSigner, type Verifier } from '../../../src/audit/log/note.ts';
import { checkpoint, sealAll } from '../../../src/audit/log/seal.ts';
import { fileSigner } from '../../../src/audit/log/signer.ts';
import { checkPatientListings } from '../../../src/audit/verify/listing.ts';
import { retainAuditEvents } from '../../../src/audit/verify/retain.ts';
import { verifyLog, type VerifyReport } from '../../../src/audit/verify/verify.ts';
import { createPool, type Pool } from '../../../src/db/pool.ts';
import { checkpointSignedAt } from '../../support/audit-checkpoint.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../../support/db.ts';

// `audit verify` checks the patient listing of v3 records (061), phigate.audit_record_patients,
// against the records: the view, the compliance functions and the disclosures find a patient's
// v3 events only through it, and it is not hashed. A superuser with the triggers off for the
// tamper step deletes, adds or moves a listing row, or lists a record that is not there: verify
// fails, naming the record and the slot.

const ORIGIN = 'phigate.test/verify-listing';
let dir: string;
let signer: NoteSigner;
let verifier: Verifier;
let db: TestDatabase | undefined;
let pool: Pool | undefined;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'phigate-verify-listing-'));
  signer = await fileSigner(path.join(dir, 'key.pem'), ORIGIN);
  verifier = parseVerifierKey(verifierKey(signer.name, signer.publicKey))!;
});
async function dropTrail(): Promise<void> {
  await pool?.end();
  await db?.drop();
  [pool, db] = [undefined, undefined];
}
afterEach(dropTrail);
afterAll(async () => rm(dir, { recursive: true, force: true }));

const admin = <T>(fn: (c: pg.Client) => Promise<T>) => withClient(db!.adminUrl, fn);

/** Superuser with every trigger off, for this statement only. */
const tamper = (sql: string, params: unknown[] = []) =>
  admin(async (c) => {
    await c.query('SET session_replication_role = replica');
    await c.query(sql, params);
  });

/** A v3 record of `patients` patients and a shape of two events (its listing written by 061's trigger); its id. */
async function addV3Record(c: pg.Client, requestId: string, patients: number, occurredAt: string | null): Promise<string> {
  const { rows } = await c.query<{ id: string }>(
    `INSERT INTO phigate.audit_records_v3 (occurred_at, request_id, actor, actor_kind, role, purpose, patient_ids, actions, type_names, fields, record_ids, details)
     SELECT coalesce($1::timestamptz, clock_timestamp()), $2, 'dr-listing', 'user', 'physician', 'treatment',
            (SELECT array_agg(gen_random_uuid()) FROM generate_series(1, $3::int)),
            '{read,masked}', '{Patient,Patient}', '{mrn,ssn}', array_fill(NULL::uuid, ARRAY[2 * $3::int]), '{NULL,NULL}'
     RETURNING id::text AS id`,
    [occurredAt, requestId, patients],
  );
  return rows[0]!.id;
}

/** A v2 record (one patient) between the v3 ones; its id. */
async function addV2Record(c: pg.Client, requestId: string, occurredAt: string | null): Promise<string> {
  const { rows } = await c.query<{ id: string }>(
    `INSERT INTO phigate.audit_records (occurred_at, request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
     VALUES (coalesce($1::timestamptz, clock_timestamp()), $2, 'dr-listing', 'user', 'physician', 'treatment', gen_random_uuid(),
             '{read}', '{Patient}', '{mrn}', '{NULL}', '{NULL}')
     RETURNING id::text AS id`,
    [occurredAt, requestId],
  );
  return rows[0]!.id;
}

/** Seals every committed row, however long other test files' transactions hold the sealer back. */
async function sealEverything(): Promise<void> {
  const unsealed = () =>
    admin(async (c) =>
      Number((await c.query<{ n: string }>(
        `SELECT (SELECT count(*) FROM phigate.audit_records r WHERE NOT EXISTS (SELECT 1 FROM phigate.audit_log l WHERE l.event_id = r.id << 16))
              + (SELECT count(*) FROM phigate.audit_records_v3 r WHERE NOT EXISTS (SELECT 1 FROM phigate.audit_log l WHERE l.event_id = r.id << 16)) AS n`,
      )).rows[0]!.n),
    );
  for (;;) {
    await sealAll(pool!, 1000);
    if ((await unsealed()) === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A fresh database with four v3 records of 3 patients and a v2 record among them, sealed and signed (as of `occurredAt` when given); the v3 records' ids. */
async function buildTrail(occurredAt: string | null = null): Promise<string[]> {
  await dropTrail();
  db = await createTestDatabase();
  pool = createPool(db.appUrl, { max: 2, applicationName: 'phigate-audit' });
  const records = await admin(async (c) => {
    const ids = [await addV3Record(c, 'page-1', 3, occurredAt), await addV3Record(c, 'page-2', 3, occurredAt)];
    await addV2Record(c, 'by-id', occurredAt);
    ids.push(await addV3Record(c, 'page-3', 3, occurredAt), await addV3Record(c, 'page-4', 3, occurredAt));
    return ids;
  });
  await sealEverything();
  if (occurredAt === null) await checkpoint(pool!, signer, { seconds: 0, events: 1, force: true });
  else await checkpointSignedAt(pool!, signer, new Date(Date.parse(occurredAt) + 1000));
  return records;
}

/** The signed time of the latest checkpoint, read from its note. */
const signedTime = () =>
  admin(async (c) => {
    const { rows } = await c.query<{ note: string }>('SELECT note FROM phigate.audit_checkpoints ORDER BY tree_size DESC LIMIT 1');
    return parseCheckpoint(openNote(rows[0]!.note, verifier)!)!.time!;
  });

const verify = (since: Date | null = null): Promise<VerifyReport> => admin((client) => verifyLog({ client, verifier, since }));
const firstEvent = (recordId: string) => String(BigInt(recordId) << 16n);

describe('audit verify and the patient listing of v3 records', () => {
  it('passes an untouched trail, every slot of every v3 record listed once', async () => {
    const records = await buildTrail();
    expect(await verify()).toMatchObject({ problem: null, leaves: 5, rehashed: 5, listed: records.length });
  });

  it('names the record and slot whose listing row was deleted', async () => {
    const records = await buildTrail();
    await tamper('DELETE FROM phigate.audit_record_patients WHERE record_id = $1 AND slot = 2', [records[2]]);
    const { problem } = await verify();
    expect(problem).toMatchObject({ kind: 'listing_missing', eventId: firstEvent(records[2]!) });
    expect(problem!.message).toContain(`record ${records[2]} (first event ${firstEvent(records[2]!)}), slot 2`);
  });

  it('with --since T, checks the listing of the records past the last checkpoint signed by T, whatever their rows\' times say', async () => {
    const records = await buildTrail();
    const since = new Date(await signedTime());
    const recent = await admin((c) => addV3Record(c, 'page-recent', 3, null));
    await tamper('DELETE FROM phigate.audit_record_patients WHERE record_id = $1 AND slot = 1', [records[3]]);
    expect(await verify(since)).toMatchObject({ problem: null, listed: 1, range: { fromLeaf: 5, listingFrom: recent } });
    // Not sealed yet, so no leaf to rehash: its time back-dated before T hides nothing from the listing's check.
    await tamper("UPDATE phigate.audit_records_v3 SET occurred_at = '2001-01-01' WHERE id = $1", [recent]);
    await tamper('DELETE FROM phigate.audit_record_patients WHERE record_id = $1 AND slot = 3', [recent]);
    expect((await verify(since)).problem).toMatchObject({ kind: 'listing_missing', eventId: firstEvent(recent) });
    expect((await verify()).problem).toMatchObject({ kind: 'listing_missing', eventId: firstEvent(records[3]!) });
  });

  it('names the record of an extra listing row: another patient at a listed slot, at a slot past its patients, or its patient twice', async () => {
    for (const [extra, slot] of [
      ['SELECT gen_random_uuid(), id, 2 FROM phigate.audit_records_v3 WHERE id = $1', 2],
      ['SELECT gen_random_uuid(), id, 4 FROM phigate.audit_records_v3 WHERE id = $1', 4],
      ['SELECT patient_ids[3], id, 3 FROM phigate.audit_records_v3 WHERE id = $1', 3],
    ] as const) {
      const records = await buildTrail();
      // The same patient twice in a record needs the unique index gone, which no trigger guards.
      if (slot === 3) await admin((c) => c.query('DROP INDEX phigate.audit_record_patients_patient'));
      await tamper(`INSERT INTO phigate.audit_record_patients (patient_id, record_id, slot) ${extra}`, [records[1]]);
      const { problem } = await verify();
      expect(problem, extra).toMatchObject({ kind: 'listing_extra', eventId: firstEvent(records[1]!) });
      expect(problem!.message).toContain(`record ${records[1]} (first event ${firstEvent(records[1]!)}), slot ${slot}`);
    }
  });

  it('names the record and slot a listing row was moved from', async () => {
    const records = await buildTrail();
    await tamper('UPDATE phigate.audit_record_patients SET slot = 3 WHERE record_id = $1 AND slot = 1', [records[3]]);
    const { problem } = await verify();
    expect(problem).toMatchObject({ kind: 'listing_missing', eventId: firstEvent(records[3]!) });
    expect(problem!.message).toContain(`record ${records[3]} (first event ${firstEvent(records[3]!)}), slot 1`);
  });

  it('names a listing row of a record that is not a v3 record: none, or a v2 record', async () => {
    const records = await buildTrail();
    const v2 = await admin(async (c) => (await c.query<{ id: string }>('SELECT id::text AS id FROM phigate.audit_records')).rows[0]!.id);
    for (const recordId of [String(BigInt(records[3]!) + 1000n), v2]) {
      await tamper('INSERT INTO phigate.audit_record_patients (patient_id, record_id, slot) VALUES (gen_random_uuid(), $1, 1)', [recordId]);
      const { problem } = await verify();
      expect(problem, recordId).toMatchObject({ kind: 'listing_extra', eventId: null });
      expect(problem!.message).toContain(`slot 1 of record ${recordId}, which is not a record of several patients`);
      await tamper('DELETE FROM phigate.audit_record_patients WHERE record_id = $1', [recordId]);
    }
    expect((await verify()).problem).toBeNull();
  });

  it('walks ranges of at most the slots asked (one record alone when larger) and finds a row missing or extra at every edge', async () => {
    await dropTrail();
    db = await createTestDatabase();
    const sizes = [2, 2, 2, 9, 2, 2];
    const [records, v2] = await admin(async (c) => {
      const ids: string[] = [];
      for (const [i, n] of sizes.entries()) ids.push(await addV3Record(c, `range-${i}`, n, null));
      return [ids, await addV2Record(c, 'by-id', null)] as const;
    });
    const check = () => {
      const steps: number[] = [];
      return admin((c) => checkPatientListings(c, { fromRecord: null, rowsPerRange: 4, onProgress: (done) => steps.push(done) })).then((r) => ({ ...r, steps }));
    };
    // Ranges: records 1-2 (4 slots), 3 (the 9-slot record 4 would pass 4), 4 alone, 5, then 6 to the end.
    expect(await check()).toEqual({ problem: null, records: 6, steps: [0, 2, 3, 4, 5, 6] });
    for (const [i, record] of records.entries()) {
      for (const slot of [1, sizes[i]!]) {
        await tamper('DELETE FROM phigate.audit_record_patients WHERE record_id = $1 AND slot = $2', [record, slot]);
        expect((await check()).problem, `record ${i + 1}, slot ${slot}`).toMatchObject({ kind: 'listing_missing', eventId: firstEvent(record) });
        await tamper('INSERT INTO phigate.audit_record_patients (patient_id, record_id, slot) SELECT patient_ids[$2], id, $2 FROM phigate.audit_records_v3 WHERE id = $1', [record, slot]);
      }
    }
    for (const id of [v2, String(BigInt(records.at(-1)!) + 1000n), String(2n ** 63n - 1n), String(-(2n ** 63n))]) {
      await tamper('INSERT INTO phigate.audit_record_patients (patient_id, record_id, slot) VALUES (gen_random_uuid(), $1, 1)', [id]);
      expect((await check()).problem, id).toMatchObject({ kind: 'listing_extra', eventId: null });
      await tamper('DELETE FROM phigate.audit_record_patients WHERE record_id = $1', [id]);
    }
    expect((await check()).problem).toBeNull();
  });

  // 070: the rows retention takes with its records are checked first, so a forged one is refused, not deleted unseen.
  const ADD = 'INSERT INTO phigate.audit_record_patients (patient_id, record_id, slot) VALUES (gen_random_uuid(), $1, $2)';
  const TAKE_BACK = 'DELETE FROM phigate.audit_record_patients WHERE record_id = $1 AND slot = $2 AND patient_id <> ALL (SELECT unnest(patient_ids) FROM phigate.audit_records_v3 WHERE id = $1)';
  it.each([
    { name: 'naming the v2 record between the removed ones', at: (_r: string[], v2: string) => [v2, 1], forge: ADD, undo: TAKE_BACK },
    { name: "listing another patient at a removed record's slot", at: (r: string[]) => [r[1]!, 2], forge: ADD, undo: TAKE_BACK },
    {
      name: "moving a removed record's patient to a slot it does not have",
      at: (r: string[]) => [r[2]!, 9],
      forge: 'UPDATE phigate.audit_record_patients SET slot = $2 WHERE record_id = $1 AND slot = 3',
      undo: 'UPDATE phigate.audit_record_patients SET slot = 3 WHERE record_id = $1 AND slot = $2',
    },
  ])('retention refuses a listing row $name before removing anything; without it, the same run passes', async ({ at, forge, undo }) => {
    const records = await buildTrail(new Date(Date.now() - 7 * 365 * 86_400_000).toISOString());
    const v2 = await admin(async (c) => (await c.query<{ id: string }>('SELECT id::text AS id FROM phigate.audit_records')).rows[0]!.id);
    const [record, slot] = at(records, v2);
    await tamper(forge, [record, slot]);
    const state = () =>
      admin(async (c) =>
        (await c.query(`SELECT (SELECT count(*)::int FROM phigate.audit_records_v3) AS v3, (SELECT count(*)::int FROM phigate.audit_records) AS v2,
                               (SELECT count(*)::int FROM phigate.audit_record_patients) AS listed, (SELECT count(*)::int FROM phigate.audit_retention_runs) AS runs,
                               (SELECT count(*)::int FROM phigate.audit_events WHERE action = 'retention') AS events`)).rows[0],
      );
    const before = await state();
    const cutoff = new Date(Date.now() - 6 * 365 * 86_400_000);
    const refused = await admin((c) => retainAuditEvents(c, cutoff, 'retain-forged', [], verifier)).then(
      () => null,
      (e: unknown) => e,
    );
    expect(refused).toMatchObject({ code: 'XX001', message: `retention refused: phigate.audit_record_patients lists slot ${slot} of record ${record}, which no v3 record this run removes holds` });
    expect(await state()).toEqual(before);
    await tamper(undo, [record, slot]);
    expect(await admin((c) => retainAuditEvents(c, cutoff, 'retain-clean', [], verifier))).toMatchObject({ fromLeaf: 0, toLeaf: 5 });
    // The one record left is the run's own event.
    expect(await state()).toEqual({ v3: 0, v2: 1, listed: 0, runs: 1, events: 1 });
  });

  it("retention refuses when a removed record's listing lacks a slot (the rows it would take are fewer than the slots), removing nothing", async () => {
    const records = await buildTrail(new Date(Date.now() - 7 * 365 * 86_400_000).toISOString());
    await tamper('DELETE FROM phigate.audit_record_patients WHERE record_id = $1 AND slot = 2', [records[3]]);
    const cutoff = new Date(Date.now() - 6 * 365 * 86_400_000);
    const refused = await admin((c) => retainAuditEvents(c, cutoff, 'retain-missing', [], verifier)).then(
      () => null,
      (e: unknown) => e,
    );
    expect(refused).toMatchObject({
      code: 'XX001',
      message: 'retention refused: phigate.audit_record_patients held 11 rows for the 12 patient slots of the v3 records this run removes; run audit verify',
    });
    expect(await admin(async (c) => (await c.query('SELECT count(*)::int AS n FROM phigate.audit_records_v3')).rows[0].n)).toBe(4);
    expect((await verify()).problem).toMatchObject({ kind: 'listing_missing', eventId: firstEvent(records[3]!) });
  });

  it('passes after retention took records and their listing, and names a listing row of a removed record', async () => {
    const records = await buildTrail(new Date(Date.now() - 7 * 365 * 86_400_000).toISOString());
    await admin((c) => retainAuditEvents(c, new Date(Date.now() - 6 * 365 * 86_400_000), 'retain-listing', [], verifier));
    expect(await admin(async (c) => (await c.query('SELECT count(*)::int AS n FROM phigate.audit_record_patients')).rows[0].n)).toBe(0);
    await sealEverything();
    await checkpoint(pool!, signer, { seconds: 0, events: 1, force: true });
    expect(await verify()).toMatchObject({ problem: null, retired: 5, listed: 0 });
    await tamper('INSERT INTO phigate.audit_record_patients (patient_id, record_id, slot) VALUES (gen_random_uuid(), $1, 2)', [records[0]]);
    expect((await verify()).problem).toMatchObject({ kind: 'listing_extra', eventId: null, message: expect.stringContaining(`slot 2 of record ${records[0]}`) });
  });
});
