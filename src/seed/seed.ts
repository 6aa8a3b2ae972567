import { writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import type { Keyring } from '../crypto/keys/keyring.ts';
import { generateDataset, type Dataset } from './dataset.ts';
import { writeDataset } from './write.ts';

export interface SeedOptions {
  readonly migrateUrl: string;
  readonly keyring: Keyring;
  readonly patients: number;
  readonly manifest: string;
  readonly seed?: number;
  readonly onProgress?: (done: number, total: number) => void;
}

/**
 * Adds `patients` synthetic patients (MRNs continue after those already there) and writes the
 * manifest: what each seeded staff member should see, so anyone can check the gateway's answers.
 * The manifest holds synthetic PHI in clear, so it is written 0600 next to the other secrets.
 */
export async function seed(opts: SeedOptions): Promise<Dataset> {
  const client = new pg.Client({ connectionString: opts.migrateUrl, application_name: 'phigate-seed' });
  await client.connect();
  try {
    const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM phigate.patients');
    const data = generateDataset({ patients: opts.patients, seed: opts.seed ?? Date.now() % 2 ** 31, firstMrn: rows[0]!.n + 1 });
    await client.query('BEGIN');
    try {
      await writeDataset(client, opts.keyring, data, { onProgress: opts.onProgress });
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK');
      throw err;
    }
    await mkdir(path.dirname(opts.manifest), { recursive: true });
    const manifest = {
      clinics: data.clinics,
      staff: data.staff,
      patients: data.patients.map(({ encounters: _e, phone: _p, email: _m, address: _a, ...p }) => p),
    };
    await writeFile(opts.manifest, `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 });
    return data;
  } finally {
    await client.end();
  }
}

export async function isSeeded(migrateUrl: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: migrateUrl });
  await client.connect();
  try {
    return ((await client.query('SELECT 1 FROM phigate.clinics LIMIT 1')).rowCount ?? 0) > 0;
  } finally {
    await client.end();
  }
}
