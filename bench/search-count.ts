/**
 * PostgreSQL's CPU for one search's count (phigate.take_search, src/db/search-quota.ts), issue 10:
 * `npx tsx bench/search-count.ts --db NAME [--rounds R] [--calls N] [--migrate]` against
 * BENCH_DATABASE_URL (a superuser URL; default the local cluster on 127.0.0.1:5432).
 *
 * `--migrate` creates database NAME and migrates it to this tree's head (once; later runs reuse it).
 * One connection of the app role counts N searches per variant, the variants taking turns for R
 * rounds, so that a machine whose load moves during the run moves every variant alike. Prints the
 * backend's CPU per count (utime + stime of /proc/PID/stat, so PostgreSQL must run on this machine)
 * and the wall time per count, each round, per variant:
 * - `transaction`: BEGIN, SET LOCAL synchronous_commit = off, the call, COMMIT, pipelined (as before);
 * - `statement`: the call and the setting as one statement, committed on its own, unnamed;
 * - `named`: the same statement prepared once per connection (src/db/search-quota.ts as it is).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { settleAll } from '../src/db/settle-all.ts';
import { submit } from '../src/db/submit.ts';
import { procStat } from './cpu.ts';
import { scratchDatabase } from './scratch-db.ts';

const { values } = parseArgs({
  options: { db: { type: 'string' }, rounds: { type: 'string', default: '4' }, calls: { type: 'string', default: '2000' }, migrate: { type: 'boolean', default: false } },
});
const ROUNDS = Number(values.rounds);
const CALLS = Number(values.calls);
const { app: APP } = await scratchDatabase(values.db, values.migrate);

const backendCpuMs = (pid: number): number => {
  const stat = procStat(pid);
  if (stat === null) throw new Error('the backend has gone');
  return stat.cpuMs;
};

const CALL = 'SELECT allowed, retry_after_seconds FROM phigate.take_search($1, $2, $3)';
const ONE = "SELECT q.allowed, q.retry_after_seconds FROM phigate.take_search($1, $2, $3) q WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL";
// A cap no run reaches: every count is allowed, as in the bench's by-SSN workload.
const args = ['user', 'bench-search-count', 1_000_000_000];

const client = new pg.Client({ connectionString: APP });
await client.connect();
const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;

const variants: Record<string, () => Promise<unknown>> = {
  transaction: async () => {
    const { error } = await settleAll([submit(client, 'BEGIN'), submit(client, 'SET LOCAL synchronous_commit = off'), submit(client, CALL, args), submit(client, 'COMMIT')]);
    if (error !== undefined) throw error;
  },
  statement: () => submit(client, ONE, args),
  named: () => submit(client, ONE, args, 'bench_take_search'),
};

const results: Record<string, { cpuMs: number[]; wallMs: number[] }> = {};
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, count] of Object.entries(variants)) {
    for (let i = 0; i < 200; i++) await count();
    const cpu = backendCpuMs(pid);
    const wall = performance.now();
    for (let i = 0; i < CALLS; i++) await count();
    const r = (results[name] ??= { cpuMs: [], wallMs: [] });
    r.cpuMs.push(Math.round(((backendCpuMs(pid) - cpu) / CALLS) * 10_000) / 10_000);
    r.wallMs.push(Math.round(((performance.now() - wall) / CALLS) * 1000) / 1000);
  }
}
await client.end();
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [name, r] of Object.entries(results)) {
  console.log(`${name.padEnd(12)} backend CPU ms per count ${r.cpuMs.join(' ')} (median ${median(r.cpuMs)}), wall ms ${r.wallMs.join(' ')}`);
}
console.log(`load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
