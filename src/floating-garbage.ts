import { PerformanceObserver, constants } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';

/**
 * A full GC of V8's own that ends with the old space this many times what the recent ones kept
 * (and at least RECHECK_MIN_BYTES more) is collected again at once.
 *
 * Why: V8 marks concurrently while requests run, and whatever is promoted during the marking
 * counts as live for that cycle. Under load a marking takes 100-350 ms of wall time and the
 * gateway promotes ~0.3 MB per page, so now and then one full GC keeps 20-30 MB of garbage: in a
 * page cell one kept 77.6 MB where the next, 1.6 s later, kept 50.6. V8 sets the next limit from
 * what the GC kept (x1.5, src/heap.ts), the heap grew 116 -> 141 MB before it collected again, and
 * Node 24's V8 keeps the heap's largest size resident for the process's life (bench/README.md,
 * "Node 24 keeps its heap's high-water"). A second, atomic full GC right after such a cycle finds
 * only what is live, and the limit is set from that. The bounds leave alone what a page cell's
 * ordinary cycles differ by (38-51 MB kept) and the step from reads by id to pages (~35 -> ~45):
 * at 1.25 and 8 MB, all five extra GCs of a Node 20 run found 2.5-7 MB of garbage.
 */
export const RECHECK_RATIO = 1.4;
export const RECHECK_MIN_BYTES = 16 * 2 ** 20;
/**
 * At most one extra full GC this often. What the extra one finds is what is live, and becomes the
 * measure for the cycles after it, so a live set that truly grew costs one extra GC, not one per
 * cycle. Short, because transients come in bursts: with 10 s, two cycles that kept 64.9 and
 * 70.8 MB came 1.3 and 4 s after an extra GC, were not collected again, and the heap reached
 * 128-140 MB.
 */
export const RECHECK_MIN_INTERVAL_MS = 1_000;
/** "The recent ones": the smallest old space of the last few full GCs, so one high cycle never becomes the norm. */
const RECENT_GCS = 4;

export interface FloatingGarbageCheck {
  /** A full GC of V8's own ended with `oldBytes` in the old space at `now` (ms): whether to collect again now. */
  afterFullGc(oldBytes: number, now: number): boolean;
  /** The extra full GC ended with `oldBytes`: what is live, the measure for the cycles after it. */
  collected(oldBytes: number, now: number): void;
}

/** The decision alone, without V8: what afterFullGc answers depends only on the sizes and times given. */
export function createFloatingGarbageCheck(): FloatingGarbageCheck {
  const recent: number[] = [];
  let collectedAt = -Infinity;
  const remember = (oldBytes: number) => {
    recent.push(oldBytes);
    if (recent.length > RECENT_GCS) recent.shift();
  };
  return {
    afterFullGc(oldBytes, now) {
      const kept = recent.length === 0 ? Infinity : Math.min(...recent);
      const again = oldBytes > kept * RECHECK_RATIO && oldBytes - kept >= RECHECK_MIN_BYTES && now - collectedAt >= RECHECK_MIN_INTERVAL_MS;
      if (!again) remember(oldBytes);
      return again;
    },
    collected(oldBytes, now) {
      collectedAt = now;
      // What is live now, without any cycle's floating garbage: the one measure from here on.
      recent.length = 0;
      remember(oldBytes);
    },
  };
}

const oldSpaceBytes = (): number => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')?.space_used_size ?? 0;

/**
 * Watches this process's full GCs and collects again after one that kept far more than the recent
 * ones (above). Process-wide: for entry points (src/main.ts, the bench target), not for code a test
 * imports. V8's `gc` comes from a new context after `--expose-gc` is set at run time (as
 * jest-leak-detector gets it); the main context gets no `gc` global. Does nothing where V8 gives no `gc`.
 */
export function recheckFloatingGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as unknown;
  // Off again at once: contexts made from here on (vm, workers' own) get no `gc` of their own.
  v8.setFlagsFromString('--no-expose-gc');
  if (typeof gc !== 'function') return;
  const check = createFloatingGarbageCheck();
  // Node 20 and 24 report no entry for a GC run inside this callback; should a Node report one, an
  // entry of a GC that began before the extra one ended is not taken for V8's own.
  let ownUntil = 0;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if ((entry as { detail?: { kind?: number } | null }).detail?.kind !== constants.NODE_PERFORMANCE_GC_MAJOR || entry.startTime < ownUntil) continue;
      if (!check.afterFullGc(oldSpaceBytes(), performance.now())) continue;
      (gc as () => void)();
      ownUntil = performance.now();
      check.collected(oldSpaceBytes(), ownUntil);
    }
  });
  observer.observe({ entryTypes: ['gc'] });
}
