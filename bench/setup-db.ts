import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { createFieldCipher } from '../src/crypto/field-cipher.ts';
import { createKeyring } from '../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../src/crypto/keys/local.ts';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { createPgKeyStore } from '../src/db/key-store.ts';
import { ensureAppLogin, migrate } from '../src/db/migrate.ts';
import { createPool } from '../src/db/pool.ts';
import type { Dataset } from '../src/seed/dataset.ts';
import { writeDataset } from '../src/seed/write.ts';
import { freePort } from '../test/support/free-port.ts';

export const APP_ROLE = 'phigate_bench_gateway';
const APP_PASSWORD = 'phigate-bench-only';

export interface BenchDatabase {
  readonly adminUrl: string;
  readonly appUrl: string;
  readonly kind: 'embedded' | 'external';
  close(): Promise<void>;
}

const withDb = (url: string, db: string, user?: string, password?: string): string => {
  const u = new URL(url);
  u.pathname = `/${db}`;
  if (user !== undefined) u.username = user;
  if (password !== undefined) u.password = password;
  return u.toString();
};

/** A fresh database: BENCH_DATABASE_URL's cluster (superuser) when set, else embedded PostgreSQL in a temp dir. */
export async function openBenchDatabase(log: (s: string) => void): Promise<BenchDatabase> {
  const external = process.env.BENCH_DATABASE_URL;
  let adminBase: string;
  let stop: () => Promise<void> = async () => undefined;
  if (external) {
    adminBase = external;
  } else {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'phigate-bench-'));
    const embedded = await startEmbeddedPostgres({ dataDir: dir, port: await freePort(), persistent: false });
    adminBase = embedded.superuserUrl;
    stop = async () => {
      await embedded.stop();
      await rm(dir, { recursive: true, force: true });
    };
    log(`embedded PostgreSQL in ${dir}`);
  }
  const name = `phigate_bench_${process.pid}`;
  const c = new pg.Client({ connectionString: adminBase });
  await c.connect();
  await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  const adminUrl = withDb(adminBase, name);
  const appUrl = withDb(adminBase, name, APP_ROLE, APP_PASSWORD);
  return {
    adminUrl,
    appUrl,
    kind: external ? 'external' : 'embedded',
    async close() {
      const d = new pg.Client({ connectionString: adminBase });
      await d.connect();
      await d.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
      await d.end();
      await stop();
    },
  };
}

/** Migrations (src/db/migrate.ts), the app login role, then the encrypted data set (src/seed/write.ts). */
export async function migrateAndSeed(db: BenchDatabase, data: Dataset, masterKey: Buffer, onProgress: (done: number, total: number) => void): Promise<void> {
  await migrate(db.adminUrl);
  // The login role is cluster-wide: recreate it so a previous run's password cannot linger.
  const c = new pg.Client({ connectionString: db.adminUrl });
  await c.connect();
  try {
    const exists = await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [APP_ROLE]);
    if (exists.rowCount) await c.query(`ALTER ROLE ${APP_ROLE} PASSWORD '${APP_PASSWORD}'`);
  } finally {
    await c.end();
  }
  await ensureAppLogin(db.adminUrl, db.appUrl);
  const pool = createPool(db.appUrl, { max: 2 });
  const keyring = createKeyring({ provider: createLocalKeyProvider(masterKey), store: createPgKeyStore(pool) });
  const admin = new pg.Client({ connectionString: db.adminUrl });
  await admin.connect();
  try {
    await writeDataset(admin, keyring, createFieldCipher(keyring), data, { batchSize: 1000, onProgress });
    await admin.query('ANALYZE');
  } finally {
    await admin.end();
    await pool.end();
  }
}

/**
 * The same rows in plaintext in schema bench_plain, for PostGraphile and the floor: same row
 * security as phigate.* (the policies read the same phigate.* settings through phigate.ctx_*).
 */
export async function writePlainCopy(db: BenchDatabase, data: Dataset, onProgress: (done: number, total: number) => void): Promise<void> {
  const c = new pg.Client({ connectionString: db.adminUrl });
  await c.connect();
  try {
    await c.query(`
      CREATE SCHEMA bench_plain;
      CREATE TABLE bench_plain.patients (
        id uuid PRIMARY KEY, clinic_id text NOT NULL, mrn text NOT NULL, ssn text, given_name text, family_name text,
        birth_date text, phone text, email text, address text);
      CREATE INDEX ON bench_plain.patients (ssn);
      CREATE INDEX ON bench_plain.patients (clinic_id, id);
      CREATE TABLE bench_plain.care_team (
        patient_id uuid NOT NULL REFERENCES bench_plain.patients (id), subject text NOT NULL, clinic_id text NOT NULL,
        PRIMARY KEY (patient_id, subject));
      CREATE INDEX ON bench_plain.care_team (subject, patient_id);
      CREATE TABLE bench_plain.encounters (
        id uuid PRIMARY KEY, patient_id uuid NOT NULL REFERENCES bench_plain.patients (id), clinic_id text NOT NULL,
        occurred_at timestamptz NOT NULL, kind text NOT NULL, reason text, diagnosis_codes text, notes text);
      CREATE INDEX ON bench_plain.encounters (patient_id, occurred_at DESC);
      COMMENT ON TABLE bench_plain.care_team IS '@omit';
    `);
    const batch = 2000;
    for (let s = 0; s < data.patients.length; s += batch) {
      const ps = data.patients.slice(s, s + batch);
      const col = <T>(f: (p: (typeof ps)[number]) => T) => ps.map(f);
      await c.query(
        `INSERT INTO bench_plain.patients SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])`,
        [col((p) => p.id), col((p) => p.clinicId), col((p) => p.mrn), col((p) => p.ssn), col((p) => p.givenName), col((p) => p.familyName), col((p) => p.birthDate), col((p) => p.phone), col((p) => p.email), col((p) => p.address)],
      );
      const ct = ps.flatMap((p) => p.careTeam.map((sub) => [p.id, sub, p.clinicId] as const));
      await c.query('INSERT INTO bench_plain.care_team SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[])', [ct.map((x) => x[0]), ct.map((x) => x[1]), ct.map((x) => x[2])]);
      const es = ps.flatMap((p) => p.encounters.map((e) => ({ p, e })));
      await c.query(
        `INSERT INTO bench_plain.encounters SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[], $8::text[])`,
        [es.map((x) => x.e.id), es.map((x) => x.p.id), es.map((x) => x.p.clinicId), es.map((x) => x.e.occurredAt), es.map((x) => x.e.kind), es.map((x) => x.e.reason), es.map((x) => JSON.stringify(x.e.diagnosisCodes)), es.map((x) => x.e.notes)],
      );
      onProgress(Math.min(s + batch, data.patients.length), data.patients.length);
    }
    // Row security: the policies of schema/migrations/004_row_security.sql, on the plaintext tables.
    await c.query(`
      ALTER TABLE bench_plain.patients OWNER TO phigate_owner;
      ALTER TABLE bench_plain.care_team OWNER TO phigate_owner;
      ALTER TABLE bench_plain.encounters OWNER TO phigate_owner;
      ALTER TABLE bench_plain.patients ENABLE ROW LEVEL SECURITY;
      ALTER TABLE bench_plain.patients FORCE ROW LEVEL SECURITY;
      ALTER TABLE bench_plain.encounters ENABLE ROW LEVEL SECURITY;
      ALTER TABLE bench_plain.encounters FORCE ROW LEVEL SECURITY;
      ALTER TABLE bench_plain.care_team ENABLE ROW LEVEL SECURITY;
      ALTER TABLE bench_plain.care_team FORCE ROW LEVEL SECURITY;
      CREATE POLICY patients_select ON bench_plain.patients FOR SELECT TO phigate_app USING (
        clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
        AND ((SELECT phigate.ctx_roles()) && ARRAY['registrar', 'billing', 'clinic_admin']
          OR ((SELECT phigate.ctx_roles()) && ARRAY['physician', 'nurse']
            AND EXISTS (SELECT 1 FROM bench_plain.care_team ct WHERE ct.patient_id = patients.id AND ct.subject = (SELECT phigate.ctx_actor())))));
      CREATE POLICY patients_update ON bench_plain.patients FOR UPDATE TO phigate_app
      USING (
        clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
        AND ((SELECT phigate.ctx_roles()) && ARRAY['registrar']
          OR ((SELECT phigate.ctx_roles()) && ARRAY['physician']
            AND EXISTS (SELECT 1 FROM bench_plain.care_team ct WHERE ct.patient_id = patients.id AND ct.subject = (SELECT phigate.ctx_actor())))))
      WITH CHECK (clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[]));
      CREATE POLICY encounters_select ON bench_plain.encounters FOR SELECT TO phigate_app USING (
        clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
        AND EXISTS (SELECT 1 FROM bench_plain.patients p WHERE p.id = encounters.patient_id));
      CREATE POLICY care_team_select ON bench_plain.care_team FOR SELECT TO phigate_app USING (
        clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[]));
      GRANT USAGE ON SCHEMA bench_plain TO phigate_app;
      GRANT SELECT ON bench_plain.patients, bench_plain.encounters, bench_plain.care_team TO phigate_app;
      GRANT UPDATE (ssn, given_name, family_name, birth_date, phone, email, address) ON bench_plain.patients TO phigate_app;
      ANALYZE bench_plain.patients; ANALYZE bench_plain.encounters; ANALYZE bench_plain.care_team;
    `);
  } finally {
    await c.end();
  }
}

export const newMasterKey = (): Buffer => randomBytes(32);
