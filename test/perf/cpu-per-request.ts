import { createHook } from 'node:async_hooks';
import { Session } from 'node:inspector/promises';
import { readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';
import { loadPolicy } from '../../src/policy/load.ts';
import { POLICY_FILE, startTestGateway, type TestGateway } from '../support/gateway.ts';

// The gateway's CPU per request of one kind, in one process: a measurement, not a check, so it runs
// only when its variable is set. PHIGATE_PERF_OTHER=<another checkout> starts that tree's gateway
// beside this one's, in the same process, and alternates rounds between the two: both see the same
// machine, so a busy machine moves both alike. It prints one JSON line. The client speaks node:http
// with callbacks (no promises of its own), so the promises counted are the gateway's, its pg
// clients' and its audit writer's.

export interface Prepared {
  readonly headers: http.OutgoingHttpHeaders;
  readonly body: string;
}

export interface CpuPerRequestOptions {
  /** The line's prefix and the describe block's name. */
  readonly label: string;
  /** The environment variable that turns the measurement on. */
  readonly enabledBy: string;
  readonly patients: number;
  readonly warmup: number;
  readonly round: number;
  readonly rounds: number;
  readonly concurrency: number;
  /** The requests a side sends, in turn. */
  prepare(gw: TestGateway): Promise<Prepared[]>;
  /** A reason to refuse an answer's body, or null: checked on a sample before measuring. */
  check(body: string): string | null;
}

function run(url: URL, requests: readonly Prepared[], count: number, concurrency: number, bodies?: string[]): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  let sent = 0;
  let done = 0;
  return new Promise((resolve, reject) => {
    const next = (): void => {
      if (sent === count) return;
      const r = requests[sent++ % requests.length]!;
      const req = http.request(url, { method: 'POST', agent, headers: r.headers }, (res) => {
        if (res.statusCode !== 200) return reject(new Error(`status ${res.statusCode}`));
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => bodies && chunks.push(chunk));
        res.on('end', () => {
          bodies?.push(Buffer.concat(chunks).toString('utf8'));
          if (++done === count) {
            agent.destroy();
            resolve();
          } else next();
        });
      });
      req.on('error', reject);
      req.end(r.body);
    };
    for (let i = 0; i < concurrency; i++) next();
  });
}

export function bearer(body: string, token: string): Prepared {
  return { body, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: `Bearer ${token}` } };
}

const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
interface AllocationNode {
  readonly selfSize: number;
  readonly children: readonly AllocationNode[];
}
const allocated = (node: AllocationNode): number => node.children.reduce((n, child) => n + allocated(child), node.selfSize);
const round3 = (x: number): number => Number(x.toFixed(3));

interface Side {
  readonly name: string;
  readonly gw: TestGateway;
  readonly url: URL;
  readonly requests: Prepared[];
  readonly cpu: number[];
  /** Of `cpu`, the kernel's share (system time): socket writes and reads on loopback. */
  readonly system: number[];
  /** Per round, bytes per request the scavenges moved into the old space (as promoted-per-request.test.ts counts them). */
  readonly promoted: number[];
  /** Per round, ms per request of GC pauses on the main thread (wall time). */
  readonly gc: number[];
}

const oldSpaceUsed = (): number => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')!.space_used_size;

export function describeCpuPerRequest(o: CpuPerRequestOptions): void {
  describe.skipIf(!process.env[o.enabledBy])(o.label, () => {
    const sides: Side[] = [];
    const policyFile = path.join(os.tmpdir(), `phigate-perf-policy-${process.pid}.yaml`);
    beforeAll(async () => {
      // The default policy with its PHI limits as bench/run.ts sets them: a page of 100, no minute caps.
      const text = await readFile(POLICY_FILE, 'utf8');
      await writeFile(policyFile, text.replace(/limits: \{[^}]*\}/g, 'limits: { rowsPerRequest: 100, phiValuesPerRequest: 2000, rowsPerMinute: 1000000000, phiValuesPerMinute: 1000000000 }'));
      const trees: Array<[string, typeof startTestGateway]> = [['this', startTestGateway]];
      const other = process.env.PHIGATE_PERF_OTHER;
      if (other) {
        const support = (await import(/* @vite-ignore */ path.resolve(other, 'test/support/gateway.ts'))) as { startTestGateway: typeof startTestGateway };
        trees.push(['other', support.startTestGateway]);
      }
      for (const [name, start] of trees) {
        const gw = await start({ patients: o.patients, poolSize: 10, gatewayOptions: { policy: await loadPolicy(policyFile, PHI_FIELDS) } });
        sides.push({ name, gw, url: new URL(gw.url), requests: await o.prepare(gw), cpu: [], system: [], promoted: [], gc: [] });
      }
    }, 300_000);
    afterAll(async () => {
      try {
        for (const side of sides.reverse()) await side.gw.close();
      } finally {
        await rm(policyFile, { force: true });
      }
    });

    it('measures', async () => {
      for (const side of sides) {
        const bodies: string[] = [];
        await run(side.url, side.requests, Math.min(side.requests.length, 20), 1, bodies);
        for (const body of bodies) expect(o.check(body)).toBeNull();
      }
      const step = Math.max(1, Math.floor(o.warmup / 10));
      for (let done = 0; done < o.warmup; done += step) for (const side of sides) await run(side.url, side.requests, step, o.concurrency);

      const profiler = new Session();
      profiler.connect();
      const counts: Record<string, { promises: number; bytes: number }> = {};
      // PHIGATE_PERF_SAMPLE: requests per side in the allocation sample (default one round's).
      const sample = Number(process.env.PHIGATE_PERF_SAMPLE ?? o.round);
      for (const side of sides) {
        let promises = 0;
        const hook = createHook({
          init: (_id, type) => {
            if (type === 'PROMISE') promises++;
          },
        });
        hook.enable();
        await run(side.url, side.requests, sample, o.concurrency);
        hook.disable();
        // Allocations, sampled every 4 KiB, counting what the young and old collections freed too.
        await profiler.post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true } as never);
        await run(side.url, side.requests, sample, o.concurrency);
        const { profile } = await profiler.post('HeapProfiler.stopSampling');
        const bytes = allocated(profile.head);
        // PHIGATE_PERF_HEAP=file.heapprofile: where this tree's allocations are made.
        if (process.env.PHIGATE_PERF_HEAP && side.name === 'this') await writeFile(process.env.PHIGATE_PERF_HEAP, JSON.stringify(profile));
        counts[side.name] = { promises: promises / sample, bytes: Math.round(bytes / sample) };
      }

      // PHIGATE_PERF_PROFILE=file.cpuprofile: a CPU profile of the measured rounds.
      if (process.env.PHIGATE_PERF_PROFILE) {
        await profiler.post('Profiler.enable');
        await profiler.post('Profiler.start');
      }
      // The old space's growth across each scavenge is what it promoted; a full GC's entry only
      // moves the baseline. Counted for the side whose round is running.
      let grown = 0;
      let paused = 0;
      let last = oldSpaceUsed();
      const observer = new PerformanceObserver((list) => {
        for (const e of list.getEntries()) {
          const now = oldSpaceUsed();
          paused += e.duration;
          if ((e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === 1) grown += Math.max(0, now - last);
          last = now;
        }
      });
      observer.observe({ entryTypes: ['gc'] });
      for (let r = 0; r < o.rounds; r++) {
        // The order alternates, so that neither side always follows the other.
        for (const side of r % 2 === 0 ? sides : [...sides].reverse()) {
          grown = 0;
          paused = 0;
          last = oldSpaceUsed();
          const before = process.cpuUsage();
          await run(side.url, side.requests, o.round, o.concurrency);
          const used = process.cpuUsage(before);
          side.cpu.push((used.user + used.system) / 1000 / o.round);
          side.system.push(used.system / 1000 / o.round);
          side.promoted.push(grown / o.round);
          side.gc.push(paused / o.round);
        }
      }
      observer.disconnect();
      if (process.env.PHIGATE_PERF_PROFILE) {
        const { profile } = await profiler.post('Profiler.stop');
        await writeFile(process.env.PHIGATE_PERF_PROFILE, JSON.stringify(profile));
      }
      profiler.disconnect();
      const result = {
        sides: Object.fromEntries(
          sides.map((s) => [s.name, { cpuMsPerRequest: round3(median(s.cpu)), systemMsPerRequest: round3(median(s.system)), rounds: s.cpu.map(round3), promisesPerRequest: counts[s.name]!.promises, bytesPerRequest: counts[s.name]!.bytes, promotedBytesPerRequest: Math.round(median(s.promoted)), promotedRounds: s.promoted.map((p) => Math.round(p / 1024)), gcMsPerRequest: round3(median(s.gc)) }]),
        ),
        // Per round, this tree's CPU per request less the other's: the figure the machine's load moves least.
        ...(sides.length === 2
          ? {
              differenceMs: round3(median(sides[0]!.cpu.map((c, i) => c - sides[1]!.cpu[i]!))),
              lowerRounds: sides[0]!.cpu.filter((c, i) => c < sides[1]!.cpu[i]!).length,
              promotedDifference: Math.round(median(sides[0]!.promoted.map((p, i) => p - sides[1]!.promoted[i]!))),
            }
          : {}),
        load: os.loadavg().map((x) => Number(x.toFixed(1))),
        node: process.version,
      };
      process.stdout.write(`${o.label} ${JSON.stringify(result)}\n`);
      for (const side of sides) expect(side.cpu).toHaveLength(o.rounds);
    }, 1_800_000);
  });
}
