import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { generateDataset, type Dataset } from '../../src/seed/dataset.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';
import { writeSealedDataset } from '../support/process-stack.ts';

// `phigate keys rotate-index` as an operator runs it: killed (SIGKILL) half-way through the
// backfill and run again, it resumes and every patient is re-indexed exactly once; finishing is
// refused too early and works later; nothing it prints is an identifier.

// Each CLI run loads TypeScript through tsx: seconds each on a busy machine.
vi.setConfig({ testTimeout: 240_000, hookTimeout: 120_000 });

const ROOT = path.resolve(import.meta.dirname, '../..');
const CLINIC = 'c-north';

let db: TestDatabase;
let dataDir: string;
let data: Dataset;
const masterKey = randomBytes(32);

const env = () => ({
  PATH: process.env.PATH ?? '',
  PHIGATE_ENV: 'development',
  PHIGATE_DATA_DIR: dataDir,
  DATABASE_URL: db.appUrl,
  PHIGATE_MIGRATE_URL: db.adminUrl,
  PHIGATE_LOCAL_MASTER_KEY: masterKey.toString('base64'),
});

beforeAll(async () => {
  db = await createTestDatabase();
  dataDir = await mkdtemp(path.join(tmpdir(), 'phigate-bidx-'));
  data = generateDataset({ patients: 300, seed: 11 });
  await writeSealedDataset(db, masterKey, data);
});
afterAll(async () => {
  await db?.drop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI; `killWhen` sees stderr as it grows and SIGKILLs the process when it says so. */
function cli(args: string[], killWhen?: (stderr: string) => boolean): Promise<Run> {
  const child = spawn(process.execPath, ['bin/phigate.js', ...args], { cwd: ROOT, env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString('utf8');
    if (killWhen?.(stderr)) child.kill('SIGKILL');
  });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, stdout, stderr })));
}

const clinicRows = () => data.patients.filter((p) => p.clinicId === CLINIC).length;
const query = <T extends Record<string, unknown>>(sql: string, params: unknown[] = []) =>
  withClient(db.adminUrl, async (c) => (await c.query<T>(sql, params)).rows);
const lacking = async () =>
  (await query<{ n: number }>('SELECT count(*)::int AS n FROM phigate.patients WHERE clinic_id = $1 AND mrn_bidx_next IS NULL', [CLINIC]))[0]!.n;

/** No SSN, MRN or name of the data set in what the CLI printed. */
function expectNoIdentifiers(run: Run): void {
  const printed = run.stdout + run.stderr;
  const leaked = data.patients.flatMap((p) => [p.ssn, p.mrn, p.familyName]).filter((v) => printed.includes(v));
  expect(leaked).toEqual([]);
}

describe('keys rotate-index', () => {
  it('refuses an unknown clinic and an unknown subcommand, naming what is wrong', async () => {
    const unknown = await cli(['keys', 'rotate-index', '--clinic', 'c-nowhere']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('--clinic: no such clinic');
    const wrong = await cli(['keys', 'rotate-indexes']);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain('keys rotate-index');
  });

  it('killed half-way through the backfill, then run again: resumes, and re-indexes each patient once', async () => {
    // The progress bar prints a line per 10% off a TTY: kill at the first line past zero.
    const killed = await cli(['keys', 'rotate-index', '--clinic', CLINIC, '--batch', '1'], (stderr) => /c-north index: [1-9]\d*\//.test(stderr));
    expect(killed.signal).toBe('SIGKILL');
    expect(killed.stderr).toContain('c-north: started index rotation 1 -> 2');
    const left = await lacking();
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThan(clinicRows());

    const resumed = await cli(['keys', 'rotate-index', '--clinic', CLINIC, '--batch', '7']);
    expect(resumed.code).toBe(0);
    expect(resumed.stderr).toContain('c-north: resuming index rotation 1 -> 2');
    expect(resumed.stdout).toContain(`c-north: ${left} rows backfilled under index version 2`);
    expect(await lacking()).toBe(0);
    const events = await query<{ patient_id: string; actor_kind: string }>(
      `SELECT patient_id, actor_kind FROM phigate.audit_events WHERE action = 'key' AND detail = 'index_backfill:v2'`,
    );
    expect(events).toHaveLength(clinicRows());
    expect(new Set(events.map((e) => e.patient_id)).size).toBe(clinicRows());
    expectNoIdentifiers(killed);
    expectNoIdentifiers(resumed);
  });

  it('status, then finish: refused too early (exit 1, saying why), done once the replicas can have noticed', async () => {
    const status = await cli(['keys', 'rotate-index', '--status']);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain('c-north: version 1, rotating to 2, 0 rows to backfill');
    expect(status.stdout).toContain('c-south: version 1\n');

    const early = await cli(['keys', 'rotate-index', '--finish', '--clinic', CLINIC]);
    expect(early.code).toBe(1);
    expect(early.stderr).toContain('c-north: refused: the rotation started too recently');

    await query(`UPDATE phigate.blind_index_versions SET rotation_started_at = now() - interval '1 hour' WHERE clinic_id = $1`, [CLINIC]);
    const finished = await cli(['keys', 'rotate-index', '--finish']);
    expect(finished.code).toBe(0);
    expect(finished.stdout).toContain(`c-north: index version 2 in use, version 1 dropped (${clinicRows()} rows)`);
    expect(finished.stdout).not.toContain('c-south');
    const [row] = await query<{ version: number; next_version: number | null; next: number }>(
      `SELECT v.version, v.next_version,
              (SELECT count(*)::int FROM phigate.patients p WHERE p.clinic_id = v.clinic_id AND (p.mrn_bidx_next IS NOT NULL OR p.ssn_bidx_next IS NOT NULL)) AS next
       FROM phigate.blind_index_versions v WHERE v.clinic_id = $1`,
      [CLINIC],
    );
    expect(row).toEqual({ version: 2, next_version: null, next: 0 });
    expectNoIdentifiers(finished);
  });
});
