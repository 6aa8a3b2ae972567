import { describe, expect, it } from 'vitest';
import { counterDelta, parseMetrics, percentile, timingFromHistogram, timingFromLog } from '../../bench/server-stats.ts';

describe('bench server-side statistics', () => {
  it('takes nearest-rank percentiles of the logged durations of every operation', () => {
    expect(percentile([], 50)).toBeNull();
    expect(percentile([1, 2, 3, 4], 50)).toBe(2);
    expect(percentile([1, 2, 3, 4], 99)).toBe(4);
    const t = timingFromLog({ query: Array.from({ length: 99 }, (_, i) => i + 1), mutation: [1000] });
    expect(t).toMatchObject({ source: 'log', p50Ms: 50, p99Ms: 99, samples: 100 });
    expect(t.byOperation).toEqual({ query: { p50Ms: 50, p99Ms: 99, samples: 99 }, mutation: { p50Ms: 1000, p99Ms: 1000, samples: 1 } });
  });

  const before = parseMetrics(`# HELP phigate_kms_calls_total x
# TYPE phigate_kms_calls_total counter
phigate_kms_calls_total 4
phigate_graphql_request_duration_seconds_bucket{le="0.005",operation="query"} 10
phigate_graphql_request_duration_seconds_bucket{le="0.01",operation="query"} 10
phigate_graphql_request_duration_seconds_bucket{le="+Inf",operation="query"} 10
`);
  const after = parseMetrics(`phigate_kms_calls_total 4
phigate_graphql_request_duration_seconds_bucket{le="0.005",operation="query"} 60
phigate_graphql_request_duration_seconds_bucket{le="0.01",operation="query"} 110
phigate_graphql_request_duration_seconds_bucket{le="+Inf",operation="query"} 110
phigate_graphql_request_duration_seconds_bucket{le="0.005",operation="mutation"} 0
phigate_graphql_request_duration_seconds_bucket{le="0.01",operation="mutation"} 0
phigate_graphql_request_duration_seconds_bucket{le="+Inf",operation="mutation"} 0
`);

  it('counts what a counter did between two scrapes', () => {
    expect(counterDelta(before, after, 'phigate_kms_calls_total')).toBe(0);
    expect(counterDelta(before, after, 'phigate_nothing_total')).toBeNull();
  });

  it('estimates quantiles from histogram buckets between two scrapes', () => {
    const t = timingFromHistogram(before, after, 'phigate_graphql_request_duration_seconds');
    expect(t.samples).toBe(100);
    expect(t.p50Ms).toBeCloseTo(5);
    expect(t.p99Ms).toBeCloseTo(9.9);
    expect(t.p50RangeMs).toEqual([0, 5]);
    expect(t.p99RangeMs).toEqual([5, 10]);
  });
});
