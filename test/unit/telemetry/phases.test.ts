import { describe, expect, it } from 'vitest';
import { PHASES, RequestPhases } from '../../../src/telemetry/phases.ts';

describe('RequestPhases', () => {
  it("logs each moment as ms since the start, in PHASES' order, to 0.01 ms, and -1 for one never reached", () => {
    const p = new RequestPhases(1_000);
    p.contextMade = 1_000.254;
    p.admitted = 1_001;
    p.connectAsked = 1_001.5;
    p.connected = 1_010.126;
    p.executed = 1_020;
    p.committed = 1_021;
    expect(PHASES).toEqual(['contextMade', 'admitted', 'connectAsked', 'connected', 'executed', 'writing', 'written', 'committed']);
    expect(p.toLog()).toEqual([0.25, 1, 1.5, 10.13, 20, -1, -1, 21]);
  });

  it('a request that reached no seam logs every moment as -1', () => {
    expect(new RequestPhases(5).toLog()).toEqual(Array(PHASES.length).fill(-1));
  });
});
