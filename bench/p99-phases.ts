/**
 * `npx tsx bench/p99-phases.ts [--brief] FILE.jsonl [FILE2.jsonl ...]`: where the slowest 1% of requests spent
 * their time against the median ones, from the phigate target's BENCH_PHASES_DIR files (one
 * measured run each; bench/targets/phigate.ts). A request's time, arrival to the end of its
 * answer, is cut into consecutive phases that add up to it; for the slowest 1% (by that time) and
 * for the middle 10% (45th-55th percentile) each phase's mean, p50 and share, with the GC pauses
 * that overlapped the request. Phases (src/telemetry/phases.ts for the moments):
 *
 *   before context   arrival -> context start: body, parameters, parse, validation
 *   auth             credentials checked, context made
 *   to admission     context -> the transaction's plugin (admission, fair share, deadline)
 *   connect wait     asked the pool for a connection -> had one
 *   statements       connection -> execution over (BEGIN + context + SELECT, decryption, result)
 *   to writer        execution over -> entry handed to the audit writer
 *   writer queue     entry handed -> its batch about to leave (the shard's batch in flight, if any)
 *   gather hold      the batch held for entries of running reads
 *   batch commit     the batch's transaction, connect to COMMIT answered
 *   after batch      batch settled -> the request resumed (event loop)
 *   answer           the request resumed -> its answer's last byte handed to the socket
 *
 * --brief: one line per file (p50, p99, the shares of the middle and of the slowest 1%), to set
 * the rounds of --phigate-variants side by side. --summary: over all the files given (rounds of
 * one setting), each phase's median share and its range, the middle's and the slowest 1%'s.
 */
import { readFileSync } from 'node:fs';

interface Rec {
  id: string;
  arrivedAt: number;
  finishedAt: number;
  loggedAt: number;
  durationMs: number;
  phasesMs: number[];
  batch?: { shard: number; size: number; heldMs: number; startedAt: number; settledAt: number };
}
interface Head {
  gcPauses: Array<{ at: number; ms: number; kind: number }>;
  loopDelayMs: Record<string, number>;
}

const NAMES = ['before context', 'auth', 'to admission', 'connect wait', 'statements', 'to writer', 'writer queue', 'gather hold', 'batch commit', 'after batch', 'answer'] as const;

/** The phases of one request, ms; null when it did not pass every seam (no entry written, say). */
function phasesOf(r: Rec): { total: number; parts: number[]; waitedCommit: boolean } | null {
  const [, admitted, connectAsked, connected, executed, writing, written] = r.phasesMs as [number, number, number, number, number, number, number, number];
  const contextMade = r.phasesMs[0]!;
  if (!r.batch || [admitted, connectAsked, connected, executed, writing, written].some((x) => x < 0)) return null;
  const start = r.loggedAt - r.durationMs; // the context's start, on this process's clock
  const at = (ms: number) => start + ms;
  const b = r.batch;
  const left = b.startedAt;
  const heldFrom = left - b.heldMs;
  const marks = [r.arrivedAt, start, at(contextMade), at(admitted), at(connectAsked), at(connected), at(executed), at(writing), heldFrom, left, b.settledAt, at(written), r.finishedAt];
  // connectAsked follows admission at once; 'to admission' keeps admitted -> connectAsked too.
  const parts = [marks[1]! - marks[0]!, marks[2]! - marks[1]!, marks[4]! - marks[2]!, marks[5]! - marks[4]!, marks[6]! - marks[5]!, marks[7]! - marks[6]!, marks[8]! - marks[7]!, marks[9]! - marks[8]!, marks[10]! - marks[9]!, marks[11]! - marks[10]!, marks[12]! - marks[11]!];
  return { total: r.finishedAt - r.arrivedAt, parts, waitedCommit: heldFrom - at(writing) > 0.5 };
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]! : NaN;
};
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const f = (x: number) => x.toFixed(2);

const brief = process.argv.includes('--brief');
const summary = process.argv.includes('--summary');
interface RunShares {
  middle: number[];
  slowest: number[];
  middleMs: number;
  slowestMs: number;
  gcMiddle: number;
  gcSlowest: number;
  inFlightMiddle: number;
  inFlightSlowest: number;
  loopDelayP50: number;
}
const runs: RunShares[] = [];
for (const file of process.argv.slice(2).filter((a) => !a.startsWith('--'))) {
  const lines = readFileSync(file, 'utf8').trim().split('\n');
  const head = JSON.parse(lines[0]!) as Head;
  const recs = lines.slice(1).map((l) => JSON.parse(l) as Rec);
  const rows = recs.map((r) => ({ r, p: phasesOf(r) })).filter((x): x is { r: Rec; p: NonNullable<ReturnType<typeof phasesOf>> } => x.p !== null);
  rows.sort((a, b) => a.p.total - b.p.total);
  const n = rows.length;
  const tail = rows.slice(Math.floor(n * 0.99));
  const middle = rows.slice(Math.floor(n * 0.45), Math.ceil(n * 0.55));
  const gcIn = (r: Rec) => head.gcPauses.filter((g) => g.at < r.finishedAt && g.at + g.ms > r.arrivedAt).reduce((s, g) => s + g.ms, 0);
  if (summary) {
    const shares = (set: typeof rows) => NAMES.map((_, i) => (mean(set.map((x) => x.p.parts[i]!)) / mean(set.map((x) => x.p.total))) * 100);
    const inFlight = (set: typeof rows) => mean(set.map((x) => (x.p.waitedCommit ? 100 : 0)));
    runs.push({
      middle: shares(middle),
      slowest: shares(tail),
      middleMs: mean(middle.map((x) => x.p.total)),
      slowestMs: mean(tail.map((x) => x.p.total)),
      gcMiddle: mean(middle.map((x) => gcIn(x.r))),
      gcSlowest: mean(tail.map((x) => gcIn(x.r))),
      inFlightMiddle: inFlight(middle),
      inFlightSlowest: inFlight(tail),
      loopDelayP50: head.loopDelayMs.p50!,
    });
    continue;
  }
  if (brief) {
    const share = (set: typeof rows, idx: number[]) => (mean(set.map((x) => idx.reduce((s, i) => s + x.p.parts[i]!, 0))) / mean(set.map((x) => x.p.total))) * 100;
    const groups: Array<[string, number[]]> = [['connect', [3]], ['statements', [4]], ['writer', [6, 7, 8]], ['hold', [7]], ['other', [0, 1, 2, 5, 9, 10]]];
    const cell = (set: typeof rows) => groups.map(([g, idx]) => `${g} ${share(set, idx).toFixed(0)}%`).join(' ');
    const totals = rows.map((x) => x.p.total);
    console.log(`${file.split('/').at(-1)}: n ${n} p50 ${f(pct(totals, 50))} p99 ${f(pct(totals, 99))} eld50 ${f(head.loopDelayMs.p50!)} | middle: ${cell(middle)} | slowest: ${cell(tail)} | gc ms mid/slow ${f(mean(middle.map((x) => gcIn(x.r))))}/${f(mean(tail.map((x) => gcIn(x.r))))}`);
    continue;
  }
  console.log(`\n${file}: ${n} requests (${recs.length - n} without every seam); total p50 ${f(pct(rows.map((x) => x.p.total), 50))} ms, p99 ${f(pct(rows.map((x) => x.p.total), 99))} ms`);
  console.log(`event-loop delay ms: ${Object.entries(head.loopDelayMs).map(([k, v]) => `${k} ${f(v)}`).join(', ')}; GC pauses ${head.gcPauses.length}, ${f(head.gcPauses.reduce((s, g) => s + g.ms, 0))} ms in all, longest ${f(Math.max(0, ...head.gcPauses.map((g) => g.ms)))} ms`);
  console.log(`| phase | middle 10%: mean ms (share) | slowest 1%: mean ms (share) | slowest 1%: p50 .. max ms |`);
  console.log(`|---|---|---|---|`);
  const totalMid = mean(middle.map((x) => x.p.total));
  const totalTail = mean(tail.map((x) => x.p.total));
  NAMES.forEach((name, i) => {
    const m = middle.map((x) => x.p.parts[i]!);
    const t = tail.map((x) => x.p.parts[i]!);
    console.log(`| ${name} | ${f(mean(m))} (${((mean(m) / totalMid) * 100).toFixed(0)}%) | ${f(mean(t))} (${((mean(t) / totalTail) * 100).toFixed(0)}%) | ${f(pct(t, 50))} .. ${f(Math.max(...t))} |`);
  });
  console.log(`| total | ${f(totalMid)} | ${f(totalTail)} | |`);
  console.log(`GC overlapping a request, mean ms: middle ${f(mean(middle.map((x) => gcIn(x.r))))}, slowest ${f(mean(tail.map((x) => gcIn(x.r))))}`);
  console.log(`entry handed while its shard's batch was in flight: middle ${((mean(middle.map((x) => (x.p.waitedCommit ? 1 : 0))) * 100)).toFixed(0)}%, slowest ${((mean(tail.map((x) => (x.p.waitedCommit ? 1 : 0))) * 100)).toFixed(0)}%; batch size mean: middle ${f(mean(middle.map((x) => x.r.batch!.size)))}, slowest ${f(mean(tail.map((x) => x.r.batch!.size)))}`);
}

if (summary && runs.length > 0) {
  const med = (xs: number[]) => pct(xs, 50);
  const range = (xs: number[]) => `${med(xs).toFixed(0)}% (${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)})`;
  console.log(`${runs.length} runs; mean ms, median over runs: middle ${f(med(runs.map((r) => r.middleMs)))}, slowest 1% ${f(med(runs.map((r) => r.slowestMs)))}`);
  console.log('| phase | middle 10%: median share (range) | slowest 1%: median share (range) |');
  console.log('|---|---|---|');
  NAMES.forEach((name, i) => console.log(`| ${name} | ${range(runs.map((r) => r.middle[i]!))} | ${range(runs.map((r) => r.slowest[i]!))} |`));
  const writer = (xs: number[]) => xs[6]! + xs[7]! + xs[8]!;
  console.log(`| writer queue + hold + commit | ${range(runs.map((r) => writer(r.middle)))} | ${range(runs.map((r) => writer(r.slowest)))} |`);
  console.log(`GC pauses overlapping a request, ms (median over runs): middle ${f(med(runs.map((r) => r.gcMiddle)))}, slowest ${f(med(runs.map((r) => r.gcSlowest)))}; slowest above middle in ${runs.filter((r) => r.gcSlowest > r.gcMiddle).length} of ${runs.length} runs`);
  console.log(`entry handed while its shard's batch was in flight (median over runs): middle ${med(runs.map((r) => r.inFlightMiddle)).toFixed(0)}%, slowest ${med(runs.map((r) => r.inFlightSlowest)).toFixed(0)}%; event-loop delay p50 ${f(Math.min(...runs.map((r) => r.loopDelayP50)))}-${f(Math.max(...runs.map((r) => r.loopDelayP50)))} ms`);
}
