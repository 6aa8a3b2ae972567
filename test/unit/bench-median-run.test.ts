import { describe, expect, it } from 'vitest';
import { medianRun } from '../../bench/median-run.ts';

const run = (reqPerSec: number, peakRssMb: number, p99Ms = 0) => ({ reqPerSec, peakRssMb, p99Ms });

describe('bench --repeat: a cell as its median run', () => {
  it('one run is itself, with no list of runs', () => {
    expect(medianRun([run(400, 170)])).toEqual(run(400, 170));
  });

  it('three runs: the middle one by req/s, every req/s in the order run, the largest RSS', () => {
    const r = medianRun([run(450, 160, 9), run(380, 190, 30), run(420, 175, 12)]);
    expect(r).toEqual({ reqPerSec: 420, peakRssMb: 190, p99Ms: 12, runsReqPerSec: [450, 380, 420] });
  });

  it('an even count takes the lower middle run, not an average that no run measured', () => {
    expect(medianRun([run(10, 1), run(40, 1), run(20, 1), run(30, 1)]).reqPerSec).toBe(20);
  });

  it('no runs is an error, not an empty row', () => {
    expect(() => medianRun([])).toThrow(/no runs/);
  });
});
