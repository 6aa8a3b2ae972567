import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../../src/audit/event.ts';
import { parseCheckpoint } from '../../../src/audit/log/checkpoint.ts';
import { openNote, parseVerifierKey, verifierKey } from '../../../src/audit/log/note.ts';
import { leafBytes, RECORD_LEAF_SELECT, V1_LEAF_SELECT, type LeafRow } from '../../../src/audit/log/rows.ts';
import { checkpoint, latestHead, sealAll, sealRound } from '../../../src/audit/log/seal.ts';
import { fileSigner } from '../../../src/audit/log/signer.ts';
import { leafHash, rootOf } from '../../../src/audit/log/tree.ts';
import { createAuditWriter } from '../../../src/audit/writer.ts';
import { createPool, type Pool } from '../../../src/db/pool.ts';
import { createLogger } from '../../../src/log.ts';
import { createTestDatabase, preparedStatements, type TestDatabase, withClient } from '../../support/db.ts';

// The Merkle log against a real PostgreSQL: many writers and racing sealers give one log whose
// leaves (one per audit record, one per event written before 028) and roots a recomputation from
// the rows matches; a sealer never seals past a transaction still in flight; checkpoints verify
// with the public key.

const logger = createLogger('silent');
let db: TestDatabase;
let pools: Pool[] = [];
let dir: string;
beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(path.join(tmpdir(), 'phigate-log-'));
});
afterAll(async () => {
  await Promise.all(pools.map((p) => p.end()));
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

const pool = (max = 2): Pool => {
  const p = createPool(db.appUrl, { max, applicationName: 'phigate-audit' });
  pools.push(p);
  return p;
};
const admin = <T>(fn: (c: pg.Client) => Promise<T>) => withClient(db.adminUrl, fn);

const read = (field: string): AuditEvent => ({
  action: 'read',
  typeName: 'Patient',
  field,
  patientId: randomUUID(),
  recordId: null,
  role: 'physician',
  purpose: 'treatment',
  breakGlass: false,
});

const insertOne = (c: pg.Client | pg.PoolClient, requestId: string) =>
  c.query(
    "INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name, field) VALUES ($1, 'dr-log', 'user', 'treatment', 'read', 'Patient', 'ssn') RETURNING id",
    [requestId],
  );

/** A record of `n` events of one request, straight into audit_records (what the narrow writer inserts). */
const insertRecord = (c: pg.Client, requestId: string, n: number) =>
  c.query(
    `INSERT INTO phigate.audit_records (request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
     SELECT $1, 'dr-log', 'user', 'physician', 'treatment', gen_random_uuid(), array_agg('read'::text), array_agg('Patient'::text), array_agg('f' || i),
            array_agg(NULL::uuid), array_agg(NULL::text)
     FROM generate_series(1, $2) i RETURNING id << 16 AS id`,
    [requestId, n],
  );

/** Everything a verifier would recompute from the rows: leaf order, leaf hashes, every head's root. */
async function recompute(): Promise<{ events: number; leaves: number }> {
  return admin(async (c) => {
    const entries = (await c.query<LeafRow & { leaf_index: string | null; leaf_hash: Buffer | null }>(
      `SELECT l.leaf_index, l.leaf_hash, x.* FROM (
         SELECT ${V1_LEAF_SELECT} FROM phigate.audit_events_v1 e UNION ALL SELECT ${RECORD_LEAF_SELECT} FROM phigate.audit_records r
       ) x LEFT JOIN phigate.audit_log l ON l.event_id = x.key ORDER BY x.tx::xid8, x.key`,
    )).rows;
    const sealed = entries.filter((e) => e.leaf_index !== null);
    // Sealed entries are a prefix of (tx, key) order, and their leaf indexes count up from 0.
    expect(sealed.map((e) => Number(e.leaf_index))).toEqual(sealed.map((_, i) => i));
    expect(entries.slice(0, sealed.length).every((e) => e.leaf_index !== null)).toBe(true);
    const hashes = sealed.map((e) => leafHash(leafBytes(e)));
    sealed.forEach((e, i) => expect(e.leaf_hash!.equals(hashes[i]!), `leaf ${i}`).toBe(true));
    const heads = (await c.query<{ tree_size: string; root: Buffer }>('SELECT tree_size, root FROM phigate.audit_log_heads ORDER BY tree_size')).rows;
    for (const h of heads) expect(h.root.equals(rootOf(hashes, 0, Number(h.tree_size))), `head ${h.tree_size}`).toBe(true);
    if (sealed.length > 0) expect(Number(heads.at(-1)!.tree_size)).toBe(sealed.length);
    const { rows } = await c.query<{ n: string }>('SELECT count(*) AS n FROM phigate.audit_log');
    expect(Number(rows[0]!.n)).toBe(sealed.length);
    const events = Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM phigate.audit_events')).rows[0]!.n);
    return { events, leaves: sealed.length };
  });
}

const leafCount = (): Promise<number> =>
  admin(async (c) =>
    Number((await c.query<{ n: string }>('SELECT (SELECT count(*) FROM phigate.audit_events_v1) + (SELECT count(*) FROM phigate.audit_records) AS n')).rows[0]!.n),
  );

/** Seals until `done` holds; other transactions of the cluster may hold its xmin back a while. */
async function sealUntil(p: Pool, done: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error('sealing did not catch up within a minute');
    await sealAll(p, 1000);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const sealedIds = (): Promise<Set<string>> =>
  admin(async (c) => new Set((await c.query<{ event_id: string }>('SELECT event_id FROM phigate.audit_log')).rows.map((r) => r.event_id)));

describe('sealing', () => {
  it('gives concurrent writers and two racing sealers one log that a recomputation from the rows matches', async () => {
    const writers = [pool(2), pool(2)].map((p) => createAuditWriter({ pool: p, queueLimit: 1000, logger, maxBatchEvents: 40, preparedStatements: preparedStatements() }));
    const sealers = [pool(1), pool(1)];
    // The racers start with the writers and stop once every event is sealed; how the work falls
    // between them is up to the lock.
    let total = Number.POSITIVE_INFINITY;
    const deadline = Date.now() + 120_000;
    const racing = sealers.map(async (p) => {
      let sealed = 0;
      while ((await sealedIds()).size < total) {
        if (Date.now() > deadline) throw new Error('the sealers did not catch up');
        sealed += await sealAll(p, 25);
        await new Promise((r) => setTimeout(r, 5));
      }
      return sealed;
    });
    const requests = Array.from({ length: 120 }, (_, i) =>
      writers[i % 2]!.write({ request: { requestId: `log-${i}`, actor: `dr-${i % 7}`, actorKind: 'user', clientAddr: '10.0.0.1' }, events: ['ssn', 'mrn', 'givenName'].map(read) }),
    );
    // Direct inserts too, each in its own transaction, interleaving with the writers' batches.
    const direct = pool(4);
    const singles = Array.from({ length: 20 }, (_, i) => direct.query(
      "INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name) VALUES ($1, 'sys', 'system', 'operations', 'key', 'Key')",
      [`single-${i}`],
    ));
    // Records of several events each, as the narrow writer inserts them.
    const records = Array.from({ length: 20 }, (_, i) => admin((c) => insertRecord(c, `record-${i}`, 1 + (i % 5))));
    total = await Promise.all([...requests, ...singles, ...records]).then(leafCount);
    const byRacers = (await Promise.all(racing)).reduce((a, b) => a + b, 0);
    const { events, leaves } = await recompute();
    // 120 requests of 3 events, 20 single events, 20 records of 1 to 5 events.
    expect(events).toBe(360 + 20 + 60);
    // One leaf per stored record, however the writer groups the events.
    expect(leaves).toBe(total);
    expect(byRacers).toBe(total);
    expect(total).toBeLessThan(events);
  });

  it('seals the events written before the narrow layout (v1) and the records after it in one (tx, key) order', async () => {
    const p = pool(1);
    await sealUntil(p, async () => (await sealedIds()).size === (await leafCount()));
    // Frozen v1 events are written by nobody but a migration; here the superuser stands in for one.
    const v1 = await admin(async (c) =>
      (await c.query<{ id: string }>(
        "INSERT INTO phigate.audit_events_v1 (request_id, actor, actor_kind, purpose, action, type_name, field) VALUES ('v1-a', 'dr-log', 'user', 'treatment', 'read', 'Patient', 'ssn'), ('v1-b', 'dr-log', 'user', 'treatment', 'read', 'Patient', 'mrn') RETURNING id",
      )).rows.map((r) => r.id),
    );
    const record = (await admin((c) => insertRecord(c, 'after-v1', 4))).rows[0]!.id as string;
    await sealUntil(p, async () => (await sealedIds()).size === (await leafCount()));
    const keys = await admin(async (c) => (await c.query<{ event_id: string }>('SELECT event_id FROM phigate.audit_log ORDER BY leaf_index DESC LIMIT 3')).rows.map((r) => r.event_id).reverse());
    expect(keys).toEqual([...v1, record]);
    await recompute();
  });

  it('never seals past a transaction still in flight, and seals both once it ends', async () => {
    const p = pool(1);
    await sealUntil(p, async () => (await sealedIds()).size === (await leafCount()));
    await admin(async (open) => {
      await open.query('BEGIN');
      const held = (await insertOne(open, 'held-open')).rows[0]!.id as string;
      const later = (await admin((c) => insertOne(c, 'committed-later'))).rows[0]!.id as string;
      expect(BigInt(later)).toBeGreaterThan(BigInt(held));
      // Several rounds while the earlier transaction is open: the later, committed event stays out.
      for (let i = 0; i < 3; i++) await sealAll(p, 1000);
      expect((await sealedIds()).has(later)).toBe(false);
      await recompute();
      await open.query('COMMIT');
    });
    const ids = await admin(async (c) => (await c.query<{ id: string }>("SELECT (id << 16)::text AS id FROM phigate.audit_records WHERE request_id IN ('held-open', 'committed-later') ORDER BY tx, id")).rows.map((r) => r.id));
    await sealUntil(p, async () => {
      const sealed = await sealedIds();
      return ids.every((id) => sealed.has(id));
    });
    const leaves = await admin(async (c) => (await c.query<{ event_id: string }>('SELECT event_id FROM phigate.audit_log WHERE event_id = ANY ($1) ORDER BY leaf_index', [ids])).rows.map((r) => r.event_id));
    // The transaction that began first is sealed first, whatever the commit order was.
    expect(leaves).toEqual(ids);
    await recompute();
  });

  it('does nothing when another process holds the log lock', async () => {
    const p = pool(1);
    await admin((c) => insertOne(c, 'while-locked'));
    await admin(async (c) => {
      await c.query('BEGIN');
      await c.query("SELECT pg_advisory_xact_lock(hashtextextended('phigate.audit_log', 0))");
      expect(await sealRound(p, 10)).toEqual({ busy: true });
      await c.query('ROLLBACK');
    });
  });
});

describe('what the gateway role may do to the log', () => {
  it('cannot choose an event\'s tx, nor change or remove leaves, heads or checkpoints', async () => {
    const p = pool(1);
    const code = (sql: string, values: unknown[] = []) => p.query(sql, values).then(() => null, (e: { code: string }) => e.code);
    expect(await code(
      "INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name, tx) VALUES ('forged', 'x', 'user', 'treatment', 'read', 'Patient', '1')",
    )).toBe('42501');
    for (const table of ['audit_log', 'audit_log_heads', 'audit_checkpoints']) {
      const column = table === 'audit_log' ? 'leaf_index' : 'tree_size';
      expect(await code(`UPDATE phigate.${table} SET ${column} = ${column}`)).toBe('42501');
      expect(await code(`DELETE FROM phigate.${table}`)).toBe('42501');
    }
    // It reads events through the definer functions only.
    expect(await code('SELECT id FROM phigate.audit_events LIMIT 1')).toBe('42501');
    expect(await code('SELECT id FROM phigate.audit_records LIMIT 1')).toBe('42501');
    expect(await code("SELECT * FROM phigate.audit_leaves_to_seal('0', 0, 1)")).toBeNull();
    expect(await code('SELECT * FROM phigate.audit_log_leaves(0, 1)')).toBeNull();
  });
});

describe('checkpoints', () => {
  it('signs the latest head as a C2SP checkpoint that verifies with the public key, when due', async () => {
    const p = pool(1);
    const signer = await fileSigner(path.join(dir, 'signing.pem'), 'phigate.test/audit');
    await admin((c) => insertOne(c, 'cp-1'));
    await sealUntil(p, async () => (await sealedIds()).size === (await leafCount()));
    const policy = { seconds: 3600, events: 1_000_000, force: false };
    const first = await checkpoint(p, signer, policy);
    expect(first.signed).toBe(true);
    // Not due again: no growth.
    expect((await checkpoint(p, signer, { ...policy, force: true })).signed).toBe(false);
    await admin((c) => insertOne(c, 'cp-2'));
    await sealUntil(p, async () => (await sealedIds()).size === (await leafCount()));
    // Grown, but neither old enough nor enough events.
    expect((await checkpoint(p, signer, policy)).signed).toBe(false);
    const clock = () => admin(async (c) => Number((await c.query<{ ms: string }>('SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::text AS ms')).rows[0]!.ms));
    const before = await clock();
    expect((await checkpoint(p, signer, { ...policy, events: 1 })).signed).toBe(true);
    const after = await clock();

    const head = await latestHead(p);
    const row = await admin(async (c) => (await c.query<{ tree_size: string; note: string; root: Buffer; origin: string }>(
      'SELECT tree_size, note, root, origin FROM phigate.audit_checkpoints ORDER BY tree_size DESC LIMIT 1',
    )).rows[0]!);
    const verifier = parseVerifierKey(verifierKey(signer.name, signer.publicKey))!;
    const body = parseCheckpoint(openNote(row.note, verifier)!)!;
    expect(body).toEqual({ origin: 'phigate.test/audit', size: head.size, root: head.root, time: expect.any(Number) });
    // Signed with the database's time of signing (rounded up), the clock occurred_at is stamped by.
    expect(body.time).toBeGreaterThanOrEqual(before);
    expect(body.time).toBeLessThanOrEqual(after + 1);
    expect(row.note).toContain(`\ntime ${new Date(body.time!).toISOString()}\n\n`);
    expect(row.root.equals(head.root)).toBe(true);
    // An edited note no longer verifies.
    expect(openNote(row.note.replace(`\n${head.size}\n`, `\n${head.size + 1}\n`), verifier)).toBeNull();
    const other = await fileSigner(path.join(dir, 'other.pem'), 'phigate.test/audit');
    expect(openNote(row.note, parseVerifierKey(verifierKey(other.name, other.publicKey))!)).toBeNull();
  });
});

