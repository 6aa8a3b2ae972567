/**
 * `npx tsx --expose-gc bench/in-flight.ts [--patients N | --keep-database | --reuse-database NAME] [--parked K --workloads by-id,page --snapshot DIR | --load R]`
 *
 * What a read holds on the gateway's heap while it waits for its audit batch (issue 10, RSS on
 * Node 24). The gateway is bench/targets/phigate.ts's (assemblePhigate), in process, on a
 * seeded bench database (BENCH_DATABASE_URL's cluster, or embedded); its audit writer is wrapped so
 * that K reads of each workload park before their batch, exactly where settleRead awaits it. With
 * the K reads parked and after a full GC, the heap (used, external, ArrayBuffers) less the same
 * figure with nothing in flight is what K reads retain. The K requests come from a child process,
 * so that the client's own sockets and buffers are not counted. --snapshot writes heap snapshots
 * before and with the reads parked (last round), and prints the constructors whose objects grew most.
 *
 * --load R instead answers R requests per workload from K connections in a closed loop (after R/4
 * to warm up) and prints the process's peak RSS, heapTotal and old space (with every heap space,
 * external memory and heapTotal's high-water at that peak), and its CPU per request:
 * counted by requests rather than by time, so a shared machine changes the rate, not what is measured.
 * Run it on the image's Node with its flags (src/heap.ts's STARTUP_FLAGS and STARTUP_ENV). Seeding in
 * the measured process leaves its heap's high-water and glibc's heaps behind it: for --load, seed
 * once with --keep-database (BENCH_DATABASE_URL) and measure with --reuse-database NAME. It also
 * prints the largest heapTotal and new space while the measured requests ran, and their GCs by kind.
 */
import { fork } from 'node:child_process';
import http from 'node:http';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PerformanceObserver, constants as perfConstants } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import type { AuditEntry, AuditWriter, Coming, Written } from '../src/audit/writer.ts';
import { loadConfig } from '../src/config.ts';
import { useAead } from '../src/crypto/aead.ts';
import { limitHeapGrowth } from '../src/heap.ts';
import { createLogger } from '../src/log.ts';
import { startTestIssuer } from '../test/support/oidc-issuer.ts';
import { newMasterKey, openBenchDatabase, reopenBenchDatabase, saveKeptKey, seedBenchDatabase } from './setup-db.ts';
import { assemblePhigate } from './targets/phigate.ts';
import { actorsFrom, workloads, type BenchRequest } from './workloads.ts';

const CLIENT = process.argv[2] === '--client';

/** The child: sends every request of BENCH_REQUESTS at once, reports when all are answered. */
async function client(): Promise<void> {
  const { port, requests, total } = JSON.parse(process.env.BENCH_REQUESTS!) as { port: number; requests: BenchRequest[]; total?: number };
  const agent = new http.Agent({ keepAlive: true, maxSockets: requests.length });
  // --load: each of the connections sends its next request when its last is answered, until `total`.
  let sent = requests.length;
  const loop = async (r: BenchRequest): Promise<number[]> => {
    const codes = [await send(r)];
    while (total !== undefined && sent < total) {
      sent++;
      codes.push(await send(requests[sent % requests.length]!));
    }
    return codes;
  };
  const send = (r: BenchRequest) =>
    new Promise<number>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method: r.method, path: r.path, headers: r.headers, agent }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end(r.body);
    });
  process.on('message', async () => {
    const codes = (await Promise.all(requests.map(loop))).flat();
    process.send!({ codes });
  });
  process.send!({ ready: true });
}

if (CLIENT) {
  await client();
} else {
  await main();
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      patients: { type: 'string', default: '3000' },
      parked: { type: 'string', default: '32' },
      snapshot: { type: 'string' },
      workloads: { type: 'string', default: 'by-id,page' },
      load: { type: 'string' },
      'keep-database': { type: 'boolean', default: false },
      'reuse-database': { type: 'string' },
    },
  });
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with node --expose-gc (npx tsx --expose-gc bench/in-flight.ts)');
  const K = Number(args.parked);
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const reuse = args['reuse-database'];
  const reopened = reuse === undefined ? null : await reopenBenchDatabase(log, reuse);
  const db = reopened?.db ?? (await openBenchDatabase(log, { keep: args['keep-database'] }));
  const work = await mkdtemp(path.join(os.tmpdir(), 'phigate-in-flight-'));
  const masterKey = reopened?.masterKey ?? newMasterKey();
  if (!reopened && args['keep-database']) log(`its master key: ${await saveKeptKey(db.name, masterKey)} (for --reuse-database ${db.name})`);
  const seeded = reopened?.seeded ?? (await seedBenchDatabase(db, { patients: Number(args.patients), seed: 42, masterKey }));
  const policyFile = path.join(work, 'policy.yaml');
  const policy = (await readFile(path.join(import.meta.dirname, '../policies/default.yaml'), 'utf8')).replace(
    /limits: \{[^}]*\}/g,
    'limits: { rowsPerRequest: 100, phiValuesPerRequest: 2000, rowsPerMinute: 1000000000, phiValuesPerMinute: 1000000000 }',
  );
  await writeFile(policyFile, policy);
  const issuer = await startTestIssuer({ dir: work });
  const actors = await actorsFrom(seeded.actors, (sub, roles, clinics) => issuer.token({ sub, roles, clinics, mfa: true, ttlSeconds: 3600 }), async () => '');

  useAead(loadConfig({}).aead);
  // Parked entries wait here as they would in the writer's queue: the entry and its promise.
  let parking = false;
  const parked: Array<() => void> = [];
  const parkingWriter = (real: AuditWriter): AuditWriter => ({
    get saturated() {
      return real.saturated;
    },
    get stats() {
      return real.stats;
    },
    record: (request, events) => real.record(request, events),
    close: () => real.close(),
    expect: (request) => real.expect(request),
    write(entry: AuditEntry, coming?: Coming): Promise<Written> {
      if (!parking) return real.write(entry, coming);
      return new Promise((resolve, reject) => parked.push(() => void real.write(entry, coming).then(resolve, reject)));
    },
  });
  // The bench target's gateway (bench/targets/phigate.ts), gathering included, in this process.
  const phigate = await assemblePhigate({
    appUrl: db.appUrl,
    issuer: issuer.issuer,
    masterKey,
    policyFile,
    poolSize: 10,
    connectionTimeoutMs: 120_000,
    logger: createLogger('warn', { write: () => undefined }),
    writer: parkingWriter,
  });
  const { gateway } = phigate;
  const { port } = await gateway.listen(0, '127.0.0.1');

  const MB = 2 ** 20;
  const settle = async () => {
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
    const m = process.memoryUsage();
    return { heapUsed: m.heapUsed / MB, external: m.external / MB, arrayBuffers: m.arrayBuffers / MB };
  };
  const batch = async (requests: BenchRequest[], park: boolean, snapshot: string | null, total?: number) => {
    // The idle snapshot is written before the child connects: its sockets are not the gateway's.
    const child = fork(import.meta.filename, ['--client'], { execArgv: ['--import', 'tsx'], env: { ...process.env, BENCH_REQUESTS: JSON.stringify({ port, requests, total }) } });
    await new Promise((r) => child.once('message', r));
    const before = await settle();
    if (snapshot) v8.writeHeapSnapshot(`${snapshot}.idle`);
    parking = park;
    const answered = new Promise<{ codes: number[] }>((r) => child.once('message', r as never));
    child.send('go');
    let during = before;
    if (park) {
      while (parked.length < requests.length) await new Promise((r) => setTimeout(r, 20));
      during = await settle();
      if (snapshot) v8.writeHeapSnapshot(snapshot);
      parking = false;
      for (const release of parked.splice(0)) release();
    }
    const { codes } = await answered;
    child.kill();
    if (codes.some((c) => c !== 200)) throw new Error(`answers other than 200: ${codes.join(',')}`);
    return { before, during };
  };

  const all = workloads(actors);
  if (args.load !== undefined) {
    // The process's peak under a closed loop of K connections, by requests answered rather than by
    // time, so that a shared machine's load changes the rate but not what is measured; then its CPU per request.
    limitHeapGrowth();
    let peak = { rss: 0, heapTotal: 0, oldSpace: 0 };
    let peakDetail: Record<string, number> = {};
    // Node 24's V8 keeps freed heap pages resident until a memory-reducing GC: its heap's share
    // of RSS is the largest heapTotal so far (bench/targets/phigate.ts).
    let heapTotalHighWater = 0;
    // The largest heapTotal and new space while the measured requests run: the warm-up's first full
    // GCs under load can leave a higher high-water (kept by the pool) than the steady state's, and
    // on Node 24 new space outgrows its two semi-spaces while a full GC marks, not only at the RSS peak.
    let measured = { heapTotal: 0, newSpace: 0 };
    setInterval(() => {
      const heapTotal = v8.getHeapStatistics().total_heap_size / MB;
      const newSpace = v8.getHeapSpaceStatistics().find((x) => x.space_name === 'new_space')!.space_size / MB;
      heapTotalHighWater = Math.max(heapTotalHighWater, heapTotal);
      measured = { heapTotal: Math.max(measured.heapTotal, heapTotal), newSpace: Math.max(measured.newSpace, newSpace) };
      const rss = process.memoryUsage.rss() / MB;
      if (rss <= peak.rss) return;
      const spaces = v8.getHeapSpaceStatistics();
      const old = spaces.find((x) => x.space_name === 'old_space')!;
      const m = process.memoryUsage();
      peak = { rss, heapTotal: m.heapTotal / MB, oldSpace: old.space_size / MB };
      peakDetail = { heapUsed: m.heapUsed / MB, external: m.external / MB, arrayBuffers: m.arrayBuffers / MB };
      for (const x of spaces) peakDetail[x.space_name] = x.space_size / MB;
    }, 20).unref();
    // Which collections the measured requests cost: a scavenge, and a full GC, are counted by kind.
    const gcs = { minor: 0, major: 0 };
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        const kind = (e as { detail?: { kind?: number } }).detail?.kind;
        if (kind === perfConstants.NODE_PERFORMANCE_GC_MINOR) gcs.minor++;
        if (kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) gcs.major++;
      }
    }).observe({ entryTypes: ['gc'] });
    for (const id of args.workloads.split(',')) {
      const w = all.find((x) => x.id === id)!;
      const requests = Array.from({ length: K }, () => w.next('phigate'));
      await batch(requests, false, null, Number(args.load) / 4);
      peak = { rss: 0, heapTotal: 0, oldSpace: 0 };
      peakDetail = {};
      measured = { heapTotal: 0, newSpace: 0 };
      gcs.minor = 0;
      gcs.major = 0;
      const cpu = process.cpuUsage();
      const t0 = performance.now();
      await batch(requests, false, null, Number(args.load));
      const used = process.cpuUsage(cpu);
      const s = (performance.now() - t0) / 1000;
      log(
        `${w.name}: ${args.load} requests at ${K} connections, ${(Number(args.load) / s).toFixed(0)}/s: peak RSS ${peak.rss.toFixed(0)} MB (heapTotal ${peak.heapTotal.toFixed(0)}, old space ${peak.oldSpace.toFixed(0)}), ` +
          `CPU ${((used.user + used.system) / 1000 / Number(args.load)).toFixed(2)} ms per request; ${gcs.minor} scavenges, ${gcs.major} full GCs`,
      );
      log(
        `  at the peak, MB: ${Object.entries(peakDetail).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}; heapTotal's high-water so far ${heapTotalHighWater.toFixed(1)}, ` +
          `while measured ${measured.heapTotal.toFixed(1)}; new space's largest while measured ${measured.newSpace.toFixed(1)}`,
      );
    }
  }
  for (const id of args.load === undefined ? args.workloads.split(',') : []) {
    const w = all.find((x) => x.id === id)!;
    // Warm: the JIT, the key cache, yoga's caches, and the pool's connections.
    for (let i = 0; i < 5; i++) await batch(Array.from({ length: K }, () => w.next('phigate')), false, null);
    for (let round = 1; round <= 3; round++) {
      const snap = args.snapshot && round === 3 ? path.join(args.snapshot, `${id}-parked.heapsnapshot`) : null;
      const { before, during } = await batch(Array.from({ length: K }, () => w.next('phigate')), true, snap);
      const d = (k: keyof typeof before) => ((during[k] - before[k]) * 1024) / K;
      log(
        `${w.name}: ${K} parked, per request KB: heapUsed ${d('heapUsed').toFixed(1)}, external ${d('external').toFixed(1)} (ArrayBuffers ${d('arrayBuffers').toFixed(1)}); ` +
          `heapUsed MB ${before.heapUsed.toFixed(1)} -> ${during.heapUsed.toFixed(1)}`,
      );
      if (snap) await summarise(`${snap}.idle`, snap, K, log);
    }
  }
  await phigate.close();
  await issuer.close();
  await db.close({ keep: args['keep-database'] });
  process.exit(0);
}

/** The constructors whose objects' self sizes grew most from the idle snapshot to the parked one, per parked request. */
async function summarise(idle: string, parked: string, k: number, log: (s: string) => void): Promise<void> {
  const a = await sizesByConstructor(idle);
  const b = await sizesByConstructor(parked);
  const grown = [...b].map(([name, e]) => [name, e.n - (a.get(name)?.n ?? 0), e.size - (a.get(name)?.size ?? 0)] as const);
  for (const [name, n, size] of grown.sort((x, y) => y[2] - x[2]).slice(0, 30)) {
    log(`  ${name.slice(0, 60).padEnd(60)} ${(n / k).toFixed(1).padStart(8)} objects ${(size / k).toFixed(0).padStart(8)} B per request`);
  }
}

async function sizesByConstructor(file: string): Promise<Map<string, { n: number; size: number }>> {
  const snap = JSON.parse(await readFile(file, 'utf8')) as { snapshot: { meta: { node_fields: string[]; node_types: [string[]] } }; nodes: number[]; strings: string[] };
  const f = snap.snapshot.meta.node_fields;
  const width = f.length;
  const [iType, iName, iSize] = [f.indexOf('type'), f.indexOf('name'), f.indexOf('self_size')];
  const types = snap.snapshot.meta.node_types[0];
  const by = new Map<string, { n: number; size: number }>();
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + iType]!]!;
    const name = type === 'object' || type === 'closure' ? `${type}:${snap.strings[snap.nodes[i + iName]!]}` : type;
    const e = by.get(name) ?? { n: 0, size: 0 };
    e.n++;
    e.size += snap.nodes[i + iSize]!;
    by.set(name, e);
  }
  return by;
}
