import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseCheckpoint } from '../../../src/audit/log/checkpoint.ts';
import { openNote, parseVerifierKey, verifierKey, type NoteSigner, type Verifier } from '../../../src/audit/log/note.ts';
import { checkpoint, sealAll } from '../../../src/audit/log/seal.ts';
import { fileSigner } from '../../../src/audit/log/signer.ts';
import { verifyLog, type VerifyReport } from '../../../src/audit/verify/verify.ts';
import { rangeLine } from '../../../src/cli/audit-evidence.ts';
import { createPool, type Pool } from '../../../src/db/pool.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../../support/db.ts';

// `audit verify --since T` recomputes the leaves past the largest checkpoint whose SIGNED time is at
// or before T, never the rows whose own occurred_at says T or later: a superuser who rewrites a
// recent record (another actor, say) rewrites its time as well, and once picked the range by that
// column, so the altered record passed (an outside tester's finding, kept here as the first case).
// Nothing the database holds but the signed notes moves the range: not occurred_at, not the
// checkpoints' columns.

let dir: string;
let signer: NoteSigner;
let verifier: Verifier;
let db: TestDatabase | undefined;
let pool: Pool | undefined;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'fixverify-since-'));
  signer = await fileSigner(path.join(dir, 'key.pem'), 'phigate.test/verify-since');
  verifier = parseVerifierKey(verifierKey(signer.name, signer.publicKey))!;
});
async function fresh(): Promise<void> {
  db = await createTestDatabase();
  pool = createPool(db.appUrl, { max: 2, applicationName: 'phigate-audit' });
}
afterEach(async () => {
  await pool?.end();
  await db?.drop();
  [pool, db] = [undefined, undefined];
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

const admin = <T>(fn: (c: pg.Client) => Promise<T>) => withClient(db!.adminUrl, fn);

/** Superuser with every trigger off: what the append-only triggers cannot stop, verify must see. */
const tamper = (sql: string, params: unknown[] = []) =>
  admin(async (c) => {
    await c.query('SET session_replication_role = replica');
    await c.query(sql, params);
  });

/** One v2 record (someone read a patient's SSN); its leaf key, the id of its first event. */
const addRecord = (requestId: string) =>
  admin(async (c) => {
    const { rows } = await c.query<{ key: string }>(
      `INSERT INTO phigate.audit_records (request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
       VALUES ($1, 'dr-real', 'user', 'physician', 'treatment', gen_random_uuid(), '{read}', '{Patient}', '{ssn}', ARRAY[NULL::uuid], ARRAY[NULL::text])
       RETURNING (id << 16)::text AS key`,
      [requestId],
    );
    return rows[0]!.key;
  });

/** One v3 record of three patients (a page); its leaf key. */
const addPage = (requestId: string) =>
  admin(async (c) => {
    const { rows } = await c.query<{ key: string }>(
      `INSERT INTO phigate.audit_records_v3 (request_id, actor, actor_kind, role, purpose, patient_ids, actions, type_names, fields, record_ids, details)
       VALUES ($1, 'dr-real', 'user', 'physician', 'treatment', ARRAY[gen_random_uuid(), gen_random_uuid(), gen_random_uuid()],
               '{read}', '{Patient}', '{ssn}', array_fill(NULL::uuid, ARRAY[3]), '{NULL}')
       RETURNING (id << 16)::text AS key`,
      [requestId],
    );
    return rows[0]!.key;
  });

/** Seals every committed record, waiting while other test files' transactions hold the sealer back. */
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

/** Seals and signs; the checkpoint's signed time, read from its note as verify reads it. */
async function sealAndSign(): Promise<Date> {
  await sealEverything();
  const cp = await checkpoint(pool!, signer, { seconds: 0, events: 1, force: true });
  if (!cp.signed) throw new Error('no checkpoint signed');
  return new Date(parseCheckpoint(openNote(cp.note, verifier)!)!.time!);
}

const verify = (since: Date | null = null): Promise<VerifyReport> => admin((client) => verifyLog({ client, verifier, since }));

/** The tamper of the finding: who read it rewritten, and the record moved to 2001. */
const backdate = (table: string, key: string) =>
  tamper(`UPDATE phigate.${table} SET actor = 'dr-scapegoat', occurred_at = '2001-01-01' WHERE id = $1::bigint >> 16`, [key]);

describe('audit verify --since T picks its leaves by the signed checkpoints', () => {
  it('catches a recent record altered and back-dated when no checkpoint was signed by T: the whole log is recomputed', async () => {
    await fresh();
    const key = await addRecord('req-pentest');
    await sealAndSign();
    const since = new Date(Date.now() - 3_600_000);
    expect((await verify(since)).problem).toBeNull();
    await backdate('audit_records', key);
    expect((await verify()).problem).toMatchObject({ kind: 'event_altered', eventId: key });
    const report = await verify(since);
    expect(report.problem).toMatchObject({ kind: 'event_altered', eventId: key });
    expect(report.range).toEqual({ fromLeaf: 0, checkpoint: null, listingFrom: null });
    expect(rangeLine(report, since)).toContain('no checkpoint carries a signed time at or before it, so every leaf was recomputed');
  });

  it('recomputes every leaf past the last checkpoint signed by T, and catches one of them altered and back-dated, a record or a page', async () => {
    for (const [table, add] of [
      ['audit_records', addRecord],
      ['audit_records_v3', addPage],
    ] as const) {
      await fresh();
      const old = await addRecord('req-old');
      const since = await sealAndSign();
      const recent = [await add('req-recent-1'), await add('req-recent-2')];
      await sealAndSign();
      const clean = await verify(since);
      expect(clean, table).toMatchObject({ problem: null, leaves: 3, rehashed: 2, range: { fromLeaf: 1, checkpoint: { size: 1, time: since.getTime() } } });
      expect(rangeLine(clean, since)).toContain(`leaves 1 to the end recomputed (checkpoint 1, signed at ${since.toISOString()}, is the last signed at or before it); leaves 0 to 0 counted by their stored hashes`);
      await backdate(table, recent[1]!);
      expect((await verify(since)).problem, table).toMatchObject({ kind: 'event_altered', eventId: recent[1] });
      // One before the range is the signed roots' and a whole verify's to find, as the output says.
      await tamper("UPDATE phigate.audit_records SET actor = 'dr-scapegoat' WHERE id = $1::bigint >> 16", [old]);
      expect((await verify()).problem, table).toMatchObject({ kind: 'event_altered', eventId: old });
      await pool!.end();
      await db!.drop();
      [pool, db] = [undefined, undefined];
    }
  });

  it('recomputes the leaves sealed after the last checkpoint, not signed yet', async () => {
    await fresh();
    await addRecord('req-old');
    const since = await sealAndSign();
    const recent = await addRecord('req-unsigned');
    await sealEverything();
    expect(await verify(since)).toMatchObject({ problem: null, rehashed: 1, unsigned: 1, range: { fromLeaf: 1 } });
    await backdate('audit_records', recent);
    expect((await verify(since)).problem).toMatchObject({ kind: 'event_altered', eventId: recent });
  });

  it('is not narrowed by the checkpoints\' columns: signed_at back-dated, or a later checkpoint\'s time edited in its note', async () => {
    await fresh();
    await addRecord('req-old');
    const since = await sealAndSign();
    const recent = await addRecord('req-recent');
    await sealAndSign();
    await tamper("UPDATE phigate.audit_checkpoints SET signed_at = '2001-01-01'");
    await backdate('audit_records', recent);
    const report = await verify(since);
    expect(report.problem).toMatchObject({ kind: 'event_altered', eventId: recent });
    expect(report.range.fromLeaf).toBe(1);
    await tamper("UPDATE phigate.audit_checkpoints SET note = regexp_replace(note, '\\ntime [^\\n]*\\n', E'\\ntime 2001-01-01T00:00:00.000Z\\n') WHERE tree_size = 2");
    expect((await verify(since)).problem).toMatchObject({ kind: 'checkpoint_signature', eventId: recent });
  });
});
