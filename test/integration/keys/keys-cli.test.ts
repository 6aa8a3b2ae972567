import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateDataset } from '../../../src/seed/dataset.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../../support/db.ts';
import { writeSealedDataset } from '../../support/process-stack.ts';

// The operator's commands as processes: shredding refused without --confirm, and a re-encryption
// killed (SIGKILL) half-way, then run again, resumes without making another version.
const ROOT = path.resolve(import.meta.dirname, '../../..');
const masterKey = randomBytes(32);
let db: TestDatabase;
let dataDir: string;
const data = generateDataset({ patients: 150, seed: 9 });

beforeAll(async () => {
  db = await createTestDatabase();
  dataDir = await mkdtemp(path.join(tmpdir(), 'phigate-keys-'));
  await writeSealedDataset(db, masterKey, data);
});
afterAll(async () => {
  await db?.drop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

function cli(args: string[], opts: { killWhen?: (stderr: string) => boolean } = {}) {
  const child = spawn(process.execPath, ['bin/phigate.js', 'keys', ...args], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      PHIGATE_ENV: 'development',
      PHIGATE_DATA_DIR: dataDir,
      DATABASE_URL: db.appUrl,
      PHIGATE_MIGRATE_URL: db.adminUrl,
      PHIGATE_LOCAL_MASTER_KEY: masterKey.toString('base64'),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString('utf8');
    if (opts.killWhen?.(stderr)) child.kill('SIGKILL');
  });
  return new Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
}

const stalePatients = () =>
  withClient(db.adminUrl, async (c) => {
    const r = await c.query(
      `SELECT count(*)::int AS n FROM phigate.patients WHERE clinic_id = 'c-north'
       AND get_byte(given_name, 0) = 2 AND phigate.sealed_version(given_name) < (SELECT max(version) FROM phigate.keyring WHERE purpose = 'data' AND scope = 'c-north')`,
    );
    return r.rows[0].n as number;
  });

// Each case starts several CLI processes (tsx compiles on start): seconds each on a loaded CI machine.
describe('phigate keys', { timeout: 120_000 }, () => {
  it('shred without --confirm is refused, saying why, and destroys nothing', async () => {
    const p = data.patients[0]!;
    const r = await cli(['shred', '--patient', p.id]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--confirm/);
    const keys = await withClient(db.adminUrl, async (c) => (await c.query('SELECT wrapped FROM phigate.patient_keys WHERE patient_id = $1', [p.id])).rows);
    expect(keys.every((k) => k.wrapped !== null)).toBe(true);
    const ok = await cli(['shred', '--patient', p.id, '--confirm']);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/shredded patient/);
  });

  it('rotate --reencrypt killed half-way, then run again: resumes, makes no second version, finishes', async () => {
    const killed = await cli(['rotate', '--clinic', 'c-north', '--reencrypt', '--batch', '1'], {
      // The first progress line after the start (non-TTY: one per tenth of the work).
      killWhen: (stderr) => /c-north re-encrypting: [1-9]\d*\//.test(stderr),
    });
    expect(killed.signal).toBe('SIGKILL');
    const left = await stalePatients();
    expect(left).toBeGreaterThan(0);

    const resumed = await cli(['rotate', '--clinic', 'c-north', '--reencrypt']);
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toMatch(/unfinished .* resuming it, no new version made/);
    expect(await stalePatients()).toBe(0);
    const versions = await withClient(db.adminUrl, async (c) => (await c.query(`SELECT version FROM phigate.keyring WHERE purpose = 'data' AND scope = 'c-north' ORDER BY version`)).rows);
    expect(versions).toEqual([{ version: 1 }, { version: 2 }]);

    // Right after a rotation, replicas may still be writing under version 1: retiring it waits.
    const retire = await cli(['retire', '--clinic', 'c-north', '--version', '1']);
    expect(retire.code).toBe(2);
    expect(retire.stderr).toMatch(/may still write under version 1/);
  });
});
