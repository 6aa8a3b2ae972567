/**
 * `npx tsx bench/gc-windows.ts [--around] FILE.jsonl [FILE2.jsonl ...]`: how much of the slowest 1% of
 * requests the full GCs explain, from the phigate target's BENCH_PHASES_DIR files (one measured run
 * each; bench/targets/phigate.ts). One line per file:
 *
 *   - reads, p50 and p99 (arrival to the answer's end, this process's clock);
 *   - GCs per 1,000 reads by kind (scavenges, full mark-sweep-compacts) and the full GCs' pauses;
 *   - the share of the slowest 1% whose time overlaps a full GC's window (from 150 ms before its
 *     pause, where its concurrent marking runs, to 100 ms after it), against the share of all reads
 *     that do: 100% against 20-30% means the tail is the full GCs;
 *   - the reads finished in the 100 ms before each full GC's pause ends, against the run's mean
 *     rate (1.0: no dip).
 *
 * --around: per 20 ms from 200 ms before each full GC's pause to 100 ms after, averaged over the
 * run's full GCs: the reads whose statements ended there and those statements' mean time
 * (connection obtained -> execution over), and the reads whose audit batch settled there and
 * that batch's mean commit time. Both stretch together when the whole machine is short of CPU.
 */
import { readFileSync } from 'node:fs';

interface Rec {
  arrivedAt: number;
  finishedAt: number;
  loggedAt?: number;
  durationMs?: number;
  phasesMs?: number[];
  batch?: { startedAt: number; settledAt: number };
}
interface Pause {
  at: number;
  ms: number;
  /** PerformanceObserver's gc kind: 1 scavenge, 4 mark-sweep-compact, 8 incremental marking. */
  kind: number;
}

const SCAVENGE = 1;
const FULL = 4;
/** A full GC's window: its concurrent marking runs before the pause, the backlog drains after it. */
const BEFORE_MS = 150;
const AFTER_MS = 100;

function load(file: string): { reads: Rec[]; pauses: Pause[] } {
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.length > 0);
  const head = JSON.parse(lines[0]!) as { gcPauses?: Pause[] };
  const reads = lines.slice(1).map((l) => JSON.parse(l) as Rec).filter((r) => r.arrivedAt !== undefined && r.finishedAt !== undefined);
  return { reads, pauses: head.gcPauses ?? [] };
}

const mean = (xs: readonly number[]) => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);

function summary(file: string, reads: Rec[], pauses: Pause[]): string {
  const took = reads.map((r) => r.finishedAt - r.arrivedAt).sort((a, b) => a - b);
  const p50 = took[Math.floor(took.length / 2)]!;
  const p99 = took[Math.floor(took.length * 0.99)]!;
  const from = Math.min(...reads.map((r) => r.arrivedAt));
  const to = Math.max(...reads.map((r) => r.finishedAt));
  const during = pauses.filter((p) => p.at >= from && p.at <= to);
  const full = during.filter((p) => p.kind === FULL);
  const per1k = (kind: number) => (1000 * during.filter((p) => p.kind === kind).length) / reads.length;
  const inWindow = (r: Rec) => full.some((p) => p.at - BEFORE_MS < r.finishedAt && p.at + p.ms + AFTER_MS > r.arrivedAt);
  const slow = reads.filter((r) => r.finishedAt - r.arrivedAt >= p99);
  const share = (rs: Rec[]) => (100 * rs.filter(inWindow).length) / Math.max(1, rs.length);
  const finished = reads.map((r) => r.finishedAt).sort((a, b) => a - b);
  const rate = reads.length / (to - from);
  const inner = full.filter((p) => p.at - 100 > from && p.at + p.ms < to);
  const dip = inner.map((p) => finished.filter((t) => t >= p.at + p.ms - 100 && t < p.at + p.ms).length / (100 * rate));
  return [
    `${file}: ${reads.length} reads, p50 ${p50.toFixed(1)} p99 ${p99.toFixed(1)} ms`,
    `per 1,000 reads ${per1k(SCAVENGE).toFixed(1)} scavenges, ${per1k(FULL).toFixed(2)} full GCs (pause mean ${mean(full.map((p) => p.ms)).toFixed(1)}, max ${Math.max(0, ...full.map((p) => p.ms)).toFixed(1)} ms)`,
    `slowest 1% in a full GC's window ${share(slow).toFixed(0)}% (all reads ${share(reads).toFixed(0)}%)`,
    `finished in the 100 ms before a full pause ends ${mean(dip).toFixed(2)} of the mean rate`,
  ].join('; ');
}

function around(reads: Rec[], pauses: Pause[]): string[] {
  const full = pauses.filter((p) => p.kind === FULL);
  const bins = new Map<number, { statements: number[]; commits: number[] }>();
  const bin = (t: number, p: Pause) => Math.floor((t - p.at) / 20);
  const add = (t: number, key: 'statements' | 'commits', v: number) => {
    for (const p of full) {
      const b = bin(t, p);
      if (b < -10 || b >= 5) continue;
      let e = bins.get(b);
      if (e === undefined) bins.set(b, (e = { statements: [], commits: [] }));
      e[key].push(v);
    }
  };
  for (const r of reads) {
    const ph = r.phasesMs;
    if (ph !== undefined && r.loggedAt !== undefined && r.durationMs !== undefined && ph[3]! >= 0 && ph[4]! >= 0) {
      add(r.loggedAt - r.durationMs + ph[4]!, 'statements', ph[4]! - ph[3]!);
    }
    if (r.batch) add(r.batch.settledAt, 'commits', r.batch.settledAt - r.batch.startedAt);
  }
  const n = Math.max(1, full.length);
  const out: string[] = [];
  for (let b = -10; b < 5; b++) {
    const e = bins.get(b) ?? { statements: [], commits: [] };
    out.push(
      `  ${String(b * 20).padStart(5)} ms: statements ended ${(e.statements.length / n).toFixed(1).padStart(5)} a GC, mean ${mean(e.statements).toFixed(1).padStart(5)} ms; batches settled for ${(e.commits.length / n).toFixed(1).padStart(5)} reads, mean commit ${mean(e.commits).toFixed(1).padStart(5)} ms`,
    );
  }
  return out;
}

const files = process.argv.slice(2).filter((a) => !a.startsWith('--'));
if (files.length === 0) throw new Error('usage: bench/gc-windows.ts [--around] FILE.jsonl ...');
for (const file of files) {
  const { reads, pauses } = load(file);
  if (reads.length === 0) continue;
  console.log(summary(file, reads, pauses));
  if (process.argv.includes('--around')) console.log(around(reads, pauses).join('\n'));
}
