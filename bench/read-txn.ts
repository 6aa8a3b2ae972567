/**
 * PostgreSQL's CPU for a read's own transaction, without the gateway around it (bench/README.md,
 * "A read's own transaction in PostgreSQL"): the request transaction of src/db/transaction.ts
 * reading one care-team patient by id as `patient(id)` does (BEGIN READ ONLY, the context with the
 * PHI minute's preamble, the lookup, COMMIT), in a loop, and the CPU its backends spent per read
 * from /proc. The gateway's own work (HTTP, GraphQL, decryption, audit) is not here, so a change to
 * the transaction's protocol or SQL shows alone, on a database seeded once.
 *
 *   npx tsx bench/read-txn.ts serve --patients 5000 --state /tmp/x.json   # seeds, then waits (Ctrl-C ends it)
 *   npx tsx bench/read-txn.ts run --state /tmp/x.json --duration 10 --concurrency 16
 *   npx tsx bench/read-txn.ts run --state /tmp/x.json --read page   # `patients(first: 100)` with encounters instead
 *   npx tsx bench/read-txn.ts run --state /tmp/x.json --read page --role registrar   # the bench's page: a registrar of the clinic, encounters' `kind` only
 *   ... --no-commit-ahead   # the read's COMMIT in a round trip of its own, after its statement's (by id or page)
 */
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { ENCOUNTER_PHI_COLUMNS, patientPageWithEncounters, patientsByIds } from '../src/db/patients.ts';
import { usageLeftStatement } from '../src/db/phi-usage.ts';
import { createPool } from '../src/db/pool.ts';
import { openRequestTransaction, type Preamble, type SecurityContext } from '../src/db/transaction.ts';
import { contextSwitches, procStat } from './cpu.ts';
import { newMasterKey, openBenchDatabase, seedBenchDatabase } from './setup-db.ts';

interface State {
  readonly adminUrl: string;
  readonly appUrl: string;
  readonly physicians: readonly { sub: string; clinic: string; ids: readonly string[] }[];
}

const APPLICATION = 'phigate';
const [mode = '', ...rest] = process.argv.slice(2);
const { values: args } = parseArgs({
  args: rest,
  options: {
    patients: { type: 'string', default: '5000' },
    state: { type: 'string', default: '/tmp/phigate-read-txn.json' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '16' },
    'pool-size': { type: 'string', default: '4' },
    'prepared-statements': { type: 'boolean', default: true },
    read: { type: 'string', default: 'by-id' },
    role: { type: 'string', default: 'physician' },
    // The read sends its COMMIT behind its statement, as the gateway does when the page, or the
    // patient without its encounters, is its operation's only field.
    'commit-ahead': { type: 'boolean', default: true },
  },
  allowNegative: true,
});
const num = (name: keyof typeof args): number => {
  const n = Number(args[name]);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number`);
  return n;
};

async function serve(): Promise<void> {
  const db = await openBenchDatabase((s) => process.stderr.write(`${s}\n`));
  const seeded = await seedBenchDatabase(db, { patients: num('patients'), seed: 42, masterKey: newMasterKey() });
  const physicians = [...seeded.actors.physicians].map(([sub, p]) => ({ sub, clinic: p.clinic, ids: p.ids.slice(0, 200) }));
  const state: State = { adminUrl: db.adminUrl, appUrl: db.appUrl, physicians };
  writeFileSync(args.state, JSON.stringify(state));
  process.stderr.write(`seeded ${seeded.patients} patients; state in ${args.state}; Ctrl-C stops the database\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await db.close();
}

interface BackendUse {
  readonly cpuMs: number;
  readonly systemMs: number;
  /** Times it waited to be woken (voluntary context switches): a round trip's wait is one. */
  readonly waits: number;
}

/** What each backend of the request pool has used, by pid. */
async function backendCpu(admin: pg.Client): Promise<Map<number, BackendUse>> {
  const { rows } = await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1', [APPLICATION]);
  const out = new Map<number, BackendUse>();
  for (const { pid } of rows) {
    const s = procStat(pid);
    const switches = contextSwitches(pid);
    if (s && switches) out.set(pid, { cpuMs: s.cpuMs, systemMs: s.systemMs, waits: switches.voluntary });
  }
  return out;
}

const PAGE_SIZE = 100;

async function run(): Promise<void> {
  if (args.read !== 'by-id' && args.read !== 'page') throw new Error('--read must be by-id or page');
  const page = args.read === 'page';
  if (args.role !== 'physician' && args.role !== 'registrar') throw new Error('--role must be physician or registrar');
  const registrar = args.role === 'registrar';
  const state = JSON.parse(readFileSync(args.state, 'utf8')) as State;
  // Generous: under valgrind a new backend takes seconds to start.
  const pool = createPool(state.appUrl, { max: num('pool-size'), applicationName: APPLICATION, connectionTimeoutMs: 60_000 });
  const admin = new pg.Client({ connectionString: state.adminUrl });
  await admin.connect();
  const transaction = { preparedStatements: args['prepared-statements'] };
  const readOne = async (): Promise<void> => {
    const doctor = state.physicians[Math.floor(Math.random() * state.physicians.length)]!;
    const id = doctor.ids[Math.floor(Math.random() * doctor.ids.length)]!;
    const actor = registrar ? `reg-${doctor.clinic}` : doctor.sub;
    const ctx: SecurityContext = { actor, actorKind: 'user', roles: [args.role!], clinics: [doctor.clinic], requestId: randomUUID(), purpose: 'treatment' };
    let left: number | undefined;
    const preamble: Preamble = {
      ...usageLeftStatement({ kind: 'user', subject: actor }, { rows: 100_000, values: 1_000_000 }),
      onRows: (rows) => void (left = (rows[0] as { rows_left: number }).rows_left),
    };
    const tx = openRequestTransaction(pool, ctx, transaction, preamble);
    tx.readOnly();
    // A page as `patients(first: 100) { encounters }` reads it: one row past the page, each row
    // with its encounters, in one statement (src/graphql/types/query.ts). A registrar's page reads
    // the one encounter column it may be shown (src/graphql/phi-field.ts, encounterColumnsFor).
    let rows;
    if (page) {
      if (args['commit-ahead']) tx.endWithNext();
      // A registrar's page walks its clinic, as the gateway has it do (src/graphql/types/query.ts).
      const read = await patientPageWithEncounters(tx, null, PAGE_SIZE + 1, registrar ? ['kind'] : ENCOUNTER_PHI_COLUMNS, { first: 10, after: null, byDate: true }, registrar ? 'clinics' : 'reach');
      for (let i = 0; i < PAGE_SIZE; i++) read.encountersOf(i);
      rows = read.rows;
    } else {
      if (args['commit-ahead']) tx.endWithNext();
      rows = await patientsByIds(tx, [id]);
    }
    await tx.commit();
    if (rows.length !== (page ? PAGE_SIZE + 1 : 1) || left === undefined) throw new Error(`read ${page ? 'a page' : id} as ${actor}: ${rows.length} rows, preamble ${left}`);
  };
  const loop = async (until: number, count: { n: number }): Promise<void> => {
    while (performance.now() < until) {
      await readOne();
      count.n++;
    }
  };
  const phase = async (seconds: number): Promise<number> => {
    const count = { n: 0 };
    const until = performance.now() + seconds * 1000;
    await Promise.all(Array.from({ length: num('concurrency') }, () => loop(until, count)));
    return count.n;
  };
  const warm = await phase(num('warmup'));
  const before = await backendCpu(admin);
  const ownBefore = process.cpuUsage();
  const t0 = performance.now();
  const reads = await phase(num('duration'));
  const seconds = (performance.now() - t0) / 1000;
  const own = process.cpuUsage(ownBefore);
  const after = await backendCpu(admin);
  let pgMs = 0;
  let systemMs = 0;
  let waits = 0;
  for (const [pid, use] of after) {
    const was = before.get(pid);
    pgMs += use.cpuMs - (was?.cpuMs ?? 0);
    systemMs += use.systemMs - (was?.systemMs ?? 0);
    waits += use.waits - (was?.waits ?? 0);
  }
  const result = {
    reads,
    // Warm-up included: a backend's whole life, for instruction counts of one under valgrind.
    allReads: warm + reads,
    pids: [...after.keys()],
    readsPerS: Math.round(reads / seconds),
    backends: after.size,
    pgMsPerRead: Math.round((pgMs / reads) * 1000) / 1000,
    pgSystemMsPerRead: Math.round((systemMs / reads) * 1000) / 1000,
    pgWaitsPerRead: Math.round((waits / reads) * 100) / 100,
    clientMsPerRead: Math.round(((own.user + own.system) / 1000 / reads) * 1000) / 1000,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  await admin.end();
  await pool.end();
}

if (mode === 'serve') await serve();
else if (mode === 'run') await run();
else throw new Error('usage: read-txn.ts serve|run [options]');
