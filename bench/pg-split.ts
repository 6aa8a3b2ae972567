/**
 * PostgreSQL's CPU per request, split by who spent it: the request's own transaction (backends of
 * the gateway's request pool, application_name `phigate`), the audit writer's share (its pool,
 * `phigate-audit`: the batches and their commits, shared by the requests they carry), the search
 * count's (`phigate-search-quota`: one per patientBySsn or patientByMrn), the alert sweep's
 * (`phigate-alert-sweep`: every 15 s, whatever the requests) and the rest of the server (WAL writer, checkpointer, autovacuum, the key pool, idle targets). CPU time from
 * /proc is what a backend really ran, so it holds up on a machine shared with other work where
 * wall times do not. With pg_stat_statements loaded (`--pg-statements`, embedded PostgreSQL only),
 * also the time per request of each statement the gateway's role ran (execution + planning: wall
 * time inside the server, so close to CPU only when the server is not starved).
 */
import pg from 'pg';
import { contextSwitches, procStat, treeCpuMs } from './cpu.ts';

export interface StatementCost {
  /** The statement's normalised text, shortened. */
  readonly statement: string;
  readonly callsPerRequest: number;
  readonly msPerRequest: number;
  readonly msPerCall: number;
}

export interface PgSplit {
  readonly requestMs: number;
  /**
   * Of requestMs, the kernel's part (system time), and the request backends' context switches per
   * request: waits for the next message (voluntary) and preemptions (involuntary). Identical
   * statements cost the same user-space work on any machine; when requestMs moves with these and
   * not with what the backends execute, the load moved it, not the code (bench/README.md, abreq).
   */
  readonly requestSystemMs: number;
  readonly requestSwitches: { readonly voluntary: number; readonly involuntary: number };
  readonly writerMs: number;
  /** The searches' count (phigate.take_search on a connection of its own); 0 for workloads that do not search. */
  readonly searchCountMs: number;
  /** The alert sweeps that fell in the run, on their own connection, over the run's requests: one sweep or none per 15 s. */
  readonly sweepMs: number;
  readonly otherMs: number;
  /** Writer batches per request (its transactions over the run's requests): 1 means no sharing. */
  readonly writerBatchesPerRequest: number;
  /** Backends of the two pools that started during the run: each pays authentication and cold caches, counted in its pool's share. */
  readonly newBackends: number;
  readonly statements: readonly StatementCost[] | null;
}

type Group = 'request' | 'writer' | 'searchCount' | 'sweep';
const POOLS: Record<string, Group> = { phigate: 'request', 'phigate-audit': 'writer', 'phigate-search-quota': 'searchCount', 'phigate-alert-sweep': 'sweep' };

interface Snapshot {
  readonly backends: Map<number, { group: Group; cpuMs: number; systemMs: number; voluntary: number; involuntary: number }>;
  readonly treeMs: number;
  /** Rows of phigate.audit_batches: one per committed writer batch. */
  readonly batches: number;
}

async function snapshot(c: pg.Client, postmaster: number, database: string): Promise<Snapshot> {
  const { rows } = await c.query<{ pid: number; application_name: string }>(
    'SELECT pid, application_name FROM pg_stat_activity WHERE datname = $1 AND application_name = ANY ($2)',
    [database, Object.keys(POOLS)],
  );
  const backends = new Map<number, { group: Group; cpuMs: number; systemMs: number; voluntary: number; involuntary: number }>();
  for (const r of rows) {
    const s = procStat(r.pid);
    const cs = contextSwitches(r.pid);
    if (s && cs) backends.set(r.pid, { group: POOLS[r.application_name]!, cpuMs: s.cpuMs, systemMs: s.systemMs, ...cs });
  }
  const batches = Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM phigate.audit_batches')).rows[0]!.n);
  return { backends, treeMs: treeCpuMs(postmaster) ?? 0, batches };
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/**
 * Starts counting on the bench database (superuser URL); the returned function stops and divides
 * by the requests completed. A backend that started during the run counts from zero; one that
 * ended during it falls into `otherMs` (its parent's reaped-children time).
 */
export async function pgSplitMeter(adminUrl: string, postmaster: number, appRole: string, statements: boolean): Promise<(requests: number) => Promise<PgSplit>> {
  const database = new URL(adminUrl).pathname.slice(1);
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  if (statements) await c.query('SELECT pg_stat_statements_reset()');
  const before = await snapshot(c, postmaster, database);
  return async (requests) => {
    try {
      const after = await snapshot(c, postmaster, database);
      const spent = { request: 0, writer: 0, searchCount: 0, sweep: 0 };
      const request = { systemMs: 0, voluntary: 0, involuntary: 0 };
      let newBackends = 0;
      for (const [pid, b] of after.backends) {
        const was = before.backends.get(pid);
        if (was === undefined) newBackends++;
        spent[b.group] += b.cpuMs - (was?.cpuMs ?? 0);
        if (b.group !== 'request') continue;
        request.systemMs += b.systemMs - (was?.systemMs ?? 0);
        request.voluntary += b.voluntary - (was?.voluntary ?? 0);
        request.involuntary += b.involuntary - (was?.involuntary ?? 0);
      }
      const n = Math.max(1, requests);
      const total = after.treeMs - before.treeMs;
      let costs: StatementCost[] | null = null;
      if (statements) {
        const { rows } = await c.query<{ query: string; calls: string; ms: number }>(
          `SELECT s.query, s.calls, s.total_exec_time + s.total_plan_time AS ms
           FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
           WHERE d.datname = $1 AND s.userid = (SELECT oid FROM pg_roles WHERE rolname = $2)
           ORDER BY ms DESC`,
          [database, appRole],
        );
        costs = rows.map((r) => ({
          statement: r.query.replace(/\s+/g, ' ').trim().slice(0, 90),
          callsPerRequest: round3(Number(r.calls) / n),
          msPerRequest: round3(r.ms / n),
          msPerCall: round3(r.ms / Math.max(1, Number(r.calls))),
        }));
      }
      return {
        requestMs: round3(spent.request / n),
        requestSystemMs: round3(request.systemMs / n),
        requestSwitches: { voluntary: round3(request.voluntary / n), involuntary: round3(request.involuntary / n) },
        writerMs: round3(spent.writer / n),
        searchCountMs: round3(spent.searchCount / n),
        sweepMs: round3(spent.sweep / n),
        otherMs: round3((total - spent.request - spent.writer - spent.searchCount - spent.sweep) / n),
        writerBatchesPerRequest: round3((after.batches - before.batches) / n),
        newBackends,
        statements: costs,
      };
    } finally {
      await c.end();
    }
  };
}
