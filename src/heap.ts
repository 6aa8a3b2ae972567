import v8 from 'node:v8';

/**
 * How far, in percent, V8 may let the old generation grow past what survived the last full GC
 * before it collects again.
 *
 * Left to itself V8 picks that factor from the heap limit, and on a host with 16 GB or more (heap
 * limit 4 GB) it allows up to 4x. Under load almost everything a request allocates outlives two
 * scavenges (a request lasts far longer than the tens of milliseconds between them) and is
 * promoted, so the old generation fills with dead requests: ~25-35 MB survive each full GC, yet
 * the old space reached 95 MB on single-patient reads and 135-165 MB on pages of 100 before it
 * was collected, and the Buffers those dead requests hold (pg reads, decrypted fields) waited
 * with it. At 50% the old space peaks around 40-55 MB and the gateway's peak RSS fell from
 * 236-315 MB to 158-189 MB (bench, 32 connections); CPU per request did not move beyond the
 * run-to-run noise: full GCs are 4-5x more frequent, but each marks the same ~30 MB of live objects.
 */
export const HEAP_GROWING_PERCENT = 50;

/**
 * The young generation's cap per semi-space, in MB: what Node 20 picks for a 4 GB heap limit.
 * Node 24's V8 lets new space grow to 128 MB instead of 32, and the gateway's peak RSS on pages of
 * 100 went from ~180 to ~300 MB (bench, 32 connections); with this cap a synthetic churn of the
 * same shape peaks at 219 MB on 24 against 200 on 20. V8 sizes new space when the heap is made,
 * so this one goes on the command line (`node --max-semi-space-size=16`, as the Dockerfile and
 * the bench's phigate target start it; NODE_OPTIONS accepts it too), not through setFlagsFromString.
 */
export const MAX_SEMI_SPACE_MB = 16;

/**
 * Applies HEAP_GROWING_PERCENT to this process, unless `node --heap-growing-percent=N` was given
 * (V8 refuses that flag in NODE_OPTIONS, so an operator's override goes on the command line).
 * V8 reads the flag each time it sets the next full-GC limit, so setting it at start-up works.
 * Process-wide: for entry points (src/main.ts, the bench target), not for code a test imports.
 */
export function limitHeapGrowth(): void {
  if (process.execArgv.some((arg) => /^--heap[-_]growing[-_]percent\b/.test(arg))) return;
  v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
