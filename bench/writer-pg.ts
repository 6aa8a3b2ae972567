/**
 * PostgreSQL's CPU for the audit writer's batches (issue 10): `npx tsx bench/writer-pg.ts --db NAME
 * [--kind page|by-id|by-ssn] [--rounds N] [--writer path/to/writer.ts] [--migrate]` against
 * BENCH_DATABASE_URL (a superuser URL; default the local cluster on 127.0.0.1:5432).
 *
 * `--migrate` creates database NAME and migrates it to this tree's head (once; later runs reuse it,
 * so a base and a head database can be measured alternately). One writer of one connection writes
 * N rounds: `page`, one page (100 patients of 12 events, bench/writer-batch.ts) with its PHI charge,
 * one batch per round; `by-id`, `--reads` (4) reads of 9 events of as many principals with charges,
 * sent at once (a batch of 1, then one of the rest); `by-ssn`, one charged lookup (its `search` event and four fields), one batch per
 * round. Prints the writer backend's CPU (utime + stime of /proc/PID/stat, so PostgreSQL must
 * run on this machine) per round and per batch, and this process's (process.cpuUsage: building the
 * statements, the protocol, and the rounds' own events) per round, and the backend's pid (to find
 * its file when PostgreSQL runs under `valgrind --tool=callgrind`, which writes one per process).
 * `--writer` measures another tree's writer, e.g. `git archive <commit> src | tar -x -C bench/.base`
 * (inside the checkout, so that its imports of packages resolve).
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { AuditEvent } from '../src/audit/event.ts';
import type { AuditEntry, createAuditWriter as CreateAuditWriter } from '../src/audit/writer.ts';
import { createPool } from '../src/db/pool.ts';
import { createLogger } from '../src/log.ts';
import { PHI_FIELDS } from '../src/policy/phi-fields.ts';
import { procStat } from './cpu.ts';
import { scratchDatabase } from './scratch-db.ts';

const { values } = parseArgs({
  options: {
    db: { type: 'string' },
    kind: { type: 'string', default: 'page' },
    rounds: { type: 'string', default: '300' },
    reads: { type: 'string', default: '4' },
    writer: { type: 'string' },
    migrate: { type: 'boolean', default: false },
  },
});
const ROUNDS = Number(values.rounds);
const READS = Number(values.reads);
const { app: APP } = await scratchDatabase(values.db, values.migrate);

const FIELDS: readonly string[] = PHI_FIELDS.Patient;
const read = (typeName: string, field: string, patientId: string, recordId: string | null): AuditEvent => ({
  action: field === 'ssn' ? 'masked' : 'read', typeName, field, patientId, recordId, role: 'registrar', purpose: 'treatment', breakGlass: false,
});
const cap = { rows: 1_000_000_000, values: 1_000_000_000 };
function entry(actor: string, patients: number, encounters: number, extra: number): AuditEntry {
  const events: AuditEvent[] = [];
  const later: AuditEvent[] = [];
  for (let p = 0; p < patients; p++) {
    const patientId = randomUUID();
    for (const f of FIELDS) events.push(read('Patient', f, patientId, null));
    for (let i = 0; i < extra; i++) events.push(read('Patient', 'id', patientId, null));
    for (let k = 0; k < encounters; k++) {
      const encounterId = randomUUID();
      for (const f of ['occurredAt', 'kind']) later.push(read('Encounter', f, patientId, encounterId));
    }
  }
  return {
    request: { requestId: randomUUID(), actor, actorKind: 'user', clientAddr: '10.0.0.1' },
    events: [...events, ...later],
    charge: { owner: { kind: 'user', subject: actor }, rows: patients, values: events.length + later.length, cap },
  };
}

/** One patientBySsn hit as the bench's query makes it: the search's own event and four of the patient's fields. */
function lookup(actor: string): AuditEntry {
  const patientId = randomUUID();
  const events: AuditEvent[] = [
    { action: 'search', typeName: 'Query', field: 'patientBySsn', patientId, recordId: null, role: 'registrar', purpose: 'treatment', breakGlass: false, detail: 'ssn:hit' },
    ...FIELDS.slice(0, 4).map((f) => read('Patient', f, patientId, null)),
  ];
  return {
    request: { requestId: randomUUID(), actor, actorKind: 'user', clientAddr: '10.0.0.1' },
    events,
    charge: { owner: { kind: 'user', subject: actor }, rows: 1, values: events.length, cap },
  };
}

const cpuMs = (pid: number): number => {
  const stat = procStat(pid);
  if (stat === null) throw new Error('the writer backend has gone');
  return stat.cpuMs;
};

const writerPath = path.resolve(values.writer ?? new URL('../src/audit/writer.ts', import.meta.url).pathname);
const { createAuditWriter } = (await import(writerPath)) as { createAuditWriter: typeof CreateAuditWriter };
const applicationName = `phigate-bench-writer-pg-${process.pid}`;
const pool = createPool(APP, { max: 1, applicationName });
const writer = createAuditWriter({ pool, queueLimit: 10_000, logger: createLogger('silent') });
const round = () =>
  values.kind === 'page'
    ? writer.write(entry('registrar-1', 100, 2, 0))
    : values.kind === 'by-ssn'
      ? writer.write(lookup('registrar-1'))
      : Promise.all(Array.from({ length: READS }, (_, i) => writer.write(entry(`physician-${i}`, 1, 0, 1))));
for (let i = 0; i < 20; i++) await round();
const pid = (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
const batches = writer.stats.batches;
const t0 = cpuMs(pid);
const c0 = process.cpuUsage();
const w0 = performance.now();
for (let i = 0; i < ROUNDS; i++) await round();
const used = cpuMs(pid) - t0;
const c1 = process.cpuUsage(c0);
const b = writer.stats.batches - batches;
console.log(JSON.stringify({ db: values.db, kind: values.kind, writer: writerPath, backendPid: pid, rounds: ROUNDS, batches: b, backendMsPerRound: +(used / ROUNDS).toFixed(3), backendMsPerBatch: +(used / b).toFixed(3), nodeMsPerRound: +((c1.user + c1.system) / 1000 / ROUNDS).toFixed(3), wallMsPerRound: +((performance.now() - w0) / ROUNDS).toFixed(2), load: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ') }));
await writer.close();
await pool.end();
