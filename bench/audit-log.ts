/**
 * The Merkle log's cost (issue 13, item 1): `npx tsx bench/audit-log.ts [--seconds S] [--rounds R]`
 * against BENCH_DATABASE_URL (a superuser URL; default the local cluster on 127.0.0.1:5432).
 *
 * 1. Inserts: the audit writer (src/audit/writer.ts) committing requests of 10 events from 32
 *    concurrent callers on 2 connections, as the gateway does, into a database migrated up to 015
 *    (today's insert) and one migrated with 016 (the `tx` column and its (tx, id) index), rounds
 *    alternating; events committed per second.
 * 2. Sealing: `sealAll` over the events written, 10,000 per transaction; events sealed per second
 *    and the sealer's CPU per event.
 * 3. Sink: `deliver` to a file sink (fsync per batch of 10,000); events delivered per second.
 */
import { randomUUID } from 'node:crypto';
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import type { AuditEvent } from '../src/audit/event.ts';
import { sealAll } from '../src/audit/log/seal.ts';
import { deliver } from '../src/audit/sink/deliver.ts';
import { fileSink } from '../src/audit/sink/file.ts';
import { createAuditWriter } from '../src/audit/writer.ts';
import { createPool } from '../src/db/pool.ts';
import { ensureAppLogin, migrate, MIGRATIONS_DIR } from '../src/db/migrate.ts';
import { createLogger } from '../src/log.ts';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '10' }, rounds: { type: 'string', default: '3' } } });
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const ADMIN = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const EVENTS_PER_REQUEST = 10;
const CALLERS = 32;

const withDb = (name: string) => {
  const u = new URL(ADMIN);
  u.pathname = `/${name}`;
  return u.toString();
};
const appUrl = (name: string) => {
  const u = new URL(withDb(name));
  u.username = 'phigate_bench_gw';
  u.password = 'bench-gateway-pw';
  return u.toString();
};

async function admin<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function database(name: string, upTo: number): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'phigate-bench-mig-'));
  for (const f of await readdir(MIGRATIONS_DIR)) if (Number(f.slice(0, 3)) <= upTo) await cp(path.join(MIGRATIONS_DIR, f), path.join(dir, f));
  await admin(ADMIN, (c) => c.query(`CREATE DATABASE ${name}`));
  await migrate(withDb(name), { dir });
  await ensureAppLogin(withDb(name), appUrl(name));
  await rm(dir, { recursive: true });
}

const event = (i: number): AuditEvent => ({
  action: 'read', typeName: 'Patient', field: `f${i}`, patientId: randomUUID(), recordId: null, role: 'physician', purpose: 'treatment', breakGlass: false,
});

/** Events per second the writer commits for SECONDS. */
async function insertRate(name: string): Promise<number> {
  const pool = createPool(appUrl(name), { max: 2 });
  const writer = createAuditWriter({ pool, queueLimit: 10_000, logger: createLogger('silent') });
  const until = performance.now() + SECONDS * 1000;
  let events = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: CALLERS }, async (_, k) => {
    while (performance.now() < until) {
      await writer.write({ request: { requestId: randomUUID(), actor: `dr-${k}`, actorKind: 'user', clientAddr: '10.0.0.1' }, events: Array.from({ length: EVENTS_PER_REQUEST }, (_, i) => event(i)) });
      events += EVENTS_PER_REQUEST;
    }
  }));
  const rate = events / ((performance.now() - started) / 1000);
  await writer.close();
  await pool.end();
  return rate;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

const before = `phigate_bench_log_a_${process.pid}`;
const after = `phigate_bench_log_b_${process.pid}`;
const sinkDir = await mkdtemp(path.join(tmpdir(), 'phigate-bench-sink-'));
try {
  await database(before, 15);
  await database(after, 16);
  const rates: Record<string, number[]> = { [before]: [], [after]: [] };
  for (let r = 0; r < ROUNDS; r++) {
    for (const name of r % 2 === 0 ? [before, after] : [after, before]) rates[name]!.push(await insertRate(name));
  }
  const a = median(rates[before]!);
  const b = median(rates[after]!);
  console.log(`inserts, events/s (median of ${ROUNDS} x ${SECONDS}s, ${CALLERS} callers x ${EVENTS_PER_REQUEST} events, 2 connections):`);
  console.log(`  up to 015 (today): ${fmt(a)}  [${rates[before]!.map(fmt).join(', ')}]`);
  console.log(`  with 016 (tx + index): ${fmt(b)}  [${rates[after]!.map(fmt).join(', ')}]  ratio ${(b / a).toFixed(3)}`);

  const total = await admin(withDb(after), async (c) => Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM phigate.audit_events')).rows[0]!.n));
  const pool = createPool(appUrl(after), { max: 1 });
  const cpu0 = process.cpuUsage();
  let t0 = performance.now();
  let sealed = 0;
  while (sealed < total) sealed += await sealAll(pool, 10_000);
  const sealSeconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  console.log(`sealing: ${fmt(sealed)} events in ${sealSeconds.toFixed(2)} s = ${fmt(sealed / sealSeconds)} events/s; sealer CPU ${(((cpu.user + cpu.system) / sealed)).toFixed(1)} us/event`);
  t0 = performance.now();
  let delivered = 0;
  while (delivered < sealed) delivered += (await deliver(pool, fileSink(sinkDir, 64 * 1024 * 1024), 10_000)) ?? 0;
  const sinkSeconds = (performance.now() - t0) / 1000;
  console.log(`file sink: ${fmt(delivered)} events in ${sinkSeconds.toFixed(2)} s = ${fmt(delivered / sinkSeconds)} events/s`);
  await pool.end();
} finally {
  await admin(ADMIN, async (c) => {
    await c.query(`DROP DATABASE IF EXISTS ${before} WITH (FORCE)`);
    await c.query(`DROP DATABASE IF EXISTS ${after} WITH (FORCE)`);
  });
  await rm(sinkDir, { recursive: true, force: true });
}
