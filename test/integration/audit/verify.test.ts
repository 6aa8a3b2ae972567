import { appendFile, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseVerifierKey, verifierKey, type NoteSigner, type Verifier } from '../../../src/audit/log/note.ts';
import { leafBytes, RECORD_LEAF_SELECT, type LeafRow } from '../../../src/audit/log/rows.ts';
import { checkpoint, sealAll } from '../../../src/audit/log/seal.ts';
import { fileSigner } from '../../../src/audit/log/signer.ts';
import { leafHash } from '../../../src/audit/log/tree.ts';
import { deliver } from '../../../src/audit/sink/deliver.ts';
import { fileSink } from '../../../src/audit/sink/file.ts';
import { checkProof } from '../../../src/audit/log/proof.ts';
import { proveConsistency, proveEvent } from '../../../src/audit/verify/prove.ts';
import { retainAuditEvents } from '../../../src/audit/verify/retain.ts';
import { CheckpointUnverifiedError } from '../../../src/audit/verify/retention-bound.ts';
import { sinkPositions, SinkUnreadableError } from '../../../src/audit/verify/sink-positions.ts';
import { verifyLog, type VerifyReport } from '../../../src/audit/verify/verify.ts';
import { createPool, type Pool } from '../../../src/db/pool.ts';
import { checkpointSignedAt } from '../../support/audit-checkpoint.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../../support/db.ts';

// `audit verify` against a real PostgreSQL: a superuser who disables the triggers edits the trail
// in each way the issue names, and verify names the event; the append-only triggers refuse
// UPDATE, DELETE and TRUNCATE to the owner and to superusers; retention removes only old ranges,
// is audited, and leaves a log that still verifies. The trail is the narrow layout (028): one
// leaf per audit record of several events, named by its first event's id, and the v1 events
// written before it, still leaves of their own.

const ORIGIN = 'phigate.test/verify';
let dir: string;
let signer: NoteSigner;
let verifier: Verifier;
let db: TestDatabase;
let pool: Pool;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'phigate-verify-'));
  signer = await fileSigner(path.join(dir, 'key.pem'), ORIGIN);
  verifier = parseVerifierKey(verifierKey(signer.name, signer.publicKey))!;
});
afterEach(async () => {
  await pool?.end();
  await db?.drop();
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

const admin = <T>(fn: (c: pg.Client) => Promise<T>) => withClient(db.adminUrl, fn);

/** Superuser with every trigger off: what the append-only triggers cannot stop, verify must see. */
const tamper = (sql: string, params: unknown[] = []) =>
  admin(async (c) => {
    await c.query('SET session_replication_role = replica');
    await c.query(sql, params);
  });

/** Events in one record of `events` events (one request, one patient), in its own transaction; its leaf key. */
async function addRecord(c: pg.Client, requestId: string, occurredAt: string | null = null, events = 3): Promise<string> {
  const { rows } = await c.query<{ key: string }>(
    `INSERT INTO phigate.audit_records (occurred_at, request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
     SELECT coalesce($1::timestamptz, clock_timestamp()), $2, 'dr-verify', 'user', 'physician', 'treatment', gen_random_uuid(),
            array_agg('read'::text), array_agg('Patient'::text), array_agg((ARRAY['ssn', 'mrn', 'givenName', 'familyName'])[1 + k % 4]),
            array_agg(NULL::uuid), array_agg(NULL::text)
     FROM generate_series(0, $3 - 1) k
     RETURNING (id << 16)::text AS key`,
    [occurredAt, requestId, events],
  );
  return rows[0]!.key;
}

/** Events written before the narrow layout: the frozen v1 table (a migration's rows; the superuser stands in). */
async function addV1Events(n: number, occurredAt: string | null = null): Promise<void> {
  await admin(async (c) => {
    for (let i = 0; i < n; i++) {
      await c.query(
        `INSERT INTO phigate.audit_events_v1 (occurred_at, request_id, actor, actor_kind, role, purpose, action, type_name, field, patient_id)
         VALUES (coalesce($1::timestamptz, clock_timestamp()), $2, 'dr-verify', 'user', 'physician', 'treatment', 'read', 'Patient', 'ssn', gen_random_uuid())`,
        [occurredAt, `v1-${i}`],
      );
    }
  });
}

/**
 * Records of 3 events in several transactions, sealed and signed in three rounds: checkpoints at 3
 * sizes; the leaf keys. Records dated `occurredAt` are signed as of then too, as the log of that
 * time was (retention goes by the signed time).
 */
async function buildLog(rounds = 3, perRound = 4, occurredAt: string | null = null): Promise<string[]> {
  for (let r = 0; r < rounds; r++) {
    await admin(async (c) => {
      for (let i = 0; i < perRound; i++) await addRecord(c, `req-${r}-${i}`, occurredAt);
    });
    await sealEverything();
    if (occurredAt === null) await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
    else await checkpointSignedAt(pool, signer, new Date(Date.parse(occurredAt) + 1000));
  }
  return ids();
}

/**
 * Seals every committed record and v1 event, in one sealing head. The sealer stops below the oldest
 * transaction running anywhere in the cluster, and other test files share this one: it waits until
 * none holds back a record of this log, since a round sealed in two heads would move the leaf a
 * tamper is named from (verify names the first leaf after the last root that still matches).
 */
async function sealEverything(): Promise<void> {
  const unsealed = (onlyHeld: boolean) =>
    admin(async (c) =>
      Number((await c.query<{ n: string }>(
        `SELECT (SELECT count(*) FROM phigate.audit_records r WHERE NOT EXISTS (SELECT 1 FROM phigate.audit_log l WHERE l.event_id = r.id << 16)
                   AND (NOT $1 OR r.tx >= pg_snapshot_xmin(pg_current_snapshot())))
              + (SELECT count(*) FROM phigate.audit_events_v1 e WHERE NOT EXISTS (SELECT 1 FROM phigate.audit_log l WHERE l.event_id = e.id)
                   AND (NOT $1 OR e.tx >= pg_snapshot_xmin(pg_current_snapshot()))) AS n`,
        [onlyHeld],
      )).rows[0]!.n),
    );
  while ((await unsealed(true)) > 0) await new Promise((r) => setTimeout(r, 50));
  await sealAll(pool, 1000);
  expect(await unsealed(false)).toBe(0);
}

const ids = () => admin(async (c) => (await c.query<{ event_id: string }>('SELECT event_id FROM phigate.audit_log ORDER BY leaf_index')).rows.map((r) => r.event_id));

const verify = (sinkDir: string | null = null, since: Date | null = null): Promise<VerifyReport> =>
  admin((client) => verifyLog({ client, verifier, sinkDir, since }));

async function fresh(): Promise<void> {
  db = await createTestDatabase();
  pool = createPool(db.appUrl, { max: 2, applicationName: 'phigate-audit' });
}

describe('audit verify on an untouched log', () => {
  it('passes, recomputing every leaf (v1 events and records), and counts what is not sealed or signed yet', async () => {
    await fresh();
    await addV1Events(3);
    const events = await buildLog();
    expect(events).toHaveLength(15);
    await admin((c) => c.query("INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name) VALUES ('late', 'x', 'system', 'HSYSADMIN', 'view', 'AuditLog')"));
    const r = await verify();
    expect(r).toMatchObject({ problem: null, leaves: events.length, rehashed: events.length, retired: 0, checkpoints: 3, unsigned: 0, unsealed: 1 });
    // --since: earlier events count by their stored hashes, still bound by the signed roots.
    const later = await verify(null, new Date(Date.now() + 60_000));
    expect(later).toMatchObject({ problem: null, rehashed: 0, leaves: events.length });
  });
});

describe('audit verify names the event a superuser with the triggers off tampered with', () => {
  it('an element of a record\'s event arrays edited, or a column of the record', async () => {
    await fresh();
    const events = await buildLog();
    await tamper("UPDATE phigate.audit_records SET fields[2] = 'notes' WHERE id = $1::bigint >> 16", [events[5]]);
    expect((await verify()).problem).toMatchObject({ kind: 'event_altered', eventId: events[5] });
    await fresh();
    const again = await buildLog();
    await tamper("UPDATE phigate.audit_records SET actor = 'someone-else' WHERE id = $1::bigint >> 16", [again[6]]);
    expect((await verify()).problem).toMatchObject({ kind: 'event_altered', eventId: again[6] });
  });

  it('an event added to or removed from a record, or two of its events swapped', { timeout: 120_000 }, async () => {
    for (const change of [
      "actions = actions || 'read'::text, type_names = type_names || 'Patient'::text, fields = fields || 'phone'::text, record_ids = record_ids || NULL::uuid, details = details || NULL::text",
      'actions = actions[1:2], type_names = type_names[1:2], fields = fields[1:2], record_ids = record_ids[1:2], details = details[1:2]',
      'fields = ARRAY[fields[2], fields[1], fields[3]]',
    ]) {
      await fresh();
      const events = await buildLog(2);
      await tamper(`UPDATE phigate.audit_records SET ${change} WHERE id = $1::bigint >> 16`, [events[3]]);
      expect((await verify()).problem, change).toMatchObject({ kind: 'event_altered', eventId: events[3] });
      await pool.end();
      await db.drop();
    }
    await fresh();
  });

  it('a record whose event arrays no longer line up (their CHECK dropped first)', async () => {
    await fresh();
    const events = await buildLog(1);
    await admin(async (c) => {
      const { rows } = await c.query<{ conname: string }>(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'phigate.audit_records'::regclass AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%cardinality(%details%'",
      );
      await c.query(`ALTER TABLE phigate.audit_records DROP CONSTRAINT ${rows[0]!.conname}`);
    });
    await tamper('UPDATE phigate.audit_records SET details = details[1:1] WHERE id = $1::bigint >> 16', [events[1]]);
    expect((await verify()).problem).toMatchObject({ kind: 'event_altered', eventId: events[1], message: expect.stringContaining('not a record') });
  });

  it('a deleted record', async () => {
    await fresh();
    const events = await buildLog();
    await tamper('DELETE FROM phigate.audit_records WHERE id = $1::bigint >> 16', [events[7]]);
    expect((await verify()).problem).toMatchObject({ kind: 'event_missing', eventId: events[7] });
  });

  it('a deleted record and its leaf', async () => {
    await fresh();
    const events = await buildLog();
    await tamper('DELETE FROM phigate.audit_records WHERE id = $1::bigint >> 16', [events[7]]);
    await tamper('DELETE FROM phigate.audit_log WHERE event_id = $1', [events[7]]);
    expect((await verify()).problem).toMatchObject({ kind: 'leaf_missing', eventId: events[8] });
  });

  it('an inserted record, slipped in among the sealed ones', async () => {
    await fresh();
    const events = await buildLog();
    const id = await admin(async (c) => {
      await c.query('SET session_replication_role = replica');
      const { rows } = await c.query<{ key: string }>(
        `INSERT INTO phigate.audit_records (id, tx, request_id, actor, actor_kind, purpose, actions, type_names, fields, record_ids, details)
         OVERRIDING SYSTEM VALUE
         SELECT max(id) + 100, (SELECT tx FROM phigate.audit_records WHERE id = $1::bigint >> 16), 'forged', 'dr-verify', 'user', 'treatment',
                ARRAY['read'], ARRAY['Patient'], ARRAY['ssn'], ARRAY[NULL::uuid], ARRAY[NULL::text]
         FROM phigate.audit_records RETURNING (id << 16)::text AS key`,
        [events[2]],
      );
      return rows[0]!.key;
    });
    expect((await verify()).problem).toMatchObject({ kind: 'event_unlogged', eventId: id });
  });

  it('an inserted record with a leaf of its own (later leaves shifted)', async () => {
    await fresh();
    const events = await buildLog();
    // Shifted through a free range: the primary key is checked row by row.
    await tamper('UPDATE phigate.audit_log SET leaf_index = leaf_index + 1000001 WHERE leaf_index >= 6');
    await tamper('UPDATE phigate.audit_log SET leaf_index = leaf_index - 1000000 WHERE leaf_index > 1000000');
    await tamper(
      `INSERT INTO phigate.audit_records (id, tx, request_id, actor, actor_kind, purpose, actions, type_names, fields, record_ids, details)
       OVERRIDING SYSTEM VALUE VALUES (1000, (SELECT tx FROM phigate.audit_records WHERE id = $1::bigint >> 16), 'forged', 'dr-verify', 'user',
       'treatment', ARRAY['read'], ARRAY['Patient'], ARRAY['ssn'], ARRAY[NULL::uuid], ARRAY[NULL::text])`,
      [events[5]],
    );
    const forged = await admin(async (c) => leafHash(leafBytes((await c.query<LeafRow>(`${RECORD_SQL} WHERE r.id = 1000`)).rows[0]!)));
    await tamper('INSERT INTO phigate.audit_log (leaf_index, event_id, leaf_hash) VALUES (6, 1000 << 16, $1)', [forged]);
    // Every stored hash matches its row now: only the signed roots give it away. Leaves 4..7 of
    // the second checkpoint's range are named from their first; with a sink, the exact event.
    const r = await verify();
    expect(r.problem).toMatchObject({ kind: 'root_mismatch', eventId: events[4] });
    expect(r.problem!.message).toContain(`events ${events[4]} to`);
  });

  it('two events swapped in the log', async () => {
    await fresh();
    const events = await buildLog();
    await tamper('UPDATE phigate.audit_log SET leaf_index = 1000000 WHERE leaf_index = 3');
    await tamper('UPDATE phigate.audit_log SET leaf_index = 3 WHERE leaf_index = 9');
    await tamper('UPDATE phigate.audit_log SET leaf_index = 9 WHERE leaf_index = 1000000');
    // Leaf 3 now holds the event of leaf 9, which sorts after the event of leaf 4.
    expect((await verify()).problem).toMatchObject({ kind: 'event_out_of_order', eventId: events[9] });
  });

  it('two records swapped in audit_records (their facts exchanged, ids kept)', async () => {
    await fresh();
    const events = await buildLog();
    await tamper(
      `UPDATE phigate.audit_records a SET request_id = b.request_id, patient_id = b.patient_id, occurred_at = b.occurred_at
       FROM phigate.audit_records b WHERE (a.id, b.id) IN (($1::bigint >> 16, $2::bigint >> 16), ($2::bigint >> 16, $1::bigint >> 16))`,
      [events[3], events[9]],
    );
    expect((await verify()).problem).toMatchObject({ kind: 'event_altered', eventId: events[3] });
  });

  it('a truncated and refilled audit_records, one element altered', async () => {
    await fresh();
    const events = await buildLog();
    await admin(async (c) => {
      await c.query('SET session_replication_role = replica');
      await c.query('BEGIN');
      await c.query('CREATE TEMP TABLE copy ON COMMIT DROP AS SELECT * FROM phigate.audit_records');
      await c.query('TRUNCATE phigate.audit_records');
      await c.query("UPDATE copy SET actions[3] = 'masked' WHERE id = $1::bigint >> 16", [events[10]]);
      await c.query('INSERT INTO phigate.audit_records OVERRIDING SYSTEM VALUE SELECT * FROM copy');
      await c.query('COMMIT');
    });
    expect((await verify()).problem).toMatchObject({ kind: 'event_altered', eventId: events[10] });
  });

  it('a truncated and refilled audit_records, renumbered', async () => {
    await fresh();
    const events = await buildLog();
    await admin(async (c) => {
      await c.query('SET session_replication_role = replica');
      await c.query('BEGIN');
      await c.query('CREATE TEMP TABLE copy ON COMMIT DROP AS SELECT * FROM phigate.audit_records');
      await c.query('TRUNCATE phigate.audit_records');
      await c.query(
        `INSERT INTO phigate.audit_records (occurred_at, request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
         SELECT occurred_at, request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details FROM copy ORDER BY id`,
      );
      await c.query('COMMIT');
    });
    expect((await verify()).problem).toMatchObject({ kind: 'event_missing', eventId: events[0] });
  });

  it('a v1 event of before the narrow layout, edited', async () => {
    await fresh();
    await addV1Events(4);
    const events = await buildLog(2);
    expect(await verify()).toMatchObject({ problem: null, leaves: 12, rehashed: 12 });
    await tamper("UPDATE phigate.audit_events_v1 SET purpose = 'payment' WHERE id = $1", [events[2]]);
    expect((await verify()).problem).toMatchObject({ kind: 'event_altered', eventId: events[2] });
  });

  it('the newest leaves and their records deleted', async () => {
    await fresh();
    const events = await buildLog();
    await tamper('DELETE FROM phigate.audit_records WHERE id << 16 = ANY($1::bigint[])', [events.slice(10)]);
    await tamper('DELETE FROM phigate.audit_log WHERE leaf_index >= 10');
    expect((await verify()).problem).toMatchObject({ kind: 'leaves_missing', eventId: events[9] });
  });

  it('an edited checkpoint row: its note, or its columns', async () => {
    await fresh();
    const events = await buildLog();
    await tamper("UPDATE phigate.audit_checkpoints SET note = replace(note, E'\\n8\\n', E'\\n7\\n') WHERE tree_size = 8");
    expect((await verify()).problem).toMatchObject({ kind: 'checkpoint_signature', eventId: events[7] });
    await fresh();
    const again = await buildLog();
    await tamper('UPDATE phigate.audit_checkpoints SET root = (SELECT root FROM phigate.audit_checkpoints WHERE tree_size = 4) WHERE tree_size = 12');
    expect((await verify()).problem).toMatchObject({ kind: 'checkpoint_row', eventId: again[11] });
  });

  it('an updated event whose leaf hash was recomputed to match: the sink names it', async () => {
    await fresh();
    const events = await buildLog();
    const sinkDir = path.join(dir, `sink-${db.name}`);
    await writeSink(sinkDir);
    expect(await verify(sinkDir)).toMatchObject({ problem: null, sinkCompared: events.length });
    await tamper("UPDATE phigate.audit_records SET fields[1] = 'phone' WHERE id = $1::bigint >> 16", [events[6]]);
    await tamper(
      `UPDATE phigate.audit_log SET leaf_hash = $2 WHERE event_id = $1`,
      [events[6], await admin(async (c) => leafHash(leafBytes((await c.query<LeafRow>(`${RECORD_SQL} WHERE r.id = $1::bigint >> 16`, [events[6]])).rows[0]!)))],
    );
    expect((await verify(sinkDir)).problem).toMatchObject({ kind: 'sink_differs', eventId: events[6] });
    expect((await verify()).problem).toMatchObject({ kind: 'root_mismatch', eventId: events[4] });
  });

  it('a sink the gateways deliver to during the walk: lines newer than its snapshot are not leaves the database lacks', async () => {
    await fresh();
    const events = await buildLog();
    const sinkDir = path.join(dir, `sink-${db.name}`);
    await writeSink(sinkDir);
    const r = await admin(async (client) => {
      // Right after the statement that fixes the walk's snapshot, a gateway seals, signs and delivers more.
      let statements = 0;
      const racing = new Proxy(client, {
        get(target, prop) {
          if (prop !== 'query') return Reflect.get(target, prop, target);
          return async (...args: unknown[]) => {
            const result = await (target.query as (...a: unknown[]) => Promise<unknown>).apply(target, args);
            if (++statements === 2) {
              await buildLog(1);
              await writeSink(sinkDir);
            }
            return result;
          };
        },
      });
      return verifyLog({ client: racing, verifier, sinkDir });
    });
    expect(r).toMatchObject({ problem: null, leaves: events.length, sinkCompared: events.length });
    expect(await verify(sinkDir)).toMatchObject({ problem: null, leaves: events.length + 4, sinkCompared: events.length + 4 });
  });

  it('a checkpoint the sink holds and the database lost', async () => {
    await fresh();
    const events = await buildLog();
    const sinkDir = path.join(dir, `sink-${db.name}`);
    await writeSink(sinkDir);
    await tamper('DELETE FROM phigate.audit_checkpoints WHERE tree_size = 12');
    expect((await verify(sinkDir)).problem).toMatchObject({ kind: 'sink_checkpoint', eventId: events[11] });
  });
});

const RECORD_SQL = `SELECT ${RECORD_LEAF_SELECT} FROM phigate.audit_records r`;

/** Everything sealed and signed now, delivered to a file sink in `sinkDir`. */
async function writeSink(sinkDir: string): Promise<void> {
  expect(await deliver(pool, await fileSink(sinkDir, 1 << 20), 1000)).toBeGreaterThan(0);
}

describe('proofs over tiles', () => {
  it('cache tile roots once, check out with the public key, and survive a wrong cached tile', async () => {
    await fresh();
    await admin((c) =>
      c.query(`INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name, field)
               SELECT 'req-' || g, 'dr-tiles', 'user', 'treatment', 'read', 'Patient', 'ssn' FROM generate_series(1, 3000) g`),
    );
    await sealEverything();
    await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
    const events = await ids();
    const key = verifierKey(signer.name, signer.publicKey);
    const proof = await admin((c) => proveEvent(c, events[2500]!));
    expect(checkProof(proof, key)).toMatchObject({ ok: true, leafIndex: 2500, checkpoint: { size: 3000 } });
    const tiles = await admin(async (c) => (await c.query<{ start: string }>('SELECT start FROM phigate.audit_log_tiles ORDER BY start')).rows.map((r) => r.start));
    expect(tiles).toEqual(['0', '1024']);
    // A cached root is not evidence: a wrong one sends prove back to the leaves, and the proof still holds.
    await admin((c) => c.query("UPDATE phigate.audit_log_tiles SET root = sha256('wrong') WHERE start = 0"));
    expect(checkProof(await admin((c) => proveEvent(c, events[2500]!)), key)).toMatchObject({ ok: true, leafIndex: 2500 });
    expect(checkProof(await admin((c) => proveConsistency(c, 3000, null)), key)).toMatchObject({ ok: true });
    // A proof is never made over a log that does not match its signed root.
    await tamper('UPDATE phigate.audit_log SET leaf_hash = sha256(leaf_hash) WHERE leaf_index = 10');
    await expect(admin((c) => proveEvent(c, events[2500]!))).rejects.toThrow(`event ${events[2500]}'s path does not match its signed checkpoint`);
  });
});

const TABLES = ['audit_events_v1', 'audit_records', 'audit_batches', 'audit_log', 'audit_log_heads', 'audit_checkpoints', 'audit_retention_runs'];
const SET: Record<string, string> = {
  audit_events: 'actor = actor',
  audit_events_v1: 'actor = actor',
  audit_records: 'actor = actor',
  audit_batches: 'events = events',
  audit_log: 'leaf_hash = leaf_hash',
  audit_log_heads: 'root = root',
  audit_checkpoints: 'note = note',
  audit_retention_runs: 'events = events',
};

describe('append-only for everyone', () => {
  it('refuses UPDATE, DELETE and TRUNCATE of every evidence table, and UPDATE and DELETE through the view, to the owner and to a superuser', async () => {
    await fresh();
    await addV1Events(1);
    await buildLog(1, 2);
    // Row triggers fire only for rows: every table gets one.
    await admin((c) => c.query('INSERT INTO phigate.audit_batches (id, events) VALUES (gen_random_uuid(), 1)'));
    await admin((c) => c.query('INSERT INTO phigate.audit_retention_runs (cutoff, from_leaf, to_leaf, events, event_id) VALUES (now(), 0, 0, 0, 1)'));
    const refused: string[] = [];
    for (const asOwner of [true, false]) {
      const statements = [
        ...TABLES.flatMap((t) => [`UPDATE phigate.${t} SET ${SET[t]}`, `DELETE FROM phigate.${t}`, `TRUNCATE phigate.${t} CASCADE`]),
        `UPDATE phigate.audit_events SET ${SET.audit_events}`,
        'DELETE FROM phigate.audit_events',
      ];
      for (const stmt of statements) {
        const err = await admin(async (c) => {
          if (asOwner) await c.query('SET ROLE phigate_owner');
          return c.query(stmt).then(
            () => null,
            (e: { code?: string; message: string }) => e,
          );
        });
        expect(err, `${asOwner ? 'owner' : 'superuser'}: ${stmt}`).toMatchObject({ code: '42501', message: expect.stringContaining('append-only') });
        refused.push(stmt);
      }
    }
    expect(refused).toHaveLength(2 * (TABLES.length * 3 + 2));
  });

  it('grants the gateway INSERT (and SELECT where it seals), never UPDATE, DELETE or TRUNCATE', async () => {
    await fresh();
    const rows = await admin(async (c) => {
      const app = 'phigate_app';
      const out: Record<string, Record<string, boolean>> = {};
      for (const t of TABLES) {
        out[t] = {};
        for (const p of ['INSERT', 'SELECT', 'UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER', 'REFERENCES']) {
          const { rows: r } = await c.query<{ ok: boolean }>(
            `SELECT has_table_privilege($1, $2, $3) OR (($3 IN ('INSERT', 'SELECT', 'UPDATE', 'REFERENCES')) AND has_any_column_privilege($1, $2, $3)) AS ok`,
            [app, `phigate.${t}`, p],
          );
          out[t]![p] = r[0]!.ok;
        }
      }
      return out;
    });
    for (const t of TABLES) {
      for (const p of ['UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER', 'REFERENCES']) expect(rows[t]![p], `${t} ${p}`).toBe(false);
    }
    expect(rows.audit_records).toMatchObject({ INSERT: true, SELECT: false });
    expect(rows.audit_events_v1).toMatchObject({ INSERT: false, SELECT: false });
    expect(rows.audit_log).toMatchObject({ INSERT: true, SELECT: true });
    expect(rows.audit_retention_runs).toMatchObject({ INSERT: false, SELECT: true });
  });

  it('refuses a DELETE that only sets a custom setting, whatever it is named', async () => {
    await fresh();
    const events = await buildLog(1, 2);
    const err = await admin(async (c) => {
      await c.query('BEGIN');
      await c.query("SELECT set_config('phigate.retention', 'on', true)");
      return c.query('DELETE FROM phigate.audit_records WHERE id = $1::bigint >> 16', [events[0]]).then(() => null, (e: { code?: string }) => e);
    });
    expect(err).toMatchObject({ code: '42501' });
  });
});

describe('retention', () => {
  // Leaves made seven years ago, past a retention cutoff six years ago.
  const longAgo = new Date(Date.now() - 7 * 365 * 86_400_000).toISOString();
  const cutoff = new Date(Date.now() - 6 * 365 * 86_400_000);
  it('removes only the leading range past retention, whole records and v1 events, is audited, keeps leaves and checkpoints, and verify still passes', async () => {
    await fresh();
    await addV1Events(2, longAgo);
    const old = await buildLog(2, 3, longAgo);
    const recent = (await buildLog(1, 3)).slice(old.length);
    const checkpointsBefore = await admin(async (c) => (await c.query('SELECT tree_size, note FROM phigate.audit_checkpoints ORDER BY tree_size')).rows);

    const run = await admin((c) => retainAuditEvents(c, cutoff, 'retain-test-1', [], verifier));
    // 2 v1 events and 6 records of 3 events: 8 leaves, 20 events.
    expect(run).toMatchObject({ fromLeaf: 0, toLeaf: old.length, events: 2 + 6 * 3 });
    const left = await admin(async (c) => (await c.query<{ key: string }>('SELECT (id << 16)::text AS key FROM phigate.audit_records ORDER BY id')).rows.map((r) => r.key));
    expect(left).toEqual([...recent, run.eventId]);
    expect(await admin(async (c) => (await c.query('SELECT id FROM phigate.audit_events_v1')).rows)).toEqual([]);
    const audit = await admin(async (c) => (await c.query('SELECT actor, actor_kind, action, type_name, detail, request_id FROM phigate.audit_events WHERE id = $1', [run.eventId])).rows[0]);
    expect(audit).toMatchObject({ actor_kind: 'system', action: 'retention', type_name: 'AuditLog', detail: `leaves:0-${old.length}`, request_id: 'retain-test-1' });
    expect(await admin(async (c) => (await c.query('SELECT tree_size, note FROM phigate.audit_checkpoints ORDER BY tree_size')).rows)).toEqual(checkpointsBefore);
    expect(await ids()).toEqual([...old, ...recent]);

    // The retention event is sealed and signed like any other; the removed range counts by its kept hashes.
    await sealEverything();
    await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
    expect(await verify()).toMatchObject({ problem: null, retired: old.length, rehashed: recent.length + 1, leaves: old.length + recent.length + 1 });
    // A sink that starts now gets what is left, after the removed range, and agrees with the database.
    const sinkDir = path.join(dir, `sink-${db.name}`);
    await writeSink(sinkDir);
    expect(await verify(sinkDir)).toMatchObject({ problem: null, sinkCompared: recent.length + 1 });

    // A second run finds nothing more to remove, and is audited all the same.
    const again = await admin((c) => retainAuditEvents(c, cutoff, 'retain-test-2', [], verifier));
    expect(again).toMatchObject({ fromLeaf: old.length, toLeaf: old.length, events: 0 });
    await sealEverything();
    await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
    expect((await verify()).problem).toBeNull();

    // Outside the job, recent and old alike stay undeletable.
    const err = await admin((c) => c.query('DELETE FROM phigate.audit_records WHERE id = $1::bigint >> 16', [recent[0]]).then(() => null, (e: { code?: string }) => e));
    expect(err).toMatchObject({ code: '42501' });
  });

  it('stops at the last checkpoint signed before the cutoff, by its signed time, and sooner at the first record inside the period', async () => {
    await fresh();
    const signed = await buildLog(2, 3, longAgo);
    // An old record sealed but under no checkpoint yet: it stays.
    await admin((c) => addRecord(c, 'unsigned', longAgo, 2));
    await sealEverything();
    const first = await admin((c) => retainAuditEvents(c, cutoff, 'retain-1', [], verifier));
    expect(first).toMatchObject({ fromLeaf: 0, toLeaf: signed.length, events: signed.length * 3, checkpoint: { size: signed.length }, untimed: 0 });
    // Signed now, it stays all the same: its row says seven years, its checkpoint says today.
    await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
    expect(await admin((c) => retainAuditEvents(c, cutoff, 'retain-2', [], verifier))).toMatchObject({ fromLeaf: signed.length, toLeaf: signed.length, events: 0, checkpoint: { size: signed.length } });
    // A checkpoint after today's that claims an old time moves no bound past today's.
    await admin((c) => addRecord(c, 'old-again', longAgo, 2));
    await sealEverything();
    await checkpointSignedAt(pool, signer, new Date(longAgo));
    expect(await admin((c) => retainAuditEvents(c, cutoff, 'retain-3', [], verifier))).toMatchObject({ toLeaf: signed.length, events: 0, checkpoint: { size: signed.length } });
    await sealEverything();
    await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
    expect(await verify()).toMatchObject({ problem: null, retired: signed.length });
  });

  it("ends sooner at a record whose own time is inside the period, even under an old signed checkpoint: a row's time only ever keeps events", async () => {
    await fresh();
    const old = await buildLog(1, 2, longAgo);
    await admin(async (c) => {
      await addRecord(c, 'recent');
      await addRecord(c, 'old', longAgo);
    });
    await sealEverything();
    await checkpointSignedAt(pool, signer, new Date(Date.parse(longAgo) + 2000));
    expect(await admin((c) => retainAuditEvents(c, cutoff, 'retain-row-time', [], verifier))).toMatchObject({ fromLeaf: 0, toLeaf: old.length, heldBack: 0, checkpoint: { size: old.length + 2 } });
  });

  it('takes no bound from a checkpoint without a signed time, and goes on under a later timed one', async () => {
    await fresh();
    await addV1Events(2, longAgo);
    await buildLog(1, 2, longAgo);
    await tamper('DELETE FROM phigate.audit_checkpoints');
    const untimed = await checkpointSignedAt(pool, signer, null);
    const none = await admin((c) => retainAuditEvents(c, cutoff, 'retain-untimed', [], verifier));
    expect(none).toMatchObject({ fromLeaf: 0, toLeaf: 0, events: 0, checkpoint: null, untimed: 1 });
    await admin((c) => addRecord(c, 'old-timed', longAgo));
    await sealEverything();
    const timed = await checkpointSignedAt(pool, signer, new Date(Date.parse(longAgo) + 5000));
    // The range ends at the first run's own event (leaf 4, today), sealed before the old record.
    expect(timed).toBe(untimed + 2);
    expect(await admin((c) => retainAuditEvents(c, cutoff, 'retain-timed', [], verifier))).toMatchObject({ fromLeaf: 0, toLeaf: untimed, checkpoint: { size: timed }, untimed: 0 });
  });

  it('refuses, removing nothing, when a stored checkpoint does not check out with the public key', async () => {
    await fresh();
    await buildLog(2, 2, longAgo);
    const other = await fileSigner(path.join(dir, `other-${db.name}.pem`), ORIGIN);
    const runs = () => admin(async (c) => Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM phigate.audit_retention_runs')).rows[0]!.n));
    // A checkpoint signed by another key, or an edited note: no run at all, and the error names the checkpoint.
    await tamper('DELETE FROM phigate.audit_checkpoints WHERE tree_size = 4');
    await checkpointSignedAt(pool, other, new Date(longAgo));
    const forged = await admin((c) => retainAuditEvents(c, cutoff, 'retain-forged-key', [], verifier)).then(() => null, (e: unknown) => e);
    expect(forged).toBeInstanceOf(CheckpointUnverifiedError);
    expect(forged).toMatchObject({ size: 4, kind: 'checkpoint_signature', code: 'CHECKPOINT_UNVERIFIED' });
    await tamper('DELETE FROM phigate.audit_checkpoints WHERE tree_size = 4');
    await checkpointSignedAt(pool, signer, new Date(longAgo));
    await tamper("UPDATE phigate.audit_checkpoints SET note = replace(note, E'\\n4\\n', E'\\n3\\n') WHERE tree_size = 4");
    expect(await admin((c) => retainAuditEvents(c, cutoff, 'retain-edited', [], verifier)).then(() => null, (e: unknown) => e)).toMatchObject({ size: 4, kind: 'checkpoint_signature' });
    expect(await runs()).toBe(0);
  });

  it('the database function refuses a bound it cannot check itself: no stored checkpoint of that size and note, no time line, or a time not before the cutoff', async () => {
    await fresh();
    await buildLog(1, 2, longAgo);
    const cps = await admin(async (c) => (await c.query<{ tree_size: string; note: string }>('SELECT tree_size, note FROM phigate.audit_checkpoints ORDER BY tree_size')).rows);
    const old = cps[0]!;
    await buildLog(1, 2);
    const today = (await admin(async (c) => (await c.query<{ tree_size: string; note: string }>('SELECT tree_size, note FROM phigate.audit_checkpoints WHERE tree_size > $1', [old.tree_size])).rows))[0]!;
    const call = (size: string | null, note: string | null, before = cutoff) =>
      admin((c) => c.query('SELECT * FROM phigate.retain_audit_events($1, $2, NULL, $3, $4)', [before, 'retain-direct', size, note])).then(
        () => null,
        (e: { code?: string; message?: string }) => ({ code: e.code, message: e.message }),
      );
    expect(await call('4', old.note)).toMatchObject({ code: '22023', message: expect.stringContaining('no stored checkpoint of size 4') });
    expect(await call(old.tree_size, old.note.replace('time ', 'time  '))).toMatchObject({ code: '22023' });
    expect(await call(today.tree_size, today.note)).toMatchObject({ code: '22023', message: expect.stringContaining('not before the cutoff') });
    expect(await call(old.tree_size, null)).toMatchObject({ code: '22023' });
    // A stored note without a time line (signed before it existed, here by the test's key).
    await tamper('DELETE FROM phigate.audit_checkpoints');
    await checkpointSignedAt(pool, signer, null);
    const untimed = (await admin(async (c) => (await c.query<{ tree_size: string; note: string }>('SELECT tree_size, note FROM phigate.audit_checkpoints')).rows))[0]!;
    expect(await call(untimed.tree_size, untimed.note, new Date(Date.now() - 1000))).toMatchObject({ code: '22023', message: expect.stringContaining('carries no signed time') });
    expect(await admin(async (c) => Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM phigate.audit_retention_runs')).rows[0]!.n))).toBe(0);
    // Given none, the run removes nothing and is still recorded and audited.
    await admin((c) => c.query('SELECT * FROM phigate.retain_audit_events($1, $2, NULL, NULL, NULL)', [cutoff, 'retain-nothing']));
    expect(await admin(async (c) => (await c.query('SELECT from_leaf, to_leaf, events FROM phigate.audit_retention_runs')).rows)).toEqual([{ from_leaf: '0', to_leaf: '0', events: '0' }]);
  });

  it('lets a record go only under a run that covers its leaf, and only whole', async () => {
    await fresh();
    const events = await buildLog(1, 3, longAgo);
    // A run of this transaction that covers leaves 0..1 only: the record of leaf 2 stays refused.
    const err = await admin(async (c) => {
      await c.query('BEGIN');
      await c.query("INSERT INTO phigate.audit_retention_runs (cutoff, from_leaf, to_leaf, events, event_id) VALUES (now(), 0, 2, 6, 1)");
      await c.query('DELETE FROM phigate.audit_records WHERE id = $1::bigint >> 16', [events[0]]);
      return c.query('DELETE FROM phigate.audit_records WHERE id = $1::bigint >> 16', [events[2]]).then(() => null, (e: { code?: string }) => e);
    });
    expect(err).toMatchObject({ code: '42501' });
    // An element of a record cannot be cut out under a run either: an UPDATE is refused.
    const update = await admin(async (c) => {
      await c.query('BEGIN');
      await c.query("INSERT INTO phigate.audit_retention_runs (cutoff, from_leaf, to_leaf, events, event_id) VALUES (now(), 0, 3, 9, 1)");
      return c.query('UPDATE phigate.audit_records SET fields[1] = NULL WHERE id = $1::bigint >> 16', [events[0]]).then(() => null, (e: { code?: string }) => e);
    });
    expect(update).toMatchObject({ code: '42501' });
  });

  it('stays behind a sink that has not delivered what is past retention, and records the bound it used', async () => {
    await fresh();
    const sinkDir = path.join(dir, `sink-${db.name}`);
    // The sink took the first 3 leaves, then fell behind: 6 leaves are past retention, it holds 3.
    const first = await buildLog(1, 3, longAgo);
    await writeSink(sinkDir);
    const all = await buildLog(1, 3, longAgo);
    const sinks = { sinkDir, sinkStdout: false };
    // A deliverer caught mid-line: the torn line is not counted, and reading leaves it where it is.
    const file = path.join(sinkDir, (await readdir(sinkDir)).sort().at(-1)!);
    await appendFile(file, '{"audit":"record","leaf":3,"id":"');
    const size = (await stat(file)).size;

    const run = await admin(async (c) => retainAuditEvents(c, cutoff, 'retain-behind', await sinkPositions(sinks, c), verifier));
    expect((await stat(file)).size).toBe(size);
    expect(run).toMatchObject({ fromLeaf: 0, toLeaf: first.length, events: first.length * 3, heldBack: all.length - first.length, bound: { sink: `file:${sinkDir}`, nextLeaf: first.length } });
    // What the sink has not got stays in the database, whole.
    expect(await admin(async (c) => Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM phigate.audit_records WHERE id << 16 = ANY($1::bigint[])', [all.slice(first.length)])).rows[0]!.n))).toBe(all.length - first.length);
    const row = await admin(async (c) => (await c.query('SELECT sink_bound FROM phigate.audit_retention_runs WHERE event_id = $1', [run.eventId])).rows[0]);
    expect(row).toEqual({ sink_bound: String(first.length) });
    const audit = await admin(async (c) => (await c.query('SELECT detail FROM phigate.audit_events WHERE id = $1', [run.eventId])).rows[0]);
    expect(audit).toEqual({ detail: `leaves:0-${first.length}:sink:${first.length}` });
    await sealEverything();
    await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
    expect(await verify(sinkDir)).toMatchObject({ problem: null, retired: first.length });

    // Once the sink has caught up (and is ahead of what retention may take), it bounds nothing.
    await writeSink(sinkDir);
    const next = await admin(async (c) => retainAuditEvents(c, cutoff, 'retain-caught-up', await sinkPositions(sinks, c), verifier));
    expect(next).toMatchObject({ fromLeaf: first.length, toLeaf: all.length, heldBack: 0, bound: { nextLeaf: all.length + 1 } });
    await sealEverything();
    await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
    await writeSink(sinkDir);
    expect(await verify(sinkDir)).toMatchObject({ problem: null, retired: all.length });
  });

  it('is bounded by the sink furthest behind: the stdout cursor, or no cursor at all', async () => {
    await fresh();
    const sinkDir = path.join(dir, `sink-${db.name}`);
    const old = await buildLog(2, 3, longAgo);
    await writeSink(sinkDir);
    const both = { sinkDir, sinkStdout: true };
    // stdout has delivered nothing yet (no cursor row): nothing goes, and the run says why.
    const none = await admin(async (c) => retainAuditEvents(c, cutoff, 'retain-stdout-0', await sinkPositions(both, c), verifier));
    expect(none).toMatchObject({ fromLeaf: 0, toLeaf: 0, events: 0, heldBack: old.length, bound: { sink: 'stdout', nextLeaf: 0 } });
    await admin((c) => c.query("INSERT INTO phigate.audit_sink_cursors (sink, next_leaf, next_checkpoint) VALUES ('stdout', 2, 0)"));
    const two = await admin(async (c) => retainAuditEvents(c, cutoff, 'retain-stdout-2', await sinkPositions(both, c), verifier));
    expect(two).toMatchObject({ fromLeaf: 0, toLeaf: 2, heldBack: old.length - 2, bound: { sink: 'stdout', nextLeaf: 2 } });
    // A job whose environment leaves both off still stays behind the rows the gateways' deliverers keep.
    expect(await admin((c) => sinkPositions({ sinkDir: null, sinkStdout: false }, c))).toEqual([{ sink: `file:${sinkDir}`, nextLeaf: old.length }, { sink: 'stdout', nextLeaf: 2 }]);
    // Given no sink position at all nothing bounds the run (the event says no bound either).
    const free = await admin((c) => retainAuditEvents(c, cutoff, 'retain-no-sink', [], verifier));
    expect(free).toMatchObject({ fromLeaf: 2, toLeaf: old.length, heldBack: 0, bound: null });
    expect(await admin(async (c) => (await c.query('SELECT detail FROM phigate.audit_events WHERE id = $1', [free.eventId])).rows[0])).toEqual({ detail: `leaves:2-${old.length}` });
    await sealEverything();
    await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
    expect(await verify()).toMatchObject({ problem: null, retired: old.length });
    // A run row whose range passes the bound it names was not made by the job.
    await tamper('UPDATE phigate.audit_retention_runs SET sink_bound = 1 WHERE event_id = $1', [two.eventId]);
    expect((await verify()).problem).toMatchObject({ kind: 'retention', eventId: two.eventId });
  });

  it('stays behind a file sink its environment does not name, by the row the deliverer keeps, until the owner deletes the row', async () => {
    await fresh();
    const sinkDir = path.join(dir, `sink-${db.name}`);
    const first = await buildLog(1, 3, longAgo);
    await writeSink(sinkDir);
    const all = await buildLog(1, 3, longAgo);
    const row = (leaf: number) => ({ sink: `file:${sinkDir}`, nextLeaf: leaf });
    // The job's environment names no sink: the deliverer's row alone bounds it.
    const none = { sinkDir: null, sinkStdout: false };
    expect(await admin((c) => sinkPositions(none, c))).toEqual([row(first.length)]);
    const run = await admin(async (c) => retainAuditEvents(c, cutoff, 'retain-by-row', await sinkPositions(none, c), verifier));
    expect(run).toMatchObject({ fromLeaf: 0, toLeaf: first.length, heldBack: all.length - first.length, bound: row(first.length) });
    // Configured, the sink stands at the lower of its files and its row: files behind a row (moved, restored) win.
    await admin((c) => c.query('UPDATE phigate.audit_sink_cursors SET next_leaf = $2 WHERE sink = $1', [`file:${sinkDir}`, all.length + 5]));
    expect(await admin((c) => sinkPositions({ sinkDir, sinkStdout: false }, c))).toEqual([row(first.length)]);
    // Spelled another way, the directory is the same sink.
    expect(await admin((c) => sinkPositions({ sinkDir: `${sinkDir}/./`, sinkStdout: false }, c))).toEqual([row(first.length)]);
    // The owner retires the sink by deleting its row: nothing bounds the next run.
    await admin((c) => c.query('DELETE FROM phigate.audit_sink_cursors WHERE sink = $1', [`file:${sinkDir}`]));
    expect(await admin((c) => sinkPositions(none, c))).toEqual([]);
    const free = await admin(async (c) => retainAuditEvents(c, cutoff, 'retain-retired', await sinkPositions(none, c), verifier));
    expect(free).toMatchObject({ fromLeaf: first.length, toLeaf: all.length, heldBack: 0, bound: null });
    await sealEverything();
    await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
    expect(await verify()).toMatchObject({ problem: null, retired: all.length });
  });

  it('verify names a run that outran the sink, as one without the sink in its settings did before 037', async () => {
    await fresh();
    const sinkDir = path.join(dir, `sink-${db.name}`);
    const first = await buildLog(1, 3, longAgo);
    await writeSink(sinkDir);
    const all = await buildLog(1, 3, longAgo);
    // The gateways deliver to sinkDir, but this run is given no sink (as a job without the sink in
    // its settings was before the deliverer kept the file sink's row): nothing bounds it.
    const run = await admin((c) => retainAuditEvents(c, cutoff, 'retain-unbounded', [], verifier));
    expect(run).toMatchObject({ fromLeaf: 0, toLeaf: all.length, bound: null });
    await sealEverything();
    await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
    // The deliverer goes on after the retired range: the sink now has a hole where those events were.
    await writeSink(sinkDir);
    expect(await verify()).toMatchObject({ problem: null });
    expect((await verify(sinkDir)).problem).toMatchObject({ kind: 'retention', eventId: all[first.length], message: expect.stringContaining('before the sink delivered it') });
  });

  it('verify with a sink rotated past retired leaves finds nothing missing', async () => {
    await fresh();
    const oldSink = path.join(dir, `sink-old-${db.name}`);
    await buildLog(1, 3, longAgo);
    await writeSink(oldSink);
    await admin(async (c) => retainAuditEvents(c, cutoff, 'retain-rotated', await sinkPositions({ sinkDir: oldSink, sinkStdout: false }, c), verifier));
    await buildLog(1, 2);
    await sealEverything();
    await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
    // A sink whose first file is gone (rotated) starts after the retired leaves: no hole.
    const newSink = path.join(dir, `sink-new-${db.name}`);
    await writeSink(newSink);
    expect(await verify(newSink)).toMatchObject({ problem: null });
  });

  it('refuses when a configured sink cannot be read, naming it, and removes nothing', async () => {
    await fresh();
    const missing = path.join(dir, `no-such-sink-${db.name}`);
    const notADir = path.join(dir, `sink-file-${db.name}`);
    await writeFile(notADir, '');
    for (const [sinkDir, code] of [[missing, 'ENOENT'], [notADir, 'ENOTDIR']] as const) {
      const err = await admin((c) => sinkPositions({ sinkDir, sinkStdout: false }, c)).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(SinkUnreadableError);
      expect(err).toMatchObject({ sink: `file:${sinkDir}`, reason: code, message: expect.stringContaining(`the audit sink file:${sinkDir} cannot be read (${code})`) });
    }
    // The sinks' rows unreadable: a role without the grant stands in for a database that refuses the read.
    const err = await withClient(db.adminUrl, async (c) => {
      await c.query('BEGIN');
      await c.query(`CREATE ROLE ${db.name}_nobody NOLOGIN`);
      await c.query(`SET LOCAL ROLE ${db.name}_nobody`);
      try {
        return await sinkPositions({ sinkDir: null, sinkStdout: true }, c).then(() => null, (e: unknown) => e);
      } finally {
        await c.query('ROLLBACK');
      }
    });
    expect(err).toMatchObject({ sink: null, reason: '42501', message: expect.stringContaining("the audit sinks' positions in the database cannot be read (42501)") });
    expect((err as Error).message).not.toMatch(/select|audit_sink_cursors/i);
    // An empty sink directory is readable: a sink that has delivered nothing yet.
    const empty = path.join(dir, `sink-empty-${db.name}`);
    await mkdir(empty);
    expect(await admin((c) => sinkPositions({ sinkDir: empty, sinkStdout: false }, c))).toEqual([{ sink: `file:${empty}`, nextLeaf: 0 }]);
  });

  it('a range removed by hand and passed off as retention is named', async () => {
    await fresh();
    const events = await buildLog();
    await tamper('DELETE FROM phigate.audit_records WHERE id << 16 = ANY($1::bigint[])', [events.slice(0, 4)]);
    await tamper(`INSERT INTO phigate.audit_retention_runs (cutoff, from_leaf, to_leaf, events, event_id) VALUES (now(), 0, 4, 4, 999999)`);
    expect((await verify()).problem).toMatchObject({ kind: 'retention', eventId: '999999' });
  });
});
