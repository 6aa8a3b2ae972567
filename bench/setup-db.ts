import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import pg from 'pg';
import { createKeyring } from '../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../src/crypto/keys/local.ts';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { createPgKeyStore } from '../src/db/key-store.ts';
import { ensureAppLogin, migrate } from '../src/db/migrate.ts';
import { createPool } from '../src/db/pool.ts';
import { CLINICS } from '../src/seed/dataset.ts';
import { insertClinics, insertSealed, SEED_PHI, seedKeys, unnestInsert } from '../src/seed/write.ts';
import { onFreePort } from '../test/support/free-port.ts';
import type { SeedWorkerInput, SeedWorkerMessage } from './seed-worker.ts';
import { ActorIndex } from './workloads.ts';

export const APP_ROLE = 'phigate_bench_gateway';
const APP_PASSWORD = 'phigate-bench-only';

export interface BenchDatabase {
  readonly adminUrl: string;
  readonly appUrl: string;
  readonly kind: 'embedded' | 'external';
  /** The database's name in its cluster. */
  readonly name: string;
  /** Drops the database (and stops an embedded server); `keep` leaves an external cluster's database in place. */
  close(opts?: { keep?: boolean }): Promise<void>;
}

const withDb = (url: string, db: string, user?: string, password?: string): string => {
  const u = new URL(url);
  u.pathname = `/${db}`;
  if (user !== undefined) u.username = user;
  if (password !== undefined) u.password = password;
  return u.toString();
};

/** A fresh database: BENCH_DATABASE_URL's cluster (superuser) when set, else embedded PostgreSQL in a temp dir. */
export async function openBenchDatabase(log: (s: string) => void, opts: { statementStats?: boolean; keep?: boolean } = {}): Promise<BenchDatabase> {
  const external = process.env.BENCH_DATABASE_URL;
  // An embedded server lives in a temp dir that close() removes: there is nothing to keep.
  if (opts.keep && !external) throw new Error('--keep-database needs BENCH_DATABASE_URL (an existing cluster)');
  let adminBase: string;
  let stop: () => Promise<void> = async () => undefined;
  if (external) {
    adminBase = external;
  } else {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'phigate-bench-'));
    const embedded = await onFreePort((port) =>
      startEmbeddedPostgres({
        dataDir: dir,
        port,
        persistent: false,
        ...(opts.statementStats ? { settings: { shared_preload_libraries: 'pg_stat_statements', 'pg_stat_statements.track_planning': 'on' } } : {}),
      }),
    );
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
    name,
    async close(closeOpts = {}) {
      if (closeOpts.keep && external) {
        log(`database ${name} kept (drop it with: DROP DATABASE ${name} WITH (FORCE))`);
        return;
      }
      const d = new pg.Client({ connectionString: adminBase });
      await d.connect();
      await d.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
      await d.end();
      await stop();
    },
  };
}

/** A database that `bench/run.ts --keep-database` left on BENCH_DATABASE_URL's cluster, reached as its superuser and as the gateway's login. */
export function keptBenchDatabase(name: string): { adminUrl: string; appUrl: string } {
  const cluster = process.env.BENCH_DATABASE_URL;
  if (!cluster) throw new Error('BENCH_DATABASE_URL (the cluster the database was kept on) is not set');
  if (!/^phigate_bench_\d+$/.test(name)) throw new Error(`${JSON.stringify(name)} is not a bench database's name (phigate_bench_<pid>)`);
  return { adminUrl: withDb(cluster, name), appUrl: withDb(cluster, name, APP_ROLE, APP_PASSWORD) };
}

/**
 * Where `--keep-database` leaves a kept database's master key (mode 0600, outside the repository):
 * without it `--reuse-database` could not open the sealed rows. Bench data only, synthetic.
 */
const keptKeyFile = (name: string) => path.join(os.tmpdir(), 'phigate-bench-kept', `${name}.key`);

export async function saveKeptKey(name: string, masterKey: Buffer): Promise<string> {
  const file = keptKeyFile(name);
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(file, masterKey.toString('hex'), { mode: 0o600 });
  return file;
}

/**
 * A database that an earlier `--keep-database` run seeded, opened again: its master key from
 * saveKeptKey's file, its migrations brought up to date (a new one applies to the kept rows), and
 * the actors rebuilt from its plaintext copy. close() keeps it.
 */
export async function reopenBenchDatabase(log: (s: string) => void, name: string): Promise<{ db: BenchDatabase; masterKey: Buffer; seeded: SeededData }> {
  const { adminUrl, appUrl } = keptBenchDatabase(name);
  const masterKey = Buffer.from((await readFile(keptKeyFile(name), 'utf8')).trim(), 'hex');
  if (masterKey.length !== 32) throw new Error(`${keptKeyFile(name)} does not hold a 32-byte key`);
  const t0 = performance.now();
  await migrate(adminUrl);
  const c = new pg.Client({ connectionString: adminUrl, application_name: 'phigate-bench-seed' });
  await c.connect();
  const actors = new ActorIndex();
  let patients = 0;
  let encounters = 0;
  try {
    await c.query(`ALTER ROLE ${APP_ROLE} PASSWORD '${APP_PASSWORD}'`);
    const rows = await c.query<{ id: string; clinic_id: string; ssn: string; team: string[] }>(
      `SELECT p.id, p.clinic_id, p.ssn, coalesce(array_agg(ct.subject ORDER BY ct.subject) FILTER (WHERE ct.subject IS NOT NULL), '{}') AS team
         FROM bench_plain.patients p LEFT JOIN bench_plain.care_team ct ON ct.patient_id = p.id
        GROUP BY p.id, p.clinic_id, p.ssn ORDER BY p.id`,
    );
    actors.addBatch({ ids: rows.rows.map((r) => r.id), clinicIds: rows.rows.map((r) => r.clinic_id), ssns: rows.rows.map((r) => r.ssn), careTeams: rows.rows.map((r) => r.team) });
    patients = rows.rows.length;
    encounters = Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM bench_plain.encounters')).rows[0]!.n);
  } finally {
    await c.end();
  }
  const totalS = round1((performance.now() - t0) / 1000);
  log(`reusing ${name}: ${patients} patients, ${encounters} encounters (${totalS} s to reopen)`);
  const db: BenchDatabase = {
    adminUrl,
    appUrl,
    kind: 'external',
    name,
    // Reused, it stays: dropped by hand (DROP DATABASE, then the key file) once its runs are done.
    async close() {
      log(`database ${name} kept (drop it with: DROP DATABASE ${name} WITH (FORCE); and remove ${keptKeyFile(name)})`);
    },
  };
  const timings: SeedTimings = { prepareS: 0, loadS: 0, plainCareTeamS: 0, indexesS: 0, vacuumS: 0, checkpointS: 0, totalS, workers: 0, workerBusyS: 0, insertS: 0, patientsPerS: 0 };
  return { db, masterKey, seeded: { patients, encounters, actors, timings } };
}

const LOADED_TABLES = ['phigate.patients', 'phigate.encounters', 'phigate.care_team', 'bench_plain.patients', 'bench_plain.encounters', 'bench_plain.care_team'];

export interface SeedTimings {
  /** migrations, login role, keys, the empty plaintext tables */
  readonly prepareS: number;
  /** generate + seal (worker threads) overlapped with the INSERTs (main thread) */
  readonly loadS: number;
  /** bench_plain.care_team from phigate.care_team (one INSERT ... SELECT) */
  readonly plainCareTeamS: number;
  /** primary keys, unique and foreign keys, indexes back (and checked); row security on bench_plain */
  readonly indexesS: number;
  /** VACUUM (ANALYZE) of the loaded tables */
  readonly vacuumS: number;
  /** CHECKPOINT after the load */
  readonly checkpointS: number;
  readonly totalS: number;
  /** sealing threads */
  readonly workers: number;
  /** time the sealing threads spent generating and sealing (summed over threads) */
  readonly workerBusyS: number;
  /** time the main thread spent in INSERTs */
  readonly insertS: number;
  readonly patientsPerS: number;
}

export interface SeededData {
  readonly patients: number;
  readonly encounters: number;
  readonly actors: ActorIndex;
  readonly timings: SeedTimings;
}

/**
 * Seeds a fresh bench database: migrations (src/db/migrate.ts), the app login role, then
 * `patients` synthetic patients (`patientsOf({ patients, seed })`, src/seed/dataset.ts) written
 * twice: encrypted into phigate.* exactly as src/seed/write.ts writes them (`sealBatch`,
 * `insertSealed`), and in plaintext into bench_plain.* for PostGraphile and the floor.
 *
 * How it is fast (bench/README.md, "Seeding"): worker threads (one per core by default) generate
 * and seal the next batches while this thread INSERTs the previous one; the six tables are
 * loaded without their indexes, primary, unique and foreign keys, which are put back afterwards
 * from their own definitions (so every constraint is checked over all rows, and the schema is
 * compared with what it was); the loading session commits asynchronously (its own
 * `synchronous_commit = off`: a crash would lose the seed, which is thrown away anyway, and the
 * gateway's sessions keep the server's setting).
 */
export async function seedBenchDatabase(
  db: BenchDatabase,
  opts: { patients: number; seed: number; masterKey: Buffer; batchSize?: number; workers?: number; onProgress?: (done: number, total: number) => void },
): Promise<SeededData> {
  const t0 = performance.now();
  const since = (t: number) => (performance.now() - t) / 1000;
  const batchSize = opts.batchSize ?? 2000;
  await migrate(db.adminUrl);
  const c = new pg.Client({ connectionString: db.adminUrl, application_name: 'phigate-bench-seed' });
  await c.connect();
  const pool = createPool(db.appUrl, { max: 2 });
  const threads: Worker[] = [];
  try {
    // The login role is cluster-wide: reset its password so a previous run's cannot linger.
    const exists = await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [APP_ROLE]);
    if (exists.rowCount) await c.query(`ALTER ROLE ${APP_ROLE} PASSWORD '${APP_PASSWORD}'`);
    await ensureAppLogin(db.adminUrl, db.appUrl);
    await c.query(`${PLAIN_TABLES}`);
    await insertClinics(c, CLINICS);
    // Keys through the keyring as the gateway would make them (local KMS, stored wrapped in
    // phigate.keyring as the app role), then handed to the sealing threads unwrapped.
    const keyring = createKeyring({ provider: createLocalKeyProvider(opts.masterKey), store: createPgKeyStore(pool) });
    const keys = await seedKeys(keyring, CLINICS.map((x) => x.id));
    await c.query("SET synchronous_commit = off; SET maintenance_work_mem = '512MB'");
    const saved = await dropKeysAndIndexes(c, LOADED_TABLES);
    const prepareS = since(t0);

    const t1 = performance.now();
    const actors = new ActorIndex();
    let done = 0;
    let encounters = 0;
    let workerBusyMs = 0;
    let insertMs = 0;
    const workers = Math.max(1, opts.workers ?? os.cpus().length);
    for (let k = 0; k < workers; k++) {
      const input: SeedWorkerInput = { patients: opts.patients, seed: opts.seed, batchSize, credit: 2, keys, worker: k, workers };
      threads.push(startTsWorker(new URL('./seed-worker.ts', import.meta.url), input));
    }
    await new Promise<void>((resolve, reject) => {
      // Batches are written one at a time, in the order they arrive.
      let writing = Promise.resolve();
      let finished = 0;
      for (const w of threads) {
        w.on('error', reject);
        w.on('exit', (code) => (code === 0 ? undefined : reject(new Error(`seed worker exited with ${code}`))));
        w.on('message', (m: SeedWorkerMessage) => {
          if (m.kind === 'done') {
            if (++finished === threads.length) writing.then(resolve, reject);
            return;
          }
          writing = writing.then(async () => {
            const s = performance.now();
            await insertSealed(c, m.sealed);
            await c.query(PLAIN_PATIENTS_INSERT, m.plain.patientParams as string[]);
            await c.query(PLAIN_ENCOUNTERS_INSERT, m.plain.encounterParams as string[]);
            insertMs += performance.now() - s;
            w.postMessage('more');
            actors.addBatch(m.actors);
            done += m.sealed.patients;
            encounters += m.encounters;
            workerBusyMs += m.busyMs;
            opts.onProgress?.(done, opts.patients);
          });
          writing.catch(reject);
        });
      }
    });
    if (done !== opts.patients) throw new Error(`seeded ${done} patients, expected ${opts.patients}`);
    const loadS = since(t1);

    // The plaintext care team is phigate's without change: copied in the database, before the keys are back.
    const t2 = performance.now();
    await c.query('INSERT INTO bench_plain.care_team (patient_id, subject, clinic_id) SELECT patient_id, subject, clinic_id FROM phigate.care_team');
    const plainCareTeamS = since(t2);

    const t3 = performance.now();
    await restoreKeysAndIndexes(c, LOADED_TABLES, saved);
    await c.query(`${PLAIN_ROW_SECURITY}`);
    await c.query('SET synchronous_commit TO DEFAULT');
    const indexesS = since(t3);
    const t4 = performance.now();
    // Visibility map and hint bits now, statistics for the planner: otherwise autovacuum does
    // this to the freshly inserted tables during the measured runs. patient_keys too: a read joins
    // its newest key from the primary key alone once the table's pages are all-visible (052).
    await c.query(`VACUUM (ANALYZE) ${[...LOADED_TABLES, 'phigate.clinics', 'phigate.keyring', 'phigate.patient_keys'].join(', ')}`);
    const vacuumS = since(t4);
    const t5 = performance.now();
    // The load leaves its data dirty in shared buffers and the WAL long: written out now, not by
    // the checkpointer during the first measured run (which made the first workload look slow).
    await c.query('CHECKPOINT');
    const checkpointS = since(t5);
    const totalS = since(t0);
    return {
      patients: done,
      encounters,
      actors,
      timings: {
        prepareS: round1(prepareS),
        loadS: round1(loadS),
        indexesS: round1(indexesS),
        plainCareTeamS: round1(plainCareTeamS),
        vacuumS: round1(vacuumS),
        checkpointS: round1(checkpointS),
        totalS: round1(totalS),
        workers: threads.length,
        workerBusyS: round1(workerBusyMs / 1000),
        insertS: round1(insertMs / 1000),
        patientsPerS: Math.round(done / totalS),
      },
    };
  } finally {
    await Promise.all(threads.map((w) => w.terminate()));
    await c.end();
    await pool.end();
  }
}

/**
 * A worker thread running a TypeScript module: tsx's loader hooks are not inherited by worker
 * threads on Node 20, so the thread registers them itself before importing the module.
 */
function startTsWorker(module: URL, workerData: unknown): Worker {
  const api = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(api)}).then(({ register }) => { register(); return import(${JSON.stringify(module.href)}); })`;
  return new Worker(code, { eval: true, workerData });
}

const round1 = (x: number) => Math.round(x * 10) / 10;

interface SavedSchema {
  readonly constraints: { table: string; name: string; type: string; def: string }[];
  readonly indexes: { name: string; def: string }[];
}

async function schemaOf(c: pg.Client, tables: readonly string[]): Promise<SavedSchema> {
  const constraints = (
    await c.query<{ table: string; name: string; type: string; def: string }>(
      `SELECT conrelid::regclass::text AS table, conname AS name, contype AS type, pg_get_constraintdef(oid) AS def
         FROM pg_constraint
        WHERE contype IN ('p', 'u', 'f') AND (conrelid = ANY ($1::regclass[]) OR confrelid = ANY ($1::regclass[]))
        ORDER BY 1, 2`,
      [tables],
    )
  ).rows;
  // Indexes that no primary key, unique or exclusion constraint owns.
  const indexes = (
    await c.query<{ name: string; def: string }>(
      `SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
         FROM pg_index i
        WHERE i.indrelid = ANY ($1::regclass[])
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))
        ORDER BY 1`,
      [tables],
    )
  ).rows;
  return { constraints, indexes };
}

/** Drops the tables' foreign keys (both ways), primary and unique keys and plain indexes; returns their definitions. */
async function dropKeysAndIndexes(c: pg.Client, tables: readonly string[]): Promise<SavedSchema> {
  const saved = await schemaOf(c, tables);
  const q = (s: string) => c.escapeIdentifier(s);
  for (const k of saved.constraints.filter((x) => x.type === 'f')) await c.query(`ALTER TABLE ${k.table} DROP CONSTRAINT ${q(k.name)}`);
  for (const k of saved.constraints.filter((x) => x.type !== 'f')) await c.query(`ALTER TABLE ${k.table} DROP CONSTRAINT ${q(k.name)}`);
  for (const i of saved.indexes) await c.query(`DROP INDEX ${i.name}`);
  return saved;
}

/** Puts them back from their own definitions (each checked over every row) and verifies the schema is as it was. */
async function restoreKeysAndIndexes(c: pg.Client, tables: readonly string[], saved: SavedSchema): Promise<void> {
  const q = (s: string) => c.escapeIdentifier(s);
  for (const k of saved.constraints.filter((x) => x.type !== 'f')) await c.query(`ALTER TABLE ${k.table} ADD CONSTRAINT ${q(k.name)} ${k.def}`);
  for (const i of saved.indexes) await c.query(i.def);
  for (const k of saved.constraints.filter((x) => x.type === 'f')) await c.query(`ALTER TABLE ${k.table} ADD CONSTRAINT ${q(k.name)} ${k.def}`);
  const now = await schemaOf(c, tables);
  if (JSON.stringify(now) !== JSON.stringify(saved)) {
    throw new Error(`schema after the bulk load differs from before: ${JSON.stringify({ before: saved, after: now })}`);
  }
}

/** The plaintext tables of PostGraphile and the floor: phigate.*'s shape with text instead of ciphertext. */
const PLAIN_TABLES = `
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
`;
const PLAIN_PATIENTS_INSERT = unnestInsert('bench_plain.patients', [['id', 'uuid'], ['clinic_id', 'text']], SEED_PHI.patients, (c) => c.plainType);
const PLAIN_ENCOUNTERS_INSERT = unnestInsert('bench_plain.encounters', [['id', 'uuid'], ['patient_id', 'uuid'], ['clinic_id', 'text']], SEED_PHI.encounters, (c) => c.plainType);
// What PostGraphile's patch type offers: every PHI column but the MRN, the plaintext copy's identifier.
const PLAIN_UPDATABLE = SEED_PHI.patients.map((c) => c.column).filter((c) => c !== 'mrn');

/**
 * Row security on bench_plain: the policies of schema/migrations/004_row_security.sql on the
 * plaintext tables (they read the same phigate.* settings through phigate.ctx_*), so PostGraphile
 * and the floor see what phigate's row security lets through.
 */
const PLAIN_ROW_SECURITY = `
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
      GRANT UPDATE (${PLAIN_UPDATABLE.join(', ')}) ON bench_plain.patients TO phigate_app;
      ANALYZE bench_plain.patients; ANALYZE bench_plain.encounters; ANALYZE bench_plain.care_team;
`;

export const newMasterKey = (): Buffer => randomBytes(32);
