/**
 * `--repeat`: a cell (target x workload) measured several times is reported as its run of median
 * req/s, with every run's req/s beside it and the largest peak RSS of them all.
 */
export interface RunFigures {
  readonly reqPerSec: number;
  readonly peakRssMb: number;
}

export function medianRun<R extends RunFigures>(runs: readonly R[]): R & { runsReqPerSec?: number[] } {
  if (runs.length === 0) throw new Error('medianRun: no runs');
  if (runs.length === 1) return runs[0]!;
  const sorted = [...runs].sort((a, b) => a.reqPerSec - b.reqPerSec);
  // The lower middle of an even count: a run that happened, never an average of two.
  const median = sorted[Math.floor((sorted.length - 1) / 2)]!;
  return { ...median, runsReqPerSec: runs.map((r) => r.reqPerSec), peakRssMb: Math.max(...runs.map((r) => r.peakRssMb)) };
}
