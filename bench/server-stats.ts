/**
 * What the bench reads from inside the phigate target: its `/__bench/round-trips` answer (the
 * gateway's own `msg: 'request'` log lines) and its Prometheus `/metrics`.
 */

/** The answer of bench/targets/phigate.ts's `/__bench/round-trips` (since the previous call). */
export interface BenchLogStats {
  /** operation -> round trips -> requests */
  readonly roundTrips: Record<string, Record<string, number>>;
  readonly warnings: number;
  /** operation -> every `durationMs` logged (the gateway's time from context creation to the end of the transaction) */
  readonly durationsMs?: Record<string, number[]>;
  /** MB at the sample of highest RSS: rss, heapTotal, heapUsed, external, arrayBuffers and each V8 space's committed size */
  readonly memoryAtPeak?: Record<string, number>;
}

export interface ServerTiming {
  /** 'log': exact, from each request's `durationMs`; 'histogram': estimated from /metrics buckets (request to response) */
  readonly source: 'log' | 'histogram';
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly samples: number;
  /** 'histogram' only: the bucket each quantile fell in (ms), all that the histogram really knows */
  readonly p50RangeMs?: readonly [number, number];
  readonly p99RangeMs?: readonly [number, number];
  /** 'log' only: the same per operation (query, mutation) */
  readonly byOperation?: Record<string, { p50Ms: number | null; p99Ms: number | null; samples: number }>;
}

/** Nearest-rank percentile of ascending values. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function timingFromLog(durationsMs: Record<string, number[]>): ServerTiming {
  const sorted = (xs: number[]) => xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  const all = sorted(Object.values(durationsMs).flat());
  const byOperation = Object.fromEntries(
    Object.entries(durationsMs).map(([op, xs]) => {
      const s = sorted(xs);
      return [op, { p50Ms: percentile(s, 50), p99Ms: percentile(s, 99), samples: s.length }];
    }),
  );
  return { source: 'log', p50Ms: percentile(all, 50), p99Ms: percentile(all, 99), samples: all.length, byOperation };
}

/** One sample per `name{labels}` key of the Prometheus text format (labels as written). */
export type Scrape = Map<string, number>;

export function parseMetrics(text: string): Scrape {
  const out: Scrape = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

const nameOf = (key: string) => key.replace(/\{.*$/, '');
const labelsOf = (key: string): Record<string, string> => {
  const body = /\{(.*)\}$/.exec(key)?.[1] ?? '';
  return Object.fromEntries([...body.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1]!, m[2]!]));
};

/** How much a counter grew between two scrapes, summed over its label sets; null when absent. */
export function counterDelta(before: Scrape, after: Scrape, name: string): number | null {
  let found = false;
  let sum = 0;
  for (const [key, value] of after) {
    if (nameOf(key) !== name) continue;
    found = true;
    sum += value - (before.get(key) ?? 0);
  }
  return found ? sum : null;
}

/**
 * p50 and p99 of a Prometheus histogram between two scrapes, summed over its other labels,
 * interpolated linearly within a bucket as PromQL's histogram_quantile does. Coarse: a value
 * below the first bucket's bound is only known to be below it.
 */
export function timingFromHistogram(before: Scrape, after: Scrape, name: string, unitToMs = 1000): ServerTiming {
  const byLe = new Map<number, number>();
  for (const [key, value] of after) {
    if (nameOf(key) !== `${name}_bucket`) continue;
    const le = labelsOf(key).le;
    if (le === undefined) continue;
    const bound = le === '+Inf' ? Infinity : Number(le);
    byLe.set(bound, (byLe.get(bound) ?? 0) + value - (before.get(key) ?? 0));
  }
  const buckets = [...byLe].sort((a, b) => a[0] - b[0]);
  const total = buckets.at(-1)?.[1] ?? 0;
  const q = (p: number): { value: number; range: [number, number] } | null => {
    if (total === 0) return null;
    const rank = (p / 100) * total;
    let prevBound = 0;
    let prevCount = 0;
    for (const [bound, count] of buckets) {
      if (count >= rank) {
        if (bound === Infinity) return { value: prevBound * unitToMs, range: [prevBound * unitToMs, Infinity] };
        const within = count - prevCount;
        const value = prevBound + (within > 0 ? (bound - prevBound) * ((rank - prevCount) / within) : 0);
        return { value: value * unitToMs, range: [prevBound * unitToMs, bound * unitToMs] };
      }
      prevBound = bound;
      prevCount = count;
    }
    return null;
  };
  const p50 = q(50);
  const p99 = q(99);
  return {
    source: 'histogram',
    p50Ms: p50?.value ?? null,
    p99Ms: p99?.value ?? null,
    samples: total,
    ...(p50 ? { p50RangeMs: p50.range } : {}),
    ...(p99 ? { p99RangeMs: p99.range } : {}),
  };
}
