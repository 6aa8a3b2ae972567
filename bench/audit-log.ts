/**
 * The Merkle log's cost (issue 13, item 1): `npx tsx bench/audit-log.ts [--seconds S] [--rounds R]`
 * against BENCH_DATABASE_URL (a superuser URL; default the local cluster on 127.0.0.1:5432).
 *
 * 1. Inserts: the audit writer (src/audit/writer.ts) committing requests of 10 events from 32
 *    concurrent callers on 2 connections, as the gateway does, into a database migrated up to 015
 *    (today's insert) and one migrated with 016 (the `tx` column and its (tx, id) index), rounds
 *    alternating; events committed per second.
 * 2. Sealing, one leaf per event against one leaf per record (migration 030): in a database with
 *    every migration, `--events` events written as v1 rows (one leaf each, canonical v1: the log
 *    before 030) and the same number as audit records of `--per-record` events (one leaf each,
 *    canonical v2), rounds alternating; `sealAll` 10,000 leaves per transaction; events sealed per
 *    second and the sealer's own CPU (it runs in the gateway process) per event.
 * 3. Sink: `deliver` to a file sink (fsync per batch of 10,000 leaves), for both layouts.
 * `--skip-inserts` leaves out part 1.
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

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    events: { type: 'string', default: '200000' },
    'per-record': { type: 'string', default: '8' },
    'skip-inserts': { type: 'boolean', default: false },
  },
});
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const EVENTS = Number(values.events);
const PER_RECORD = Number(values['per-record']);
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

/** Writes EVENTS events in `layout`, committed, in transactions of 10,000 events. */
async function writeEvents(name: string, layout: 'v1' | 'records'): Promise<void> {
  await admin(withDb(name), async (c) => {
    for (let done = 0; done < EVENTS; done += 10_000) {
      const n = Math.min(10_000, EVENTS - done);
      if (layout === 'v1') {
        await c.query(
          `INSERT INTO phigate.audit_events_v1 (request_id, actor, actor_kind, role, purpose, client_addr, action, type_name, field, patient_id, batch_id)
           SELECT 'req-' || (g / $2), 'dr-bench-' || (g % 40), 'user', 'physician', 'treatment', '10.0.0.1', 'read', 'Patient', 'f' || (g % $2),
                  gen_random_uuid(), gen_random_uuid() FROM generate_series(1, $1) g`,
          [n, PER_RECORD],
        );
      } else {
        await c.query(
          `INSERT INTO phigate.audit_records (request_id, actor, actor_kind, role, purpose, client_addr, patient_id, batch_id, actions, type_names, fields, record_ids, details)
           SELECT 'req-' || g, 'dr-bench-' || (g % 40), 'user', 'physician', 'treatment', '10.0.0.1', gen_random_uuid(), gen_random_uuid(),
                  a.actions, a.type_names, a.fields, a.record_ids, a.details
           FROM generate_series(1, $1::int / $2::int) g
           CROSS JOIN (SELECT array_agg('read'::text) AS actions, array_agg('Patient'::text) AS type_names, array_agg('f' || k) AS fields,
                              array_agg(NULL::uuid) AS record_ids, array_agg(NULL::text) AS details FROM generate_series(0, $2::int - 1) k) a`,
          [n, PER_RECORD],
        );
      }
    }
  });
}

interface SealRun {
  readonly leaves: number;
  readonly seconds: number;
  readonly cpuMicros: number;
  readonly sinkSeconds: number;
}

/** Seals and delivers everything written in `name` (in a fresh database each time). */
async function sealRun(name: string, layout: 'v1' | 'records'): Promise<SealRun> {
  await database(name, 999);
  try {
    await writeEvents(name, layout);
    const pool = createPool(appUrl(name), { max: 1 });
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const expected = layout === 'v1' ? EVENTS : Math.floor(EVENTS / PER_RECORD);
    let leaves = 0;
    while (leaves < expected) leaves += await sealAll(pool, 10_000);
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const dir = await mkdtemp(path.join(tmpdir(), 'phigate-bench-sink-'));
    const t1 = performance.now();
    let delivered = 0;
    while (delivered < leaves) delivered += (await deliver(pool, await fileSink(dir, 64 * 1024 * 1024), 10_000)) ?? 0;
    const sinkSeconds = (performance.now() - t1) / 1000;
    await rm(dir, { recursive: true, force: true });
    await pool.end();
    return { leaves, seconds, cpuMicros: cpu.user + cpu.system, sinkSeconds };
  } finally {
    await admin(ADMIN, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  }
}

const before = `phigate_bench_log_a_${process.pid}`;
const after = `phigate_bench_log_b_${process.pid}`;
const sealing = `phigate_bench_log_s_${process.pid}`;
try {
  if (!values['skip-inserts']) {
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
  }
  console.log(`sealing ${fmt(EVENTS)} events, ${ROUNDS} rounds alternating; records of ${PER_RECORD} events:`);
  for (let r = 0; r < ROUNDS; r++) {
    for (const layout of r % 2 === 0 ? (['v1', 'records'] as const) : (['records', 'v1'] as const)) {
      const run = await sealRun(sealing, layout);
      console.log(
        `  ${layout === 'v1' ? 'leaf per event (v1)   ' : 'leaf per record (v2)  '}: ${fmt(run.leaves)} leaves in ${run.seconds.toFixed(2)} s = ${fmt(EVENTS / run.seconds)} events/s; ` +
          `sealer CPU ${(run.cpuMicros / EVENTS).toFixed(2)} us/event (${(run.cpuMicros / run.leaves).toFixed(1)} us/leaf); file sink ${fmt(EVENTS / run.sinkSeconds)} events/s`,
      );
    }
  }
} finally {
  await admin(ADMIN, async (c) => {
    await c.query(`DROP DATABASE IF EXISTS ${before} WITH (FORCE)`);
    await c.query(`DROP DATABASE IF EXISTS ${after} WITH (FORCE)`);
    await c.query(`DROP DATABASE IF EXISTS ${sealing} WITH (FORCE)`);
  });
}
