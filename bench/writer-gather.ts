/**
 * The audit writer's gathering (issue 10), without the gateway: `npx tsx bench/writer-gather.ts
 * --db NAME [--migrate] [--clients 1,8,32] [--blocks 4] [--seconds 5] [--percent 50] [--max-ms 5]`
 * against BENCH_DATABASE_URL (a superuser URL; default the local cluster on 127.0.0.1:5432; see
 * bench/scratch-db.ts for --db and --migrate).
 *
 * C clients in a closed loop, as autocannon's connections: each announces a read (expect), runs a
 * read of its own on a request pool of 10 connections (one indexed SELECT, standing in for the
 * read's transaction), then writes a read by id's entry (9 events, charged to one principal, so
 * one shard) and waits for its commit. Two writers on one connection each, gathering off and on,
 * measured in alternating blocks of S seconds at each C (off first in odd blocks, on first in even
 * ones). Prints per block: reads/s, the writer backend's CPU per read (utime + stime of
 * /proc/PID/stat, so PostgreSQL must run on this machine), reads per batch, the share of batches
 * that waited and their mean wait, the loop's p50/p99 (announce to commit answered) and the event
 * loop's median delay (a timer's lateness).
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type { AuditEvent } from '../src/audit/event.ts';
import { createAuditWriter, type AuditEntry, type AuditWriter } from '../src/audit/writer.ts';
import { createPool, type Pool } from '../src/db/pool.ts';
import { createLogger } from '../src/log.ts';
import { PHI_FIELDS } from '../src/policy/phi-fields.ts';
import { procStat } from './cpu.ts';
import { scratchDatabase } from './scratch-db.ts';

const { values } = parseArgs({
  options: {
    db: { type: 'string' },
    migrate: { type: 'boolean', default: false },
    clients: { type: 'string', default: '1,8,32' },
    blocks: { type: 'string', default: '4' },
    seconds: { type: 'string', default: '5' },
    percent: { type: 'string', default: '50' },
    'max-ms': { type: 'string', default: '5' },
  },
});
const { app: APP } = await scratchDatabase(values.db, values.migrate);
const BLOCKS = Number(values.blocks);
const SECONDS = Number(values.seconds);
const ACTOR = 'physician-1';
const cap = { rows: 1_000_000_000, values: 1_000_000_000 };

function readById(): AuditEntry {
  const patientId = randomUUID();
  const events: AuditEvent[] = [...PHI_FIELDS.Patient, 'id'].map((field) => ({
    action: field === 'ssn' ? 'masked' : 'read',
    typeName: 'Patient',
    field,
    patientId,
    recordId: null,
    role: 'physician',
    purpose: 'treatment',
    breakGlass: false,
  }));
  return {
    request: { requestId: randomUUID(), actor: ACTOR, actorKind: 'user', clientAddr: '10.0.0.1' },
    events,
    charge: { owner: { kind: 'user', subject: ACTOR }, rows: 1, values: events.length, cap },
  };
}

interface Side {
  readonly label: string;
  readonly writer: AuditWriter;
  readonly pool: Pool;
  pid: number;
}

const logger = createLogger('silent');
async function side(label: string, gather: { percent: number; maxMs: number }): Promise<Side> {
  const pool = createPool(APP, { max: 1, applicationName: `phigate-bench-gather-${label}-${process.pid}` });
  const writer = createAuditWriter({ pool, queueLimit: 10_000, logger, gather });
  for (let i = 0; i < 20; i++) await writer.write(readById());
  const pid = (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  return { label, writer, pool, pid };
}

const requests = createPool(APP, { max: 10, applicationName: `phigate-bench-gather-requests-${process.pid}` });
const sides = [await side('off', { percent: 0, maxMs: 1 }), await side('on', { percent: Number(values.percent), maxMs: Number(values['max-ms']) })];

const cpuMs = (pid: number): number => {
  const stat = procStat(pid);
  if (stat === null) throw new Error('the writer backend has gone');
  return stat.cpuMs;
};
const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;

async function block(s: Side, clients: number) {
  const until = performance.now() + SECONDS * 1000;
  const latencies: number[] = [];
  const b0 = s.writer.stats.batches;
  const g0 = s.writer.stats.gathers;
  const w0 = s.writer.stats.gatheredMs;
  const cpu0 = cpuMs(s.pid);
  const lag = monitorEventLoopDelay({ resolution: 1 });
  lag.enable();
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < until) {
        const t = performance.now();
        const entry = readById();
        const coming = s.writer.expect(entry.request);
        try {
          await requests.query('SELECT 1 FROM phigate.audit_batches WHERE id = $1', [entry.request.requestId]);
        } catch (err) {
          coming.end();
          throw err;
        }
        await s.writer.write(entry, coming);
        latencies.push(performance.now() - t);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  lag.disable();
  const reads = latencies.length;
  const batches = s.writer.stats.batches - b0;
  latencies.sort((a, b) => a - b);
  return {
    side: s.label,
    clients,
    readsPerSecond: Math.round(reads / seconds),
    writerMsPerRead: +((cpuMs(s.pid) - cpu0) / reads).toFixed(3),
    readsPerBatch: +(reads / batches).toFixed(2),
    waited: +((s.writer.stats.gathers - g0) / batches).toFixed(2),
    waitMsPerBatch: +((s.writer.stats.gatheredMs - w0) / batches).toFixed(2),
    p50Ms: +quantile(latencies, 0.5).toFixed(2),
    p99Ms: +quantile(latencies, 0.99).toFixed(2),
    loopDelayP50Ms: +(lag.percentile(50) / 1e6).toFixed(1),
    load: readFileSync('/proc/loadavg', 'utf8').split(' ')[0],
  };
}

for (const clients of values.clients.split(',').map(Number)) {
  for (let b = 0; b < BLOCKS; b++) {
    for (const s of b % 2 === 0 ? sides : [...sides].reverse()) console.log(JSON.stringify(await block(s, clients)));
  }
}
for (const s of sides) {
  await s.writer.close();
  await s.pool.end();
}
await requests.end();
