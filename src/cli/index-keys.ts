import { userInfo } from 'node:os';
import type { ParseArgsConfig } from 'node:util';
import pg from 'pg';
import type { Config } from '../config.ts';
import { createFieldCipher } from '../crypto/field-cipher.ts';
import { keyProviderFromConfig } from '../crypto/keys/from-config.ts';
import { createKeyring } from '../crypto/keys/keyring.ts';
import { createPgKeyStore } from '../db/key-store.ts';
import { createPool } from '../db/pool.ts';
import { databaseUrls } from '../dev/embedded-stack.ts';
import { isPhigateError } from '../errors.ts';
import { backfillIndex, finishIndexRotation, indexRotationStates, startIndexRotation, type IndexRotationDeps } from '../records/index-rotation.ts';
import { progressBar } from './progress.ts';

export const INDEX_KEYS_USAGE = `  keys rotate-index [--clinic C] [--batch N]
                                new blind-index key version per clinic: start (or resume) the rotation,
                                backfill the new index with progress; lookups keep working
  keys rotate-index --finish [--clinic C]
                                drop the old index version (refused while a row lacks the new one)
  keys rotate-index --status [--clinic C]
                                where each clinic's rotation stands`;

export const indexKeysOptions: NonNullable<ParseArgsConfig['options']> = {
  clinic: { type: 'string' },
  batch: { type: 'string' },
  finish: { type: 'boolean' },
  status: { type: 'boolean' },
};

export class IndexKeysCommandError extends Error {}

type Values = Record<string, string | boolean | undefined>;

/**
 * `keys rotate-index`. Refusals of the job (finish too early or before the backfill, no rotation)
 * print their reason and exit 1; nothing it prints carries an identifier or a key.
 */
export async function runIndexKeys(v: Values, config: Config, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  if (v.finish && v.status) throw new IndexKeysCommandError('--finish and --status exclude each other');
  const clinic = typeof v.clinic === 'string' ? v.clinic.trim() : undefined;
  if (clinic === '') throw new IndexKeysCommandError('--clinic needs a clinic id');
  const batch = v.batch === undefined ? undefined : Number(v.batch);
  if (batch !== undefined && (typeof v.batch !== 'string' || !/^\d+$/.test(v.batch) || batch < 1 || batch > 10_000)) {
    throw new IndexKeysCommandError('--batch must be a whole number from 1 to 10000');
  }

  const urls = await databaseUrls(config, err);
  if (!urls.migrateUrl) throw new IndexKeysCommandError('PHIGATE_MIGRATE_URL: is required to rotate blind-index keys');
  const keyPool = createPool(urls.appUrl, { max: 2, caFile: config.databaseCaFile, applicationName: 'phigate-keys' });
  const db = new pg.Client({ connectionString: urls.migrateUrl, application_name: 'phigate-index-rotation' });
  await db.connect();
  try {
    const keyring = createKeyring({ provider: await keyProviderFromConfig(config), store: createPgKeyStore(keyPool) });
    const deps: IndexRotationDeps = { db, keyring, cipher: createFieldCipher(keyring), actor: `cli:${userInfo().username}` };
    const states = await indexRotationStates(db, clinic === undefined ? undefined : [clinic]).catch((e: unknown) => {
      throw isPhigateError(e) && e.code === 'BAD_USER_INPUT' ? new IndexKeysCommandError(`--clinic: ${e.message}`) : e;
    });
    if (v.status) {
      for (const s of states) out(`${s.clinicId}: version ${s.version}${s.next === null ? '' : `, rotating to ${s.next}, ${s.lacking} rows to backfill`}`);
      return 0;
    }
    let refusedAny = false;
    for (const s of states) {
      try {
        if (v.finish) {
          // Without --clinic, only the clinics that are rotating.
          if (s.next === null && clinic === undefined) continue;
          const done = await finishIndexRotation(deps, s.clinicId, { batchSize: batch, onProgress: progressBar(`${s.clinicId} finish`, process.stderr) });
          out(`${s.clinicId}: index version ${done.version} in use, version ${done.version - 1} dropped (${done.rows} rows)`);
        } else {
          const started = await startIndexRotation(deps, s.clinicId);
          err(`${s.clinicId}: ${started.resumed ? 'resuming' : 'started'} index rotation ${started.from} -> ${started.to}`);
          const result = await backfillIndex(deps, s.clinicId, { batchSize: batch, onProgress: progressBar(`${s.clinicId} index`, process.stderr) });
          out(`${s.clinicId}: ${result.rows} rows backfilled under index version ${started.to}; run \`phigate keys rotate-index --finish --clinic ${s.clinicId}\` to drop version ${started.from}`);
        }
      } catch (e) {
        if (!isPhigateError(e) || e.code !== 'BAD_USER_INPUT') throw e;
        err(`${s.clinicId}: refused: ${e.message}`);
        refusedAny = true;
      }
    }
    return refusedAny ? 1 : 0;
  } finally {
    await db.end();
    await keyPool.end();
    await urls.stop();
  }
}
