/**
 * PostgreSQL's side of `patientBySsn` on databases of different sizes, alternated (bench/README.md,
 * "patientBySsn on 1,000,000 patients on PostgreSQL 15"): on databases that `bench/run.ts
 * --keep-database` left on BENCH_DATABASE_URL's cluster, a registrar's search as the gateway sends
 * it (src/db/patients.ts searchByBlindIndex: the request transaction, BEGIN READ ONLY + the context
 * with the PHI minute's preamble, the blind-index lookup under row security, COMMIT; beside it the
 * search count on a connection of its own, src/db/search-quota.ts), one at a time. Per lookup: the
 * CPU of the request's backend and of the count's backend from /proc (what a loaded machine
 * disturbs least), and the wall time. The audit writer is not here: its rows hold no reference to
 * the patient table, so its cost does not depend on the patient count.
 *
 *   BENCH_DATABASE_URL=... npx tsx bench/ssn-txn.ts --db phigate_bench_1,phigate_bench_2 --lookups 2000 --rounds 4 [--explain]
 *
 * `--explain` also prints EXPLAIN (ANALYZE, BUFFERS) of the lookup as the app role, in a request
 * transaction with its context: the generic plan the gateway runs, after the rounds (caches warm).
 */
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { searchByBlindIndex } from '../src/db/patients.ts';
import { usageLeftStatement } from '../src/db/phi-usage.ts';
import { createPool, type Pool } from '../src/db/pool.ts';
import { createSearchQuota, type SearchQuota } from '../src/db/search-quota.ts';
import { openRequestTransaction, type Preamble, type RequestTransaction, type SecurityContext } from '../src/db/transaction.ts';
import { procStat } from './cpu.ts';
import { keptBenchDatabase } from './setup-db.ts';

const { values: args } = parseArgs({
  options: {
    db: { type: 'string' },
    lookups: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '4' },
    explain: { type: 'boolean', default: false },
  },
});
const count = (name: 'lookups' | 'rounds'): number => {
  const n = Number(args[name]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a whole number of at least 1`);
  return n;
};
if (!args.db) throw new Error('--db NAME[,NAME...]: databases kept by bench/run.ts --keep-database');
const LOOKUPS = count('lookups');
const ROUNDS = count('rounds');
const REQUEST_APP = 'phigate';
const COUNT_APP = 'phigate-search-quota';
const SAMPLE = 5000;

interface Subject {
  readonly name: string;
  readonly patients: number;
  readonly sizes: Record<string, string>;
  readonly clinic: string;
  readonly indexes: readonly Buffer[];
  readonly admin: pg.Client;
  readonly requests: Pool;
  readonly counts: Pool;
  readonly quota: SearchQuota;
}

async function open(name: string): Promise<Subject> {
  const { adminUrl, appUrl } = keptBenchDatabase(name);
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  const patients = Number((await admin.query<{ n: string }>('SELECT count(*) AS n FROM phigate.patients')).rows[0]!.n);
  const sizes = Object.fromEntries(
    (
      await admin.query<{ rel: string; size: string }>(
        `SELECT c.relname AS rel, pg_size_pretty(pg_relation_size(c.oid)) AS size FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'phigate' AND c.relname IN ('patients', 'patients_ssn_bidx', 'patients_clinic_ssn', 'patients_pkey', 'patient_keys', 'care_team')`,
      )
    ).rows.map((r) => [r.rel, r.size]),
  );
  // The clinic with most patients, and SSN indexes spread over the whole table (the superuser reads past row security).
  const clinic = (await admin.query<{ clinic_id: string }>('SELECT clinic_id FROM phigate.patients GROUP BY 1 ORDER BY count(*) DESC LIMIT 1')).rows[0]!.clinic_id;
  const percent = Math.min(100, (100 * SAMPLE * 4) / patients);
  const indexes = (
    await admin.query<{ ssn_bidx: Buffer }>(`SELECT ssn_bidx FROM phigate.patients TABLESAMPLE BERNOULLI (${percent}) WHERE clinic_id = $1 AND ssn_bidx IS NOT NULL LIMIT ${SAMPLE}`, [clinic])
  ).rows.map((r) => r.ssn_bidx);
  if (indexes.length < 100) throw new Error(`${name}: only ${indexes.length} SSN indexes sampled in clinic ${clinic}`);
  const requests = createPool(appUrl, { max: 1, applicationName: REQUEST_APP });
  const counts = createPool(appUrl, { max: 1, applicationName: COUNT_APP });
  return { name, patients, sizes, clinic, indexes, admin, requests, counts, quota: createSearchQuota(counts) };
}

const context = (s: Subject): SecurityContext => ({
  actor: 'bench-ssn-registrar',
  actorKind: 'user',
  roles: ['registrar'],
  clinics: [s.clinic],
  requestId: randomUUID(),
  purpose: 'operations',
});

/** One search as the gateway makes it; `wrap` lets --explain see the lookup's statement. */
async function search(s: Subject, index: Buffer, wrap?: (tx: RequestTransaction) => RequestTransaction): Promise<number> {
  const ctx = context(s);
  let left: number | undefined;
  const preamble: Preamble = {
    ...usageLeftStatement({ kind: 'user', subject: ctx.actor }, { rows: 1_000_000_000, values: 1_000_000_000 }),
    onRows: (rows) => void (left = (rows[0] as { rows_left: number }).rows_left),
  };
  const tx = openRequestTransaction(s.requests, ctx, {}, preamble);
  tx.readOnly();
  try {
    const result = await searchByBlindIndex(wrap ? wrap(tx) : tx, 'ssn_bidx', [index], s.quota, { kind: 'user', subject: ctx.actor }, 1_000_000_000);
    await tx.commit();
    if (!result.allowed || left === undefined) throw new Error(`${s.name}: the search was refused`);
    return result.rows.length;
  } catch (err) {
    await tx.rollback().catch(() => undefined);
    throw err;
  }
}

/** The database's shared-buffer hits and reads (pg_stat_database: this database's backends only, not the cluster's). */
async function blocks(s: Subject): Promise<{ hit: number; read: number }> {
  await s.admin.query('SELECT pg_stat_clear_snapshot()');
  const r = (await s.admin.query<{ hit: string; read: string }>('SELECT blks_hit AS hit, blks_read AS read FROM pg_stat_database WHERE datname = current_database()')).rows[0]!;
  return { hit: Number(r.hit), read: Number(r.read) };
}

// A backend reports its counts to pg_stat_database at most once a second, when idle.
const STATS_FLUSH_MS = 1500;

async function backendCpu(s: Subject): Promise<Record<string, number>> {
  const { rows } = await s.admin.query<{ pid: number; app: string }>(
    'SELECT pid, application_name AS app FROM pg_stat_activity WHERE datname = current_database() AND application_name = ANY ($1)',
    [[REQUEST_APP, COUNT_APP]],
  );
  const out: Record<string, number> = { [REQUEST_APP]: 0, [COUNT_APP]: 0 };
  for (const r of rows) out[r.app]! += procStat(r.pid)?.cpuMs ?? 0;
  return out;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;
const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;

async function measure(s: Subject, round: number): Promise<Record<string, unknown>> {
  // Warm: both connections made and their statements prepared before the counting starts.
  for (let i = 0; i < 20; i++) await search(s, s.indexes[i % s.indexes.length]!);
  await new Promise((resolve) => setTimeout(resolve, STATS_FLUSH_MS));
  const blocksBefore = await blocks(s);
  const before = await backendCpu(s);
  const load = os.loadavg()[0]!;
  const wall: number[] = [];
  let found = 0;
  for (let i = 0; i < LOOKUPS; i++) {
    const t = performance.now();
    found += await search(s, s.indexes[Math.floor(Math.random() * s.indexes.length)]!);
    wall.push(performance.now() - t);
  }
  const after = await backendCpu(s);
  await new Promise((resolve) => setTimeout(resolve, STATS_FLUSH_MS));
  const blocksAfter = await blocks(s);
  if (found !== LOOKUPS) throw new Error(`${s.name}: ${found} patients found in ${LOOKUPS} searches`);
  return {
    db: s.name,
    patients: s.patients,
    round,
    load: Math.round(load * 10) / 10,
    requestTxnCpuMs: round3((after[REQUEST_APP]! - before[REQUEST_APP]!) / LOOKUPS),
    searchCountCpuMs: round3((after[COUNT_APP]! - before[COUNT_APP]!) / LOOKUPS),
    wallP50Ms: round3(quantile(wall, 0.5)),
    wallP99Ms: round3(quantile(wall, 0.99)),
    // Both backends and the writes of take_search; a read is a block from outside shared buffers (the OS's cache or the disk).
    blocksHitPerLookup: round3((blocksAfter.hit - blocksBefore.hit) / LOOKUPS),
    blocksReadPerLookup: round3((blocksAfter.read - blocksBefore.read) / LOOKUPS),
  };
}

async function explain(s: Subject): Promise<string> {
  let plan = '';
  await search(s, s.indexes[0]!, (tx) => ({
    ...tx,
    query: async (text, values) => {
      const r = await tx.query(`EXPLAIN (ANALYZE, BUFFERS) ${text}`, values);
      plan = r.rows.map((row) => (row as Record<string, string>)['QUERY PLAN']).join('\n');
      return { ...r, rows: [] };
    },
  }));
  return plan;
}

const subjects: Subject[] = [];
try {
  for (const name of args.db.split(',')) subjects.push(await open(name.trim()));
  for (const s of subjects) process.stdout.write(`${JSON.stringify({ db: s.name, patients: s.patients, clinic: s.clinic, sampled: s.indexes.length, sizes: s.sizes })}\n`);
  for (let round = 0; round < ROUNDS; round++) {
    // Rotated, so neither database always runs first in a round.
    for (let i = 0; i < subjects.length; i++) process.stdout.write(`${JSON.stringify(await measure(subjects[(i + round) % subjects.length]!, round))}\n`);
  }
  if (args.explain) for (const s of subjects) process.stdout.write(`\n${s.name} (${s.patients} patients):\n${await explain(s)}\n`);
} finally {
  for (const s of subjects) {
    await s.requests.end();
    await s.counts.end();
    await s.admin.end();
  }
}
