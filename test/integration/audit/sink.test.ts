import { appendFile, mkdir, mkdtemp, readdir, readFile, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCheckpoint } from '../../../src/audit/log/checkpoint.ts';
import { openNote, parseVerifierKey, verifierKey } from '../../../src/audit/log/note.ts';
import { createLogRunner } from '../../../src/audit/log/runner.ts';
import { checkpoint, sealAll } from '../../../src/audit/log/seal.ts';
import { fileSigner } from '../../../src/audit/log/signer.ts';
import { leafHash, rootOf } from '../../../src/audit/log/tree.ts';
import { deliver } from '../../../src/audit/sink/deliver.ts';
import { fileSink } from '../../../src/audit/sink/file.ts';
import { parseSinkLine, type CheckpointLine, type LeafLine } from '../../../src/audit/sink/lines.ts';
import { stdoutSink } from '../../../src/audit/sink/stdout.ts';
import { sinkPositions } from '../../../src/audit/verify/sink-positions.ts';
import { loadConfig } from '../../../src/config.ts';
import { createPool, type Pool } from '../../../src/db/pool.ts';
import { createLogger } from '../../../src/log.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../../support/db.ts';

// The outside sink fed from the database by leaf index: every sealed leaf (an audit record with
// its events, or an event of before 028) and every checkpoint reach it in leaf order, files rotate
// by size, a torn last line is cut and written again, and a line delivered twice is the same line,
// recognisable by its leaf and first event id.

let db: TestDatabase;
let pool: Pool;
let dir: string;
beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.appUrl, { max: 2 });
  dir = await mkdtemp(path.join(tmpdir(), 'phigate-sink-'));
  // A sealed, signed log every test stands on, whatever order they run in: without it, a test run
  // before the ones that write leaves found nothing to deliver (a redelivery "from leaf 40" needs 41).
  await addRecords(45, 'base');
  await sealEverything();
  await checkpoint(pool, await fileSigner(path.join(dir, 'key.pem'), 'phigate.test/audit'), { seconds: 3600, events: 1, force: true });
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

const admin = <T>(fn: (c: pg.Client) => Promise<T>) => withClient(db.adminUrl, fn);

/** `n` audit records of 1 to 3 events each, as the narrow writer stores them; one leaf each. */
async function addRecords(n: number, tag: string): Promise<void> {
  await admin((c) =>
    c.query(
      `INSERT INTO phigate.audit_records (request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
       SELECT $1 || '-' || i, 'dr-sink', 'user', 'physician', 'treatment', gen_random_uuid(), a.actions, a.actions, a.actions, a.record_ids, a.details
       FROM generate_series(1, $2) i
       CROSS JOIN LATERAL (SELECT array_agg('read'::text) AS actions, array_agg(NULL::uuid) AS record_ids, array_agg(NULL::text) AS details
                           FROM generate_series(0, i % 3) k) a`,
      [tag, n],
    ),
  );
}

const leafTotal = () =>
  admin(async (c) => Number((await c.query<{ n: string }>('SELECT (SELECT count(*) FROM phigate.audit_records) + (SELECT count(*) FROM phigate.audit_events_v1) AS n')).rows[0]!.n));

async function sealEverything(): Promise<number> {
  const total = await leafTotal();
  const deadline = Date.now() + 60_000;
  for (;;) {
    await sealAll(pool, 50);
    const sealed = await admin(async (c) => Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM phigate.audit_log')).rows[0]!.n));
    if (sealed === total) return total;
    if (Date.now() > deadline) throw new Error('sealing did not catch up');
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function sinkLines(d: string): Promise<string[]> {
  const files = (await readdir(d)).filter((f) => f.endsWith('.jsonl')).sort();
  return (await Promise.all(files.map((f) => readFile(path.join(d, f), 'utf8')))).flatMap((t) => t.split('\n').filter(Boolean));
}

/** Checks a sink's lines against the database; the leaves' lines, by leaf. */
async function checkAgainstLog(lines: string[], verifierText: string): Promise<Map<number, LeafLine>> {
  const parsed = lines.map((l) => parseSinkLine(l)!);
  expect(parsed.every((p) => p !== null)).toBe(true);
  const events = new Map<number, LeafLine>();
  for (const p of parsed) {
    if (p.audit === 'checkpoint') continue;
    const seen = events.get(p.leaf);
    // A line delivered again is the same line.
    if (seen) expect(JSON.stringify(seen)).toBe(JSON.stringify(p));
    events.set(p.leaf, p);
  }
  const log = await admin(async (c) => (await c.query<{ leaf_index: string; event_id: string; leaf_hash: Buffer }>('SELECT * FROM phigate.audit_log ORDER BY leaf_index')).rows);
  expect(events.size).toBe(log.length);
  const hashes = log.map((l) => {
    const e = events.get(Number(l.leaf_index))!;
    expect(e.id).toBe(l.event_id);
    const h = leafHash(Buffer.from(e.canonical, 'base64'));
    expect(h.equals(l.leaf_hash)).toBe(true);
    return h;
  });
  const verifier = parseVerifierKey(verifierText)!;
  const checkpoints = parsed.filter((p): p is CheckpointLine => p.audit === 'checkpoint');
  expect(checkpoints.length).toBeGreaterThan(0);
  for (const cp of checkpoints) {
    const body = parseCheckpoint(openNote(cp.note, verifier)!)!;
    expect(body.size).toBe(cp.size);
    expect(body.root.equals(rootOf(hashes, 0, cp.size))).toBe(true);
  }
  // Each checkpoint line comes after the line of its last leaf.
  parsed.forEach((p, i) => {
    if (p.audit === 'checkpoint') expect(parsed.slice(0, i).some((q) => q.audit !== 'checkpoint' && q.leaf === p.size - 1)).toBe(true);
  });
  return events;
}

describe('file sink', () => {
  it('delivers every sealed leaf and checkpoint, rotates by size, and resumes from its own files after a torn write', async () => {
    const signer = await fileSigner(path.join(dir, 'key.pem'), 'phigate.test/audit');
    const vkey = verifierKey(signer.name, signer.publicKey);
    const sinkDir = path.join(dir, 'files');
    const sink = await fileSink(sinkDir, 8192);
    // The leaves other tests of this file wrote before this one, whatever order they ran in: a new
    // sink delivers the log from its start, so this test's leaves are counted from there.
    const base = await leafTotal();

    // Two events of before the narrow layout (v1, written here by the superuser as a migration would), then records.
    await admin((c) =>
      c.query("INSERT INTO phigate.audit_events_v1 (request_id, actor, actor_kind, purpose, action, type_name, field) VALUES ('v1-a', 'dr-sink', 'user', 'treatment', 'read', 'Patient', 'ssn'), ('v1-b', 'dr-sink', 'user', 'treatment', 'read', 'Patient', 'mrn')"),
    );
    await addRecords(28, 'a');
    await sealEverything();
    await checkpoint(pool, signer, { seconds: 3600, events: 1, force: true });
    expect(await deliver(pool, sink, 7)).toBe(base + 30);
    expect(await deliver(pool, sink, 7)).toBe(0);

    await addRecords(25, 'b');
    await sealEverything();
    await checkpoint(pool, signer, { seconds: 3600, events: 1, force: true });
    // A crash in the middle of a write leaves part of a line; a new process (a new sink) cuts it.
    const files = (await readdir(sinkDir)).sort();
    expect(files.length).toBeGreaterThan(1);
    await appendFile(path.join(sinkDir, files.at(-1)!), `{"audit":"event","leaf":${base + 30},"id":"3`);
    expect(await deliver(pool, await fileSink(sinkDir, 8192), 10)).toBe(25);
    const lines = await sinkLines(sinkDir);
    const events = await checkAgainstLog(lines, vkey);
    expect(events.size).toBe(base + 55);
    // The v1 events as event lines, each record as one line with its events and their ids.
    expect([base, base + 1].map((leaf) => events.get(leaf)!.audit)).toEqual(['event', 'event']);
    const record = events.get(base + 2)!;
    expect(record.audit).toBe('record');
    if (record.audit === 'record') {
      const n = BigInt(record.id) >> 16n;
      expect(record.record).toMatchObject({ id: String(n), requestId: 'a-1', events: [{ id: record.id, action: 'read' }, { id: String((n << 16n) + 1n), action: 'read' }] });
    }
    // Exactly once on this path: no line twice.
    expect(new Set(lines).size).toBe(lines.length);
    // A new process reads its position back from the record lines of its files: after the last leaf.
    expect(await (await fileSink(sinkDir, 8192)).position(undefined as never)).toMatchObject({ nextLeaf: base + 55 });
    // Each file is named by its first leaf, record lines or not.
    for (const f of await readdir(sinkDir)) {
      const first = (await readFile(path.join(sinkDir, f), 'utf8')).split('\n').map((l) => parseSinkLine(l)).find((p): p is LeafLine => p !== null && p.audit !== 'checkpoint');
      if (first) expect(f).toBe(`audit-${String(first.leaf).padStart(20, '0')}.jsonl`);
    }
    expect((await readdir(sinkDir)).every((f) => /^audit-\d{20}\.jsonl$/.test(f))).toBe(true);
  });

  it('reports its position in its row after each batch; a failing row write fails the delivery, and the retry resumes from its files', async () => {
    const sinkDir = path.join(dir, 'row');
    const sink = await fileSink(sinkDir, 1 << 20);
    const row = () =>
      admin(async (c) => (await c.query<{ next_leaf: string }>('SELECT next_leaf FROM phigate.audit_sink_cursors WHERE sink = $1', [`file:${sinkDir}`])).rows[0]?.next_leaf);
    const onDisk = async () => (await (await fileSink(sinkDir, 1 << 20)).position(undefined as never)).nextLeaf;
    const total = await sealEverything();
    expect(await deliver(pool, sink, 7)).toBe(total);
    expect(await row()).toBe(String(total));
    expect(await onDisk()).toBe(total);

    // The row cannot be written: the batch's lines are durable, the delivery fails, the row stays behind
    // (so retention stays behind with it, the safe side).
    await addRecords(5, 'row');
    await sealEverything();
    const advance = 'phigate.advance_audit_sink_cursor(text, bigint, bigint)';
    await admin((c) => c.query(`REVOKE EXECUTE ON FUNCTION ${advance} FROM phigate_app`));
    try {
      await expect(deliver(pool, sink, 7)).rejects.toMatchObject({ code: '42501' });
    } finally {
      await admin((c) => c.query(`GRANT EXECUTE ON FUNCTION ${advance} TO phigate_app`));
    }
    expect(await onDisk()).toBe(total + 5);
    expect(await row()).toBe(String(total));
    expect(await admin((c) => sinkPositions({ sinkDir: null, sinkStdout: false }, c))).toContainEqual({ sink: `file:${sinkDir}`, nextLeaf: total });

    // The retry resumes from the files (nothing written twice) and the row catches up with the next batch.
    expect(await deliver(pool, sink, 7)).toBe(0);
    await addRecords(3, 'row-next');
    await sealEverything();
    expect(await deliver(pool, sink, 7)).toBe(3);
    expect(await row()).toBe(String(total + 8));
    const lines = await sinkLines(sinkDir);
    expect(new Set(lines).size).toBe(lines.length);
    expect(lines.filter((l) => parseSinkLine(l)?.audit !== 'checkpoint')).toHaveLength(total + 8);
  });

  it("lets the gateway role move a cursor only forward, only within the log, and never write or delete a row directly", async () => {
    const sinkDir = path.join(dir, 'cursor-guard');
    const name = `file:${sinkDir}`;
    // Leaves of its own: run before the tests that add theirs, an empty log left "backwards" no room.
    await addRecords(3, 'cursor-guard-log');
    const total = await sealEverything();
    expect(await deliver(pool, await fileSink(sinkDir, 1 << 20), 1000)).toBe(total);
    const other = 'stdout-elsewhere';
    await admin((c) => c.query('INSERT INTO phigate.audit_sink_cursors (sink, next_leaf, next_checkpoint) VALUES ($1, 1, 0)', [other]));
    const cursors = () =>
      admin(async (c) => (await c.query('SELECT sink, next_leaf::int AS leaf, next_checkpoint::int AS cp FROM phigate.audit_sink_cursors ORDER BY sink')).rows);
    const before = await cursors();
    const asApp = async (sql: string, params: unknown[] = []) => {
      try {
        await pool.query(sql, params);
        return null;
      } catch (e) {
        return (e as { code?: string }).code;
      }
    };
    const advance = (sink: string, leaf: number, checkpoint: number) => asApp('SELECT phigate.advance_audit_sink_cursor($1, $2, $3)', [sink, leaf, checkpoint]);
    // Directly: no write of any kind on the table.
    expect(await asApp('UPDATE phigate.audit_sink_cursors SET next_leaf = next_leaf + 1000 WHERE sink = $1', [other])).toBe('42501');
    expect(await asApp('DELETE FROM phigate.audit_sink_cursors WHERE sink = $1', [other])).toBe('42501');
    expect(await asApp("INSERT INTO phigate.audit_sink_cursors (sink, next_leaf, next_checkpoint) VALUES ('made-up', 0, 0)")).toBe('42501');
    expect(await asApp('TRUNCATE phigate.audit_sink_cursors')).toBe('42501');
    // Through the function: backwards, or past what the log holds, is refused and changes nothing.
    expect(await advance(name, total - 1, 0)).toBe('PH409');
    expect(await advance(other, 0, 0)).toBe('PH409');
    expect(await advance(other, total + 1, 0)).toBe('PH409');
    expect(await advance('a-new-sink', total + 1000, 0)).toBe('PH409');
    expect(await advance(other, 1, 1_000_000)).toBe('PH409');
    expect(await advance(other, -1, 0)).toBe('22023');
    expect(await cursors()).toEqual(before);
    // Forward, up to the log's end: as the deliverer does.
    expect(await advance(other, total, 0)).toBeNull();
    expect(await cursors()).toContainEqual({ sink: other, leaf: total, cp: 0 });
    // The owner may still retire a sink (docs/audit-log.md).
    await admin((c) => c.query('DELETE FROM phigate.audit_sink_cursors WHERE sink = $1', [other]));
    // The file sink still delivers and reports through the function.
    await addRecords(2, 'cursor-guard');
    await sealEverything();
    expect(await deliver(pool, await fileSink(sinkDir, 1 << 20), 1000)).toBe(2);
    expect(await cursors()).toContainEqual(expect.objectContaining({ sink: name, leaf: total + 2 }));
  });

  it('is one sink, one lock and one cursor row, through whichever link its directory is reached', async () => {
    const real = path.join(dir, 'linked-real');
    await mkdir(real);
    const link = path.join(dir, 'linked-via');
    await symlink(real, link);
    const name = `file:${await realpath(real)}`;
    const viaLink = await fileSink(link, 1 << 20);
    expect(viaLink.name).toBe(name);
    expect((await fileSink(`${real}/./`, 1 << 20)).name).toBe(name);
    const total = await sealEverything();
    expect(await deliver(pool, viaLink, 1000)).toBe(total);
    // The replica given the other path finds everything delivered: same files, same row.
    expect(await deliver(pool, await fileSink(real, 1 << 20), 1000)).toBe(0);
    const rows = await admin(async (c) => (await c.query<{ sink: string }>("SELECT sink FROM phigate.audit_sink_cursors WHERE sink LIKE 'file:%linked%'")).rows);
    expect(rows).toEqual([{ sink: name }]);
    // Retention configured with the link reads the same sink.
    expect(await admin((c) => sinkPositions({ sinkDir: link, sinkStdout: false }, c))).toContainEqual({ sink: name, nextLeaf: total });
  });

  it('refuses a sink directory that cannot be made or resolved, naming the setting, and retention names the path as given', async () => {
    const dangling = path.join(dir, 'dangling');
    await symlink(path.join(dir, 'nowhere', 'deeper'), dangling);
    const file = path.join(dir, 'a-file');
    await writeFile(file, '');
    for (const bad of [dangling, path.join(file, 'sink')]) {
      await expect(fileSink(bad, 1 << 20)).rejects.toThrow(/^PHIGATE_AUDIT_SINK_DIR: cannot be made or resolved as a directory \(E[A-Z]+\)$/);
    }
    await expect(fileSink(file, 1 << 20)).rejects.toThrow(/^PHIGATE_AUDIT_SINK_DIR: /);
    // A plain link to a directory whose real name the cursor row could not hold.
    const oddReal = path.join(dir, 'odd\nname');
    await mkdir(oddReal);
    await symlink(oddReal, path.join(dir, 'plain-link'));
    await expect(fileSink(path.join(dir, 'plain-link'), 1 << 20)).rejects.toThrow('PHIGATE_AUDIT_SINK_DIR: must not contain control characters once its links are resolved');
    await expect(admin((c) => sinkPositions({ sinkDir: dangling, sinkStdout: false }, c))).rejects.toMatchObject({ sink: `file:${dangling}`, reason: 'ENOENT' });
  });

  it('lets one deliverer at a time write a sink', async () => {
    const sink = await fileSink(path.join(dir, 'locked'), 1 << 20);
    await admin(async (c) => {
      await c.query('BEGIN');
      await c.query("SELECT pg_advisory_xact_lock(hashtextextended('phigate.audit_sink:' || $1, 0))", [sink.name]);
      expect(await deliver(pool, sink, 10)).toBeNull();
      await c.query('ROLLBACK');
    });
  });
});

describe('stdout sink', () => {
  it('writes the same lines, keeps its position in the database, and a redelivery repeats identical lines', async () => {
    const signer = await fileSigner(path.join(dir, 'key.pem'), 'phigate.test/audit');
    const out = new PassThrough();
    let text = '';
    out.on('data', (c: Buffer) => (text += c.toString('utf8')));
    const total = await sealEverything();
    expect(await deliver(pool, stdoutSink(out), 1000)).toBe(total);
    expect(await deliver(pool, stdoutSink(out), 1000)).toBe(0);
    const first = text;
    // A crash after the lines went out and before the position committed: delivered again.
    await admin((c) => c.query("UPDATE phigate.audit_sink_cursors SET next_leaf = 40, next_checkpoint = 0 WHERE sink = 'stdout'"));
    await deliver(pool, stdoutSink(out), 1000);
    const lines = text.split('\n').filter(Boolean);
    expect(lines.length).toBeGreaterThan(first.split('\n').filter(Boolean).length);
    const events = await checkAgainstLog(lines, verifierKey(signer.name, signer.publicKey));
    expect(events.size).toBe(total);
    const again = text.slice(first.length).split('\n').filter(Boolean);
    for (const l of again) expect(first.split('\n')).toContain(l);
  });
});

describe('runner', () => {
  it('seals and delivers while the signer fails, reports the failure, and signs at the final round', async () => {
    const good = await fileSigner(path.join(dir, 'key.pem'), 'phigate.test/audit');
    const failing = { ...good, sign: () => Promise.reject(new Error('KMS unavailable')) };
    const sinkDir = path.join(dir, 'runner');
    const settings = { ...loadConfig({}).auditLog, checkpointSeconds: 1, checkpointEvents: 1 };
    const options = { pool, settings, sinks: [await fileSink(sinkDir, 1 << 20)], logger: createLogger('silent'), timer: false };
    await addRecords(5, 'runner');
    const total = await leafTotal();
    const broken = createLogRunner({ ...options, signer: failing });
    // Sealing may wait for other transactions of the cluster; the signer fails on every round that has something to sign.
    const deadline = Date.now() + 60_000;
    const outcomes: string[] = [];
    for (;;) {
      outcomes.push(await broken.round().then(() => 'ok', (e: Error) => e.message));
      const events = (await sinkLines(sinkDir)).filter((l) => ['event', 'record'].includes(parseSinkLine(l)?.audit ?? '')).length;
      if (events === total) break;
      if (Date.now() > deadline) throw new Error('the runner did not deliver');
      await new Promise((r) => setTimeout(r, 50));
    }
    // The round that sealed the new events had a checkpoint due, which the signer failed.
    expect(outcomes).toContain('KMS unavailable');
    expect(outcomes.every((o) => o === 'ok' || o === 'KMS unavailable')).toBe(true);
    const before = await admin(async (c) => Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM phigate.audit_checkpoints')).rows[0]!.n));
    const result = await createLogRunner({ ...options, signer: good, settings: { ...settings, checkpointSeconds: 86_400, checkpointEvents: 1_000_000 } }).round(true);
    expect(result.checkpoint).toBe(total);
    const after = await admin(async (c) => Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM phigate.audit_checkpoints')).rows[0]!.n));
    expect(after).toBe(before + 1);
    expect((await sinkLines(sinkDir)).map((l) => parseSinkLine(l)).filter((p) => p?.audit === 'checkpoint').map((p) => (p as CheckpointLine).size)).toContain(total);
  });
});
