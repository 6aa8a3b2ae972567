import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import type { NoteSigner } from '../../src/audit/log/note.ts';
import { checkpoint, sealAll } from '../../src/audit/log/seal.ts';
import { fileSigner } from '../../src/audit/log/signer.ts';
import { createPool, type Pool } from '../../src/db/pool.ts';
import { checkpointSignedAt } from '../support/audit-checkpoint.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';

// Retention goes by the signed checkpoints' time, never by a time the database holds
// (docs/audit-log.md, "Append-only and retention"). Whoever can write the rows (a superuser with
// the triggers off) back-dates audit events of today by seven years, at the front of the log where
// a run starts, and dresses up what else retention could read: the checkpoints' signed_at column,
// a checkpoint signed by another key, an old-format checkpoint without a time, the database's clock
// at the moment the checkpointer signs. The operator's routine six-year `audit retain` then runs:
// none of today's events may go, and the run says why.

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ORIGIN = 'phigate.test/retain-signed-time';
let db: TestDatabase;
let pool: Pool;
let dir: string;
let keyFile: string;
let signer: NoteSigner;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'fixretain-retention-'));
  keyFile = path.join(dir, 'audit-signing-key.pem');
  signer = await fileSigner(keyFile, ORIGIN);
});
afterEach(async () => {
  await pool?.end();
  await db?.drop();
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const admin = <T>(fn: (c: pg.Client) => Promise<T>) => withClient(db.adminUrl, fn);
const tamper = (sql: string) =>
  admin(async (c) => {
    await c.query('SET session_replication_role = replica');
    await c.query(sql);
  });

/** Four audit records of today and two v1 events (written before the narrow layout), sealed and signed now; the checkpointer's pool is `sealer`. */
async function logOfToday(sealer: Pool = pool): Promise<void> {
  await admin(async (c) => {
    for (let i = 1; i <= 2; i++) {
      await c.query(
        `INSERT INTO phigate.audit_events_v1 (request_id, actor, actor_kind, role, purpose, action, type_name, field, patient_id)
         VALUES ($1, 'dr-today', 'user', 'physician', 'treatment', 'read', 'Patient', 'ssn', gen_random_uuid())`,
        [`v1-today-${i}`],
      );
    }
    await c.query(
      `INSERT INTO phigate.audit_records (request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
       SELECT 'req-today-' || g, 'dr-today', 'user', 'physician', 'treatment', gen_random_uuid(), ARRAY['read'], ARRAY['Patient'], ARRAY['ssn'],
              ARRAY[NULL]::uuid[], ARRAY[NULL]::text[]
       FROM generate_series(1, 4) g`,
    );
  });
  for (let sealed = 0; sealed < 6; ) {
    sealed += await sealAll(sealer, 1000);
    if (sealed < 6) await new Promise((r) => setTimeout(r, 50));
  }
  await checkpoint(sealer, signer, { seconds: 0, events: 1, force: true });
}

/** The front of the log claims to be seven years old: both v1 events and three of the four records. */
const backDate = () =>
  admin(async (c) => {
    await c.query('SET session_replication_role = replica');
    await c.query("UPDATE phigate.audit_events_v1 SET occurred_at = now() - interval '7 years'");
    await c.query("UPDATE phigate.audit_records SET occurred_at = now() - interval '7 years' WHERE request_id IN ('req-today-1', 'req-today-2', 'req-today-3')");
  });

async function retain(): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env = {
    PATH: process.env.PATH ?? '',
    PHIGATE_ENV: 'development',
    PHIGATE_DATA_DIR: dir,
    DATABASE_URL: db.appUrl,
    PHIGATE_MIGRATE_URL: db.adminUrl,
    PHIGATE_AUDIT_LOG_ORIGIN: ORIGIN,
    PHIGATE_AUDIT_SIGNING_KEY_FILE: keyFile,
  };
  const child = spawn(process.execPath, ['bin/phigate.js', 'audit', 'retain', '--confirm'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, stdout, stderr };
}

/** Every event of today is still there. */
async function expectAllKept(): Promise<void> {
  const counts = await admin(async (c) =>
    (await c.query(`SELECT (SELECT count(*)::int FROM phigate.audit_events_v1) AS v1, (SELECT count(*)::int FROM phigate.audit_records WHERE request_id LIKE 'req-today-%') AS records`)).rows[0],
  );
  expect(counts).toEqual({ v1: 2, records: 4 });
}

async function fresh(): Promise<void> {
  db = await createTestDatabase();
  pool = createPool(db.appUrl, { max: 2, applicationName: 'phigate-audit' });
}

it('events of today back-dated by seven years at the front of the log: a routine run removes none, and says no checkpoint was signed before the cutoff', async () => {
  await fresh();
  await logOfToday();
  await backDate();
  const r = await retain();
  expect(r).toMatchObject({ code: 0, stderr: '' });
  expect(r.stdout).toMatch(/^retention: removed no events older than \S+; no checkpoint whose signature checks out was signed \(by its signed time\) before then, so nothing could go; /);
  await expectAllKept();
});

it("the checkpoints' signed_at column back-dated too, and a checkpoint by another key claiming an old time: refused, naming the checkpoint, nothing removed", async () => {
  await fresh();
  await logOfToday();
  await backDate();
  await tamper("UPDATE phigate.audit_checkpoints SET signed_at = now() - interval '7 years'");
  await tamper('DELETE FROM phigate.audit_checkpoints');
  const other = await fileSigner(path.join(dir, `other-${db.name}.pem`), ORIGIN);
  const size = await checkpointSignedAt(pool, other, new Date(Date.now() - 7 * 365 * 86_400_000));
  const r = await retain();
  expect(r).toMatchObject({ code: 2, stdout: '' });
  expect(r.stderr).toBe(`phigate: retention refused: checkpoint ${size}: its signature does not verify with the public key; run audit verify. Nothing was removed\n`);
  expect(await admin(async (c) => (await c.query('SELECT count(*)::int AS n FROM phigate.audit_retention_runs')).rows[0].n)).toBe(0);
  await expectAllKept();
});

it('an old-format checkpoint without a time line, over back-dated events: it bounds nothing, and the run says so', async () => {
  await fresh();
  await logOfToday();
  await backDate();
  await tamper('DELETE FROM phigate.audit_checkpoints');
  await checkpointSignedAt(pool, signer, null);
  const r = await retain();
  expect(r).toMatchObject({ code: 0, stderr: '' });
  expect(r.stdout).toContain('so nothing could go; 1 later checkpoint carries no signed time and bounds nothing (retention stops before it); ');
  await expectAllKept();
});

it("the database's clock set back while the checkpointer signs (another clock_timestamp first on the search_path): the signed time is still today's", async () => {
  await fresh();
  await admin(async (c) => {
    await c.query('CREATE SCHEMA fixretain_clock');
    await c.query("CREATE FUNCTION fixretain_clock.clock_timestamp() RETURNS timestamptz LANGUAGE sql AS $$ SELECT pg_catalog.now() - interval '7 years' $$");
    await c.query('GRANT USAGE ON SCHEMA fixretain_clock TO PUBLIC');
    await c.query(`ALTER DATABASE ${db.name} SET search_path = fixretain_clock, pg_catalog, "$user", public`);
  });
  // Straight to PostgreSQL: new sessions, which take the database's setting.
  const sealer = createPool(db.directAppUrl, { max: 2, applicationName: 'phigate-audit' });
  try {
    expect((await sealer.query<{ y: number }>('SELECT extract(year FROM clock_timestamp())::int AS y')).rows[0]!.y).toBeLessThan(new Date().getUTCFullYear() - 6);
    await logOfToday(sealer);
  } finally {
    await sealer.end();
  }
  await backDate();
  const r = await retain();
  expect(r).toMatchObject({ code: 0, stderr: '' });
  expect(r.stdout).toMatch(/^retention: removed no events /);
  await expectAllKept();
});
