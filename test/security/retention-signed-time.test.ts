import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { checkpoint, sealAll } from '../../src/audit/log/seal.ts';
import { fileSigner } from '../../src/audit/log/signer.ts';
import { createPool, type Pool } from '../../src/db/pool.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';

// Pentest probe (retention): `audit retain` ends its range at the first leaf whose row's
// occurred_at is inside the period. Someone with write access to the rows back-dates the records at
// the front of the log by seven years; the operator's routine six-year retention then deletes them,
// and with them every trace of the edit.

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
let db: TestDatabase;
let pool: Pool;
let dir: string;
let keyFile: string;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.appUrl, { max: 2, applicationName: 'phigate-audit' });
  dir = await mkdtemp(path.join(tmpdir(), 'fixretain-probe-'));
  keyFile = path.join(dir, 'audit-signing-key.pem');
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

it('a retention run removes nothing written today, whatever the rows say their time is', async () => {
  const signer = await fileSigner(keyFile, 'phigate.test/retain-probe');
  await withClient(db.adminUrl, (c) =>
    c.query(
      `INSERT INTO phigate.audit_records (request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
       SELECT 'req-today-' || g, 'dr-probe', 'user', 'physician', 'treatment', gen_random_uuid(), ARRAY['read'], ARRAY['Patient'], ARRAY['ssn'],
              ARRAY[NULL]::uuid[], ARRAY[NULL]::text[]
       FROM generate_series(1, 4) g`,
    ),
  );
  for (let sealed = 0; sealed < 4; ) {
    sealed += await sealAll(pool, 1000);
    if (sealed < 4) await new Promise((r) => setTimeout(r, 50));
  }
  await checkpoint(pool, signer, { seconds: 0, events: 1, force: true });
  // The tamper: the first three records now claim to be seven years old.
  await withClient(db.adminUrl, async (c) => {
    await c.query('SET session_replication_role = replica');
    await c.query("UPDATE phigate.audit_records SET occurred_at = now() - interval '7 years' WHERE request_id IN ('req-today-1', 'req-today-2', 'req-today-3')");
  });

  const env = {
    PATH: process.env.PATH ?? '',
    PHIGATE_ENV: 'development',
    PHIGATE_DATA_DIR: dir,
    DATABASE_URL: db.appUrl,
    PHIGATE_MIGRATE_URL: db.adminUrl,
    PHIGATE_AUDIT_LOG_ORIGIN: 'phigate.test/retain-probe',
    PHIGATE_AUDIT_SIGNING_KEY_FILE: keyFile,
  };
  const child = spawn(process.execPath, ['bin/phigate.js', 'audit', 'retain', '--confirm'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (out += c.toString('utf8')));
  await new Promise((resolve) => child.once('exit', resolve));
  const left = await withClient(db.adminUrl, async (c) => Number((await c.query<{ n: string }>("SELECT count(*) AS n FROM phigate.audit_records WHERE request_id LIKE 'req-today-%'")).rows[0]!.n));
  console.log(`pentest: ${out.trim()}; ${left} of 4 records left`);
  expect(left).toBe(4);
});
