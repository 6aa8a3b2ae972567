import { describe, expect, it } from 'vitest';
import { verdictLines, verdicts, type VerdictRow } from '../../bench/verdict.ts';

const row = (target: string, workload: string, extra: Partial<VerdictRow> = {}): VerdictRow => ({ target, workload, reqPerSec: 100, p99Ms: 50, peakRssMb: 100, ...extra });
const byTarget = (all: ReturnType<typeof verdicts>) => Object.fromEntries(all.map((v) => [v.target, v]));

describe("bench: the issue's targets judged on a run", () => {
  const rows = [
    row('phigate', 'patient(id)', { reqPerSec: 452, p99Ms: 160, peakRssMb: 169, kmsCalls: 0, roundTripsPerRequest: { query: 2 } }),
    row('postgraphile', 'patient(id)', { reqPerSec: 1069, p99Ms: 74 }),
    row('phigate', 'patients(first: 100)', { reqPerSec: 240, peakRssMb: 176, kmsCalls: 0, roundTripsPerRequest: { query: 3 } }),
    row('postgraphile', 'patients(first: 100)', { reqPerSec: 182 }),
    row('phigate', 'patientBySsn', { serverP50Ms: 1.8, kmsCalls: 0, peakRssMb: 161 }),
  ];

  it('states each target met or not with the numbers it was judged on', () => {
    const v = byTarget(verdicts(rows, 1_000_000));
    expect(v["patient(id): at least 1.0x PostGraphile's req/s"]).toEqual({ target: "patient(id): at least 1.0x PostGraphile's req/s", met: false, detail: '0.42x (452 against 1069)' });
    expect(v["patient(id): resolve bar, at least 0.8x PostGraphile's req/s"]).toMatchObject({ met: false, detail: '0.42x (452 against 1069)' });
    expect(v["patient(id): p99 no worse than PostGraphile's"]!.met).toBe(false);
    expect(v["patients(first: 100): at least 0.6x PostGraphile's req/s"]!.met).toBe(true);
    expect(v["patients(first: 100): resolve bar, at least 0.5x PostGraphile's req/s"]!.met).toBe(true);
    expect(v['patients(first: 100): a constant number of round trips']).toMatchObject({ met: true, detail: '{"query":3}' });
    expect(v['patientBySsn on 1,000,000 patients: p50 under 2 ms inside the gateway']).toMatchObject({ met: true, detail: '1.8 ms' });
    expect(v['zero KMS calls per request in steady state']!.met).toBe(true);
    expect(v['RSS under 250 MB']).toMatchObject({ met: true, detail: 'peak 176 MB' });
  });

  it('a target the run did not measure is neither met nor missed', () => {
    const v = byTarget(verdicts(rows.filter((r) => r.target === 'phigate'), 100_000));
    expect(v["patient(id): at least 1.0x PostGraphile's req/s"]!.met).toBeNull();
    expect(v["patient(id): resolve bar, at least 0.8x PostGraphile's req/s"]!.met).toBeNull();
    expect(v['patientBySsn on 1,000,000 patients: p50 under 2 ms inside the gateway']).toMatchObject({ met: null, detail: 'this run has 100,000 patients' });
  });

  it('a ratio between the resolve bar and the target meets the bar only; an equal p99 is no worse', () => {
    const v = byTarget(verdicts([row('phigate', 'patient(id)', { reqPerSec: 90, p99Ms: 74 }), row('postgraphile', 'patient(id)', { reqPerSec: 100, p99Ms: 74 })], 100_000));
    expect(v["patient(id): at least 1.0x PostGraphile's req/s"]).toMatchObject({ met: false, detail: '0.9x (90 against 100)' });
    expect(v["patient(id): resolve bar, at least 0.8x PostGraphile's req/s"]!.met).toBe(true);
    expect(v["patient(id): p99 no worse than PostGraphile's"]!.met).toBe(true);
  });

  it('one KMS call or one process over 250 MB fails its target; skipped rows do not count', () => {
    const v = byTarget(verdicts([...rows, row('phigate', 'write mix 10%', { kmsCalls: 1, peakRssMb: 251 }), row('phigate', 'x', { skipped: 'down', peakRssMb: 900 })], 100_000));
    expect(v['zero KMS calls per request in steady state']).toMatchObject({ met: false, detail: '1 call in the measured runs' });
    expect(v['RSS under 250 MB']).toMatchObject({ met: false, detail: 'peak 251 MB' });
  });

  it("judges PostgreSQL's CPU per read by id on the request transaction plus the writer's share", () => {
    const at = (requestMs: number, writerMs: number) =>
      byTarget(verdicts([row('phigate', 'patient(id)', { postgresSplit: { requestMs, writerMs } })], 100_000))[
        "patient(id): PostgreSQL CPU per read at most 0.8 ms, the audit writer's share included"
      ];
    expect(at(0.335, 0.201)).toMatchObject({ met: true, detail: '0.536 ms (request transaction 0.335 + writer 0.201)' });
    expect(at(0.6, 0.3)).toMatchObject({ met: false, detail: '0.9 ms (request transaction 0.6 + writer 0.3)' });
    expect(byTarget(verdicts(rows, 100_000))["patient(id): PostgreSQL CPU per read at most 0.8 ms, the audit writer's share included"]!.met).toBeNull();
  });

  it('prints one line per target, marked', () => {
    const lines = verdictLines(verdicts(rows, 100_000));
    expect(lines[0]).toMatch(/^ NOT  patient\(id\)/);
    expect(lines.some((l) => l.startsWith(' met '))).toBe(true);
    expect(lines.some((l) => l.startsWith('  -  '))).toBe(true);
  });
});
