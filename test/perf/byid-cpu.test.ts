import { createHook } from 'node:async_hooks';
import { Session } from 'node:inspector/promises';
import { readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';
import { loadPolicy } from '../../src/policy/load.ts';
import { POLICY_FILE, startTestGateway, type TestGateway } from '../support/gateway.ts';

// The gateway's CPU per read by id, in one process (bench/README.md, "The gateway's own CPU per read
// by id, second round"): a measurement, not a check, so it runs only when asked:
//   PHIGATE_PERF_BYID=1 TEST_DATABASE_URL=... npx vitest run test/perf/byid-cpu.test.ts
// PHIGATE_PERF_OTHER=<another checkout> starts that tree's gateway beside this one's, in the same
// process, and alternates rounds between the two: both see the same machine, so a busy machine moves
// both alike. It prints one JSON line. The client speaks node:http with callbacks (no promises of
// its own), so the promises counted are the gateway's, its pg clients' and its audit writer's.

const CONCURRENCY = Number(process.env.PHIGATE_PERF_CONCURRENCY ?? 8);
const WARMUP = Number(process.env.PHIGATE_PERF_WARMUP ?? 6_000);
const ROUND = Number(process.env.PHIGATE_PERF_ROUND ?? 1_500);
const ROUNDS = Number(process.env.PHIGATE_PERF_ROUNDS ?? 7);
const BY_ID = 'query ($id: ID!) { patient(id: $id) { id givenName familyName birthDate mrn } }';

interface Prepared {
  readonly headers: http.OutgoingHttpHeaders;
  readonly body: string;
}

function run(url: URL, requests: readonly Prepared[], count: number, concurrency: number): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  let sent = 0;
  let done = 0;
  return new Promise((resolve, reject) => {
    const next = (): void => {
      if (sent === count) return;
      const r = requests[sent++ % requests.length]!;
      const req = http.request(url, { method: 'POST', agent, headers: r.headers }, (res) => {
        if (res.statusCode !== 200) return reject(new Error(`status ${res.statusCode}`));
        res.on('data', () => {});
        res.on('end', () => {
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
}

describe.skipIf(!process.env.PHIGATE_PERF_BYID)('the gateway CPU per read by id', () => {
  const sides: Side[] = [];
  const policyFile = path.join(os.tmpdir(), `phigate-perf-policy-${process.pid}.yaml`);
  beforeAll(async () => {
    // The default policy with its per-minute PHI limits out of the way, as bench/run.ts does.
    const text = await readFile(POLICY_FILE, 'utf8');
    await writeFile(policyFile, text.replace(/rowsPerMinute: \d+, phiValuesPerMinute: \d+/g, 'rowsPerMinute: 1000000000, phiValuesPerMinute: 1000000000'));
    const trees: Array<[string, typeof startTestGateway]> = [['this', startTestGateway]];
    const other = process.env.PHIGATE_PERF_OTHER;
    if (other) {
      const support = (await import(/* @vite-ignore */ path.resolve(other, 'test/support/gateway.ts'))) as { startTestGateway: typeof startTestGateway };
      trees.push(['other', support.startTestGateway]);
    }
    for (const [name, start] of trees) {
      const gw = await start({ patients: 200, poolSize: 10, gatewayOptions: { policy: await loadPolicy(policyFile, PHI_FIELDS) } });
      const north = gw.data.patients.filter((p) => p.clinicId === 'c-north');
      const requests: Prepared[] = [];
      for (let i = 0; i < 200; i++) {
        const token = await gw.issuer.token({ sub: `reg-perf-${i}`, roles: ['registrar'], clinics: ['c-north'], mfa: true });
        const body = JSON.stringify({ query: BY_ID, variables: { id: north[i % north.length]!.id } });
        requests.push({ body, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: `Bearer ${token}` } });
      }
      sides.push({ name, gw, url: new URL(gw.url), requests, cpu: [] });
    }
  }, 120_000);
  afterAll(async () => {
    try {
      for (const side of sides.reverse()) await side.gw.close();
    } finally {
      await rm(policyFile, { force: true });
    }
  });

  it('measures', async () => {
    for (let done = 0; done < WARMUP; done += 500) for (const side of sides) await run(side.url, side.requests, 500, CONCURRENCY);

    const profiler = new Session();
    profiler.connect();
    const counts: Record<string, { promises: number; bytes: number }> = {};
    for (const side of sides) {
      let promises = 0;
      const hook = createHook({
        init: (_id, type) => {
          if (type === 'PROMISE') promises++;
        },
      });
      hook.enable();
      await run(side.url, side.requests, 500, CONCURRENCY);
      hook.disable();
      // Allocations, sampled every 4 KiB, counting what the young and old collections freed too.
      await profiler.post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true } as never);
      await run(side.url, side.requests, 500, CONCURRENCY);
      const { profile } = await profiler.post('HeapProfiler.stopSampling');
      const bytes = allocated(profile.head);
      // PHIGATE_PERF_HEAP=file.heapprofile: where this tree's allocations are made.
      if (process.env.PHIGATE_PERF_HEAP && side.name === 'this') await writeFile(process.env.PHIGATE_PERF_HEAP, JSON.stringify(profile));
      counts[side.name] = { promises: promises / 500, bytes: Math.round(bytes / 500) };
    }

    // PHIGATE_PERF_PROFILE=file.cpuprofile: a CPU profile of the measured rounds.
    if (process.env.PHIGATE_PERF_PROFILE) {
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.start');
    }
    for (let r = 0; r < ROUNDS; r++) {
      // The order alternates, so that neither side always follows the other.
      for (const side of r % 2 === 0 ? sides : [...sides].reverse()) {
        const before = process.cpuUsage();
        await run(side.url, side.requests, ROUND, CONCURRENCY);
        const used = process.cpuUsage(before);
        side.cpu.push((used.user + used.system) / 1000 / ROUND);
      }
    }
    if (process.env.PHIGATE_PERF_PROFILE) {
      const { profile } = await profiler.post('Profiler.stop');
      await writeFile(process.env.PHIGATE_PERF_PROFILE, JSON.stringify(profile));
    }
    profiler.disconnect();
    const result = {
      sides: Object.fromEntries(
        sides.map((s) => [s.name, { cpuMsPerRead: round3(median(s.cpu)), rounds: s.cpu.map(round3), promisesPerRead: counts[s.name]!.promises, bytesPerRead: counts[s.name]!.bytes }]),
      ),
      // Per round, this tree's CPU per read less the other's: the figure the machine's load moves least.
      ...(sides.length === 2 ? { differenceMs: round3(median(sides[0]!.cpu.map((c, i) => c - sides[1]!.cpu[i]!))) } : {}),
      load: os.loadavg().map((x) => Number(x.toFixed(1))),
    };
    process.stdout.write(`BYID ${JSON.stringify(result)}\n`);
    for (const side of sides) expect(side.cpu).toHaveLength(ROUNDS);
  }, 900_000);
});
