/**
 * The bar (#10, "Targets"), checked against a run's rows: each target met, not met, or not
 * measured by this run (null), with the numbers it was judged on. A ratio has two lines: the
 * target, and the lower bar at which the issue may be resolved with what remains explained.
 */
export interface VerdictRow {
  readonly target: string;
  readonly workload: string;
  readonly reqPerSec: number;
  readonly p99Ms: number;
  readonly peakRssMb: number;
  readonly skipped?: string;
  readonly serverP50Ms?: number | null;
  readonly kmsCalls?: number | null;
  readonly roundTripsPerRequest?: Record<string, number>;
  /** bench/pg-split.ts: PostgreSQL CPU ms per request of the request transactions and of the audit writer */
  readonly postgresSplit?: { readonly requestMs: number; readonly writerMs: number };
}

export interface Verdict {
  readonly target: string;
  readonly met: boolean | null;
  readonly detail: string;
}

const calls = (n: number) => `${n} call${n === 1 ? '' : 's'} in the measured runs`;
const WORKLOADS = { byId: 'patient(id)', page: 'patients(first: 100)', bySsn: 'patientBySsn' } as const;

export function verdicts(rows: readonly VerdictRow[], patients: number): Verdict[] {
  const find = (target: string, workload: string) => rows.find((r) => r.target === target && r.workload === workload && !r.skipped);
  const ratio = (workload: string, min: number, resolveAt: number): Verdict[] => {
    const p = find('phigate', workload);
    const g = find('postgraphile', workload);
    const target = `${workload}: at least ${min.toFixed(1)}x PostGraphile's req/s`;
    const bar = `${workload}: resolve bar, at least ${resolveAt.toFixed(1)}x PostGraphile's req/s`;
    if (!p || !g || g.reqPerSec === 0) return [target, bar].map((t) => ({ target: t, met: null, detail: 'not measured in this run' }));
    const x = Math.round((p.reqPerSec / g.reqPerSec) * 100) / 100;
    const detail = `${x}x (${p.reqPerSec} against ${g.reqPerSec})`;
    return [
      { target, met: x >= min, detail },
      { target: bar, met: x >= resolveAt, detail },
    ];
  };
  const out: Verdict[] = ratio(WORKLOADS.byId, 1.0, 0.8);
  const p = find('phigate', WORKLOADS.byId);
  const g = find('postgraphile', WORKLOADS.byId);
  out.push(
    p && g
      ? { target: `${WORKLOADS.byId}: p99 no worse than PostGraphile's`, met: p.p99Ms <= g.p99Ms, detail: `${p.p99Ms} ms against ${g.p99Ms} ms` }
      : { target: `${WORKLOADS.byId}: p99 no worse than PostGraphile's`, met: null, detail: 'not measured in this run' },
  );
  out.push(...ratio(WORKLOADS.page, 0.6, 0.5));
  const page = find('phigate', WORKLOADS.page);
  out.push(
    page?.roundTripsPerRequest
      ? { target: `${WORKLOADS.page}: a constant number of round trips`, met: true, detail: JSON.stringify(page.roundTripsPerRequest) }
      : { target: `${WORKLOADS.page}: a constant number of round trips`, met: null, detail: 'not measured in this run' },
  );
  const ssn = find('phigate', WORKLOADS.bySsn);
  const ssnTarget = `${WORKLOADS.bySsn} on 1,000,000 patients: p50 under 2 ms inside the gateway`;
  out.push(
    patients < 1_000_000 || !ssn || ssn.serverP50Ms === undefined || ssn.serverP50Ms === null
      ? { target: ssnTarget, met: null, detail: patients < 1_000_000 ? `this run has ${patients.toLocaleString('en-US')} patients` : 'not measured in this run' }
      : { target: ssnTarget, met: ssn.serverP50Ms < 2, detail: `${ssn.serverP50Ms} ms` },
  );
  const mine = rows.filter((r) => r.target === 'phigate' && !r.skipped);
  const kms = mine.map((r) => r.kmsCalls).filter((k): k is number => typeof k === 'number');
  out.push(
    kms.length
      ? { target: 'zero KMS calls per request in steady state', met: kms.every((k) => k === 0), detail: calls(kms.reduce((a, b) => a + b, 0)) }
      : { target: 'zero KMS calls per request in steady state', met: null, detail: 'not measured in this run' },
  );
  // Issue 10: a read's own transaction and its share of the writer's batches, from the backends' CPU.
  const pgTarget = `${WORKLOADS.byId}: PostgreSQL CPU per read at most 0.8 ms, the audit writer's share included`;
  const split = find('phigate', WORKLOADS.byId)?.postgresSplit;
  const pgMs = split ? Math.round((split.requestMs + split.writerMs) * 1000) / 1000 : null;
  out.push(
    split && pgMs !== null
      ? { target: pgTarget, met: pgMs <= 0.8, detail: `${pgMs} ms (request transaction ${split.requestMs} + writer ${split.writerMs})` }
      : { target: pgTarget, met: null, detail: 'not measured in this run' },
  );
  const rss = Math.max(0, ...mine.map((r) => r.peakRssMb));
  out.push(mine.length ? { target: 'RSS under 250 MB', met: rss < 250, detail: `peak ${rss} MB` } : { target: 'RSS under 250 MB', met: null, detail: 'not measured in this run' });
  return out;
}

export function verdictLines(all: readonly Verdict[]): string[] {
  return all.map((v) => `${v.met === null ? '  -  ' : v.met ? ' met ' : ' NOT '} ${v.target}: ${v.detail}`);
}
