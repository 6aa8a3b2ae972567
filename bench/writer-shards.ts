/**
 * The audit writer's row-lock waits (issue 10): `npx tsx bench/writer-shards.ts [--seconds S]
 * [--rounds R] [--writer path/to/src/audit/writer.ts]` against BENCH_DATABASE_URL (a superuser
 * URL; default the local cluster on 127.0.0.1:5432), in a fresh database migrated to the tree's head.
 *
 * 32 callers, as the bench's connections, each writing a read's 9 events with its PHI charge, for
 * 9 principals, through one writer of 2 connections; a monitor samples pg_stat_activity every
 * 20 ms: how many of the writer's backends wait on a lock (a principal's phi_usage row held by
 * the other connection's batch until its durable COMMIT) and how many are active. `--writer`
 * measures another tree's writer (e.g. a `git archive` of an older commit) on the same database.
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import type { AuditEvent } from '../src/audit/event.ts';
import type { createAuditWriter as CreateAuditWriter } from '../src/audit/writer.ts';
import { createPool } from '../src/db/pool.ts';
import { ensureAppLogin, migrate } from '../src/db/migrate.ts';
import { createLogger } from '../src/log.ts';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '8' }, rounds: { type: 'string', default: '2' }, writer: { type: 'string' } } });
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const ADMIN = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const CALLERS = 32;
const PRINCIPALS = 9;
const NAME = `phigate_bench_shards_${process.pid}`;

const url = (user?: { name: string; password: string }) => {
  const u = new URL(ADMIN);
  u.pathname = `/${NAME}`;
  if (user) [u.username, u.password] = [user.name, user.password];
  return u.toString();
};
const APP = url({ name: 'phigate_bench_gw', password: 'bench-gateway-pw' });

async function admin<T>(connectionString: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

const event = (i: number): AuditEvent => ({
  action: 'read', typeName: 'Patient', field: `f${i}`, patientId: randomUUID(), recordId: null, role: 'registrar', purpose: 'healthcare_operations', breakGlass: false,
});

async function round(createAuditWriter: typeof CreateAuditWriter, k: number) {
  const applicationName = `phigate-bench-shards-${k}`;
  const pool = createPool(APP, { max: 2, applicationName });
  const writer = createAuditWriter({ pool, queueLimit: 10_000, logger: createLogger('silent') });
  const cap = { rows: 1_000_000_000, values: 1_000_000_000 };
  const principals = Array.from({ length: PRINCIPALS }, (_, i) => `reg-${k}-${i}`);
  const until = performance.now() + SECONDS * 1000;
  let requests = 0;
  const started = performance.now();
  const callers = Array.from({ length: CALLERS }, async (_, c) => {
    while (performance.now() < until) {
      const actor = principals[(c + requests) % PRINCIPALS]!;
      await writer.write({
        request: { requestId: randomUUID(), actor, actorKind: 'user', clientAddr: '10.0.0.1' },
        events: Array.from({ length: 9 }, (_, i) => event(i)),
        charge: { owner: { kind: 'user', subject: actor }, rows: 1, values: 9, cap },
      });
      requests++;
    }
  });
  const samples = await admin(url(), async (c) => {
    const seen = { n: 0, waiting: 0, active: 0 };
    while (performance.now() < until) {
      const { rows } = await c.query<{ waiting: number; active: number }>(
        `SELECT count(*) FILTER (WHERE wait_event_type = 'Lock')::int AS waiting, count(*) FILTER (WHERE state = 'active')::int AS active FROM pg_stat_activity WHERE application_name = $1`,
        [applicationName],
      );
      seen.n++;
      seen.waiting += rows[0]!.waiting;
      seen.active += rows[0]!.active;
      await new Promise((r) => setTimeout(r, 20));
    }
    return seen;
  });
  await Promise.all(callers);
  const s = (performance.now() - started) / 1000;
  await writer.close();
  await pool.end();
  return {
    requestsPerS: Math.round(requests / s),
    requestsPerBatch: +(requests / writer.stats.batches).toFixed(1),
    backendsWaitingOnALock: +(samples.waiting / samples.n).toFixed(2),
    backendsActive: +(samples.active / samples.n).toFixed(2),
  };
}

const writerPath = path.resolve(values.writer ?? new URL('../src/audit/writer.ts', import.meta.url).pathname);
const { createAuditWriter } = (await import(writerPath)) as { createAuditWriter: typeof CreateAuditWriter };
await admin(ADMIN, (c) => c.query(`CREATE DATABASE ${NAME}`));
try {
  await migrate(url());
  await ensureAppLogin(url(), APP);
  for (let k = 1; k <= ROUNDS; k++) console.log(JSON.stringify({ writer: writerPath, round: k, ...(await round(createAuditWriter, k)) }));
} finally {
  await admin(ADMIN, (c) => c.query(`DROP DATABASE ${NAME} WITH (FORCE)`));
}
