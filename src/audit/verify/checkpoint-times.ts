/**
 * The time a bound may rely on for each timed checkpoint: its signed time, or a smaller
 * checkpoint's when that is later. Every leaf under a checkpoint is under every larger one too, so
 * a larger checkpoint signed "earlier" than a smaller one (a clock set back) says nothing new about
 * when those leaves were committed; taking its own time would move a bound back past what the
 * smaller one allows. Returned in order of size.
 */
export function runningTimes<T extends { readonly size: number; readonly time: number }>(timed: readonly T[]): T[] {
  let latest = -Infinity;
  return [...timed]
    .sort((a, b) => a.size - b.size)
    .map((c) => {
      latest = Math.max(latest, c.time);
      return { ...c, time: latest };
    });
}
