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
 * How many malloc arenas glibc may make (MALLOC_ARENA_MAX). Left to itself glibc gives every thread
 * that allocates an arena of its own, up to 8 per core, and an arena keeps the high-water mark of
 * what its thread once held. At the page cell's peak on Node 24 the memory outside V8's heap was
 * 156 MB against Node 20's 94 (quiet machine); on a busy one the thread arenas held 25-37 MB in 12-14
 * arenas. With 2 the threads reuse each other's free memory: 10-19 MB in 2-4 arenas (the main one
 * takes part of the rest), the page's peak RSS 226-246 -> 209-210 MB at 20,000 patients, 210-245
 * -> 207-240 MB at 100,000, and 252-256 -> 242 MB on a quiet machine; CPU per page unchanged
 * (bench/README.md, "Node 24's peak RSS outside the heap"). glibc reads it only when a process starts.
 */
export const MALLOC_ARENA_MAX = 2;

/**
 * The request size, in bytes, from which glibc serves a malloc with a mapping of its own and unmaps
 * it on free (MALLOC_MMAP_THRESHOLD_). Left to itself glibc starts at 128 KB and raises the threshold
 * to the largest block freed so far, so blocks of up to 32 MB end up inside its heaps, where one
 * live block above them keeps every free page below resident. At Node 24's page peak glibc's brk
 * heap and second arena held 36-70 MB, 16-27 MB apart between processes of one run; from 32 KB up
 * each block is a mapping of its own, unmapped when freed, and they held 23-36 MB. Live blocks of
 * that size take part of it back as mappings, so the page's peak RSS fell by 10 MB on the mean of
 * three runs near the quiet rate, and by none in the quietest (bench/README.md, "Node 24's page
 * peak: glibc's mmap threshold"), for 1-3 mmap/munmap pairs and 15-46 page faults per page.
 * A fixed value also turns glibc's raising of it off. glibc reads it only when a process starts.
 */
export const MALLOC_MMAP_THRESHOLD_BYTES = 32 * 1024;

/**
 * V8's flag that lets a scavenge run while a full GC marks, as V8 did up to 12.x (Node 20 and 22).
 * Node 24's V8 (13.6) turns "separate GC phases" on: while a full GC's incremental marking runs, it
 * does not scavenge; when new space is full it adds pages beyond the semi-space cap instead
 * (SemiSpaceNewSpace::AllocateOnNewPageBeyondCapacity, through ShouldExpandYoungGenerationOnSlowAllocation),
 * until marking ends or the old generation overshoots its limit by max(limit / 2, 32 MB). Under the
 * page's load a full GC marks for tens to hundreds of milliseconds, and new space reached 45-56 MB at
 * the page's peak with a 16 MB cap, at the moment the old space is at its largest, since marking
 * starts near its limit; V8's page pool keeps those pages resident after. With scavenges during
 * marking, new space stays at its two semi-spaces (32.0 MB in every run) and the heap's largest size
 * under the page's load went from 105.7-128.2 MB (mean 115.6) to 106.4-112.7 (mean 108.9), 14 runs
 * each, for ~5% more scavenges, shorter full-GC pauses and the same CPU per page within the noise
 * (bench/README.md, "Node 24's young generation above its cap"). Node 20 and 22 scavenge during
 * marking by default.
 */
export const SCAVENGE_DURING_MARKING_FLAG = '--no-separate-gc-phases';

/** Each `node` flag the gateway's process starts with, and what says that the operator gave it (or its opposite). */
const V8_SETTINGS = [
  { flag: `--max-semi-space-size=${MAX_SEMI_SPACE_MB}`, given: /--max[-_]semi[-_]space[-_]size\b/ },
  { flag: SCAVENGE_DURING_MARKING_FLAG, given: /--(no-?)?separate[-_]gc[-_]phases\b/ },
] as const;

/** The `node` flags the gateway's process starts with (V8 reads them only when it makes the heap). */
export const STARTUP_FLAGS: readonly string[] = V8_SETTINGS.map((s) => s.flag);

/** glibc's settings the gateway starts with: each variable, and the tunable (GLIBC_TUNABLES) that sets the same. */
const GLIBC_SETTINGS = [
  { variable: 'MALLOC_ARENA_MAX', tunable: 'glibc.malloc.arena_max', value: MALLOC_ARENA_MAX },
  { variable: 'MALLOC_MMAP_THRESHOLD_', tunable: 'glibc.malloc.mmap_threshold', value: MALLOC_MMAP_THRESHOLD_BYTES },
] as const;

/** The environment the gateway's process starts with (glibc reads it only at its first malloc). */
export const STARTUP_ENV: Readonly<Record<string, string>> = Object.fromEntries(GLIBC_SETTINGS.map((s) => [s.variable, String(s.value)]));

/**
 * The command line and environment to start this process again with, so that STARTUP_FLAGS and
 * STARTUP_ENV take effect; null when they already do. A setting the operator gave (a semi-space size
 * on the command line or in NODE_OPTIONS; `--separate-gc-phases` or its `--no-` form on the command
 * line; a glibc variable of STARTUP_ENV, or its tunable in GLIBC_TUNABLES) is kept as given, and
 * whatever else was on the command line stays.
 */
export function startupRelaunch(
  execArgv: readonly string[],
  argv: readonly string[],
  env: Readonly<NodeJS.ProcessEnv>,
): { args: string[]; env: NodeJS.ProcessEnv } | null {
  const given = `${execArgv.join(' ')} ${env.NODE_OPTIONS ?? ''}`;
  const flags = V8_SETTINGS.filter((s) => !s.given.test(given)).map((s) => s.flag);
  const tunables = (env.GLIBC_TUNABLES ?? '').split(':').map((t) => t.split('=')[0]);
  const missing = GLIBC_SETTINGS.filter((s) => env[s.variable] === undefined && !tunables.includes(s.tunable));
  const extraEnv = Object.fromEntries(missing.map((s) => [s.variable, String(s.value)]));
  if (flags.length === 0 && Object.keys(extraEnv).length === 0) return null;
  return { args: [...flags, ...execArgv, ...argv.slice(1)], env: { ...env, ...extraEnv } };
}

/**
 * Replaces this process, keeping its pid, with one started with STARTUP_FLAGS and STARTUP_ENV, when
 * they are not in effect and Node can (`process.execve`: Node 22.15 and 23.11 on; Node 20 runs as
 * started: its semi-space default is the cap already, its V8 scavenges during marking by default,
 * and glibc's settings are then its own defaults). Call it first thing in an entry point, before anything is listening or open: nothing
 * of this process survives, and the same pid means no launcher stands between a signal and the
 * gateway. Returns when nothing needs doing, or when the restart is refused.
 */
export function relaunchWithStartupSettings(): void {
  const node = process as NodeJS.Process & { execve?: (file: string, args: string[], env: NodeJS.ProcessEnv) => never };
  if (typeof node.execve !== 'function') return;
  const relaunch = startupRelaunch(process.execArgv, process.argv, process.env);
  if (!relaunch) return;
  try {
    node.execve(process.execPath, [process.execPath, ...relaunch.args], relaunch.env);
  } catch (err) {
    // Refused (e.g. under `--permission` without child processes): the gateway runs as started.
    process.stderr.write(`phigate: could not restart itself with its V8 flags and glibc's malloc settings (${(err as { code?: string }).code ?? 'error'}); running without them\n`);
  }
}

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
