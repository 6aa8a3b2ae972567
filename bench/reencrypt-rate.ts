/**
 * Re-encryption throughput on a scratch database: `npx tsx bench/reencrypt-rate.ts [patients]`
 * (TEST_DATABASE_URL, a superuser URL, default the local PostgreSQL). Seeds the patients, rotates
 * every clinic's data key, then times `reencryptClinic` (what `phigate keys rotate --reencrypt`
 * runs) over all of them: rows rewritten per second, values per second.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createKeyring } from '../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../src/crypto/keys/local.ts';
import { createPgKeyStore } from '../src/db/key-store.ts';
import { migrate } from '../src/db/migrate.ts';
import { createPool } from '../src/db/pool.ts';
import { reencryptClinic } from '../src/records/reencrypt.ts';
import { CLINICS, generateDataset } from '../src/seed/dataset.ts';
import { writeDataset } from '../src/seed/write.ts';

const patients = Number(process.argv[2] ?? 5000);
const base = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const name = `phigate_reenc_${randomBytes(4).toString('hex')}`;
const url = new URL(base);
url.pathname = `/${name}`;

const root = new pg.Client({ connectionString: base });
await root.connect();
await root.query(`CREATE DATABASE ${name}`);
try {
  await migrate(url.toString());
  const pool = createPool(url.toString(), { max: 3 });
  const keyring = createKeyring({ provider: createLocalKeyProvider(randomBytes(32)), store: createPgKeyStore(pool) });
  const seeder = new pg.Client({ connectionString: url.toString() });
  await seeder.connect();
  await writeDataset(seeder, keyring, generateDataset({ patients, seed: 1 }));
  await seeder.end();
  const { rows } = await pool.query<{ rows: string }>('SELECT (SELECT count(*) FROM phigate.patients) + (SELECT count(*) FROM phigate.encounters) AS rows');
  for (const c of CLINICS) await keyring.rotate('data', c.id);

  const started = performance.now();
  let values = 0;
  let done = 0;
  for (const c of CLINICS) {
    const r = await reencryptClinic({ admin: { pool, actor: 'bench' }, keyring, clinicId: c.id, batchSize: 100 });
    values += r.values;
    done += r.patients;
    if (r.remaining !== 0) throw new Error(`${c.id}: ${r.remaining} left`);
  }
  const seconds = (performance.now() - started) / 1000;
  const total = Number(rows[0]!.rows);
  console.log(`${done} patients (${total} rows, ${values} values) re-encrypted in ${seconds.toFixed(1)} s`);
  console.log(`${Math.round(done / seconds)} patients/s, ${Math.round(total / seconds)} rows/s, ${Math.round(values / seconds)} values/s`);
  console.log(`100,000 patients at this rate: ${((100_000 / (done / seconds)) / 60).toFixed(1)} min`);
  await pool.end();
} finally {
  await root.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await root.end();
}
