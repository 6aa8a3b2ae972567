import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { createFieldCipher } from '../src/crypto/field-cipher.ts';
import { createKeyring } from '../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../src/crypto/keys/local.ts';
import { createPgKeyStore } from '../src/db/key-store.ts';
import { createPool } from '../src/db/pool.ts';
import { backfillIndex, finishIndexRotation, startIndexRotation } from '../src/records/index-rotation.ts';
import { openBenchDatabase, seedBenchDatabase } from './setup-db.ts';

// Blind-index rotation of one clinic on a seeded data set: backfill rows per second (decrypting
// mrn and ssn, two HMACs, the UPDATE and the audit rows of each batch) and how long finishing
// holds the clinic's writers. `tsx bench/index-rotation.ts [patients] [batch]`, with
// BENCH_DATABASE_URL for an existing cluster (embedded PostgreSQL otherwise).

const patients = Number(process.argv[2] ?? 20_000);
const batchSize = Number(process.argv[3] ?? 200);
const log = (s: string) => process.stderr.write(`${s}\n`);

const db = await openBenchDatabase(log);
try {
  const masterKey = randomBytes(32);
  await seedBenchDatabase(db, { patients, seed: 1, masterKey });
  const pool = createPool(db.appUrl, { max: 2 });
  const client = new pg.Client({ connectionString: db.adminUrl });
  await client.connect();
  try {
    const keyring = createKeyring({ provider: createLocalKeyProvider(masterKey), store: createPgKeyStore(pool) });
    const deps = { db: client, keyring, cipher: createFieldCipher(keyring), actor: 'cli:bench' };
    const { rows } = await client.query<{ clinic_id: string; n: number }>(
      'SELECT clinic_id, count(*)::int AS n FROM phigate.patients GROUP BY 1 ORDER BY 2 DESC LIMIT 1',
    );
    const { clinic_id: clinic, n } = rows[0]!;
    await startIndexRotation(deps, clinic);
    let t = performance.now();
    const result = await backfillIndex(deps, clinic, { batchSize });
    const backfillS = (performance.now() - t) / 1000;
    // A writer of the clinic, as the gateway's writes do it: how long it waits for the versions lock.
    const writer = new pg.Client({ connectionString: db.adminUrl });
    await writer.connect();
    let finishing = true;
    let longestWaitMs = 0;
    let writes = 0;
    const writing = (async () => {
      while (finishing) {
        const w = performance.now();
        await writer.query('BEGIN');
        await writer.query('SELECT * FROM phigate.blind_index_versions_for_write($1)', [clinic]);
        await writer.query('COMMIT');
        longestWaitMs = Math.max(longestWaitMs, performance.now() - w);
        writes++;
      }
    })();
    t = performance.now();
    const finished = await finishIndexRotation(deps, clinic, { notBeforeMs: 0, batchSize });
    const finishS = (performance.now() - t) / 1000;
    finishing = false;
    await writing;
    await writer.end();
    process.stdout.write(
      `${JSON.stringify({
        patientsSeeded: patients,
        clinic,
        clinicRows: n,
        batchSize,
        backfill: { rows: result.rows, batches: result.batches, seconds: +backfillS.toFixed(2), rowsPerSecond: Math.round(result.rows / backfillS) },
        finish: { rows: finished.rows, seconds: +finishS.toFixed(2), writerTransactions: writes, longestWriterMs: Math.round(longestWaitMs) },
      })}\n`,
    );
  } finally {
    await client.end();
    await pool.end();
  }
} finally {
  await db.close();
}
