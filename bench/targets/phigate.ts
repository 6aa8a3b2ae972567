/**
 * The real gateway, assembled as test/support/gateway.ts does: app login role under row security,
 * the policy (bench/results/policy.yaml: policies/default.yaml with its PHI limits raised, see
 * bench/README.md), AES-GCM decryption under a local KMS, audit rows through the audit writer (reads) or in the request's transaction (writes),
 * tokens verified against the loopback dev issuer's discovery document and JWKS.
 *
 * Run by bench/run.ts as a child process; config in BENCH_TARGET (JSON). Reports its port over IPC.
 * GET /__bench/round-trips answers the `roundTrips` and `durationMs` of every `msg: 'request'` log
 * line since the last call, per operation, and resets; with them `memoryAtPeak`, the process's
 * memory at the sample of highest RSS since the last call (sampled every 100 ms), split into V8's
 * heap spaces and what lives outside the heap, to say what sets a cell's peak RSS, with the largest
 * heapTotal of the process's life (`heapTotalHighWater`).
 *
 * assemblePhigate() is that gateway's wiring, also used in process by bench/in-flight.ts, so that
 * what one measures is what the other runs; the target itself starts only as the main module.
 */
import { appendFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import type http from 'node:http';
import path from 'node:path';
import { PerformanceObserver, monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import { createAuditWriter, type AuditWriter, type BatchTiming } from '../../src/audit/writer.ts';
import { createApiKeyVerifier } from '../../src/auth/api-key.ts';
import { createPeppers } from '../../src/auth/api-key-pepper.ts';
import { createAuthenticator } from '../../src/auth/authenticate.ts';
import { createOidcVerifier } from '../../src/auth/oidc.ts';
import { loadConfig } from '../../src/config.ts';
import { nativeUnavailable, useAead } from '../../src/crypto/aead.ts';
import { createFieldCipher } from '../../src/crypto/field-cipher.ts';
import { createKeyring } from '../../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../../src/crypto/keys/local.ts';
import { createPgKeyStore } from '../../src/db/key-store.ts';
import { createSearchQuota } from '../../src/db/search-quota.ts';
import { assertSafeAppRole, createPool } from '../../src/db/pool.ts';
import { createGateway, type Gateway } from '../../src/http/gateway.ts';
import { recheckFloatingGarbage } from '../../src/floating-garbage.ts';
import { limitHeapGrowth } from '../../src/heap.ts';
import { createLogger, type Logger } from '../../src/log.ts';
import { loadPolicy } from '../../src/policy/load.ts';
import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';
import { createMemoryRateLimitStore } from '../../src/rate-limit/memory.ts';

/** What differs between the target's process and another that assembles the same gateway. */
export interface PhigateWiring {
  readonly appUrl: string;
  /** The audit writer's, key loads' and other pre-request connections (PHIGATE_AUX_DATABASE_URL); unset, appUrl. */
  readonly auxUrl?: string;
  readonly issuer: string;
  readonly masterKey: Buffer;
  readonly policyFile: string;
  /** The request pool's connections. */
  readonly poolSize: number;
  /** PHIGATE_PREPARED_STATEMENTS; off behind PgBouncer 1.18. Unset, on. */
  readonly preparedStatements?: boolean;
  /** Every pool's wait for a connection; unset, src/db/pool.ts's default. */
  readonly connectionTimeoutMs?: number;
  readonly logger: Logger;
  readonly routes?: ReadonlyArray<(req: http.IncomingMessage, res: http.ServerResponse) => boolean>;
  /** Stands between the gateway and its audit writer (bench/in-flight.ts parks entries there). */
  readonly writer?: (real: AuditWriter) => AuditWriter;
  /** The writer's observer of each batch (bench/p99-phases.ts). */
  readonly onBatch?: (b: BatchTiming) => void;
  /** Each request's phase timings in its summary line (src/telemetry/phases.ts). */
  readonly phaseTimings?: boolean;
}

export interface AssembledPhigate {
  readonly gateway: Gateway;
  /** The real writer, not the one `writer` wrapped. */
  readonly auditWriter: AuditWriter;
  /** The gateway, then the writer's queue, then every pool. */
  close(): Promise<void>;
}

/** The gateway as the bench runs it: pools, keys, audit writer (gathering from the environment) and limits. */
export async function assemblePhigate(w: PhigateWiring): Promise<AssembledPhigate> {
  const defaults = loadConfig({});
  const connectionTimeoutMs = w.connectionTimeoutMs;
  // PHIGATE_POOL_SIZE and PHIGATE_AUDIT_CONNECTIONS from the runner's environment (or a --phigate-variants
  // entry's), as src/app.ts reads them, so that variants can compare them; unset, poolSize and the default.
  const sized = loadConfig({ PHIGATE_POOL_SIZE: process.env.PHIGATE_POOL_SIZE, PHIGATE_AUDIT_CONNECTIONS: process.env.PHIGATE_AUDIT_CONNECTIONS });
  const pool = createPool(w.appUrl, { max: process.env.PHIGATE_POOL_SIZE === undefined ? w.poolSize : sized.pool.size, connectionTimeoutMs });
  await assertSafeAppRole(pool);
  const auxUrl = w.auxUrl ?? w.appUrl;
  const preparedStatements = w.preparedStatements ?? true;
  const keyPool = createPool(auxUrl, { max: 2, applicationName: 'phigate-keys', connectionTimeoutMs });
  const provider = createLocalKeyProvider(w.masterKey);
  const keyring = createKeyring({ provider, store: createPgKeyStore(keyPool) });
  const cipher = createFieldCipher(keyring);
  const auditPool = createPool(auxUrl, { max: sized.audit.connections, applicationName: 'phigate-audit', connectionTimeoutMs });
  // As src/app.ts: search counts on a connection of their own, not the writer's (whose backends the
  // bench's PostgreSQL split counts as the audit writer's share).
  const quotaPool = createPool(auxUrl, { max: 1, applicationName: 'phigate-search-quota', connectionTimeoutMs });
  // As src/app.ts: key lookups, the clinic list, /metrics and /readyz never take a request connection.
  const preauthPool = createPool(auxUrl, { max: 2, applicationName: 'phigate-preauth', connectionTimeoutMs });
  // As src/app.ts: the alert sweep on a connection of its own, which the PostgreSQL split counts apart from requests.
  const sweepPool = createPool(w.appUrl, { max: 1, applicationName: 'phigate-alert-sweep', connectionTimeoutMs });
  const { logger } = w;
  // As src/app.ts; the gathering settings from the runner's environment, so that --phigate-variants can compare them.
  const gatherConfig = loadConfig({ PHIGATE_AUDIT_GATHER_PERCENT: process.env.PHIGATE_AUDIT_GATHER_PERCENT, PHIGATE_AUDIT_GATHER_MAX_MS: process.env.PHIGATE_AUDIT_GATHER_MAX_MS }).audit;
  const auditWriter = createAuditWriter({
    pool: auditPool,
    queueLimit: defaults.audit.queueLimit,
    logger,
    preparedStatements,
    gather: { percent: gatherConfig.gatherPercent, maxMs: gatherConfig.gatherMaxMs },
    ...(w.onBatch !== undefined ? { onBatch: w.onBatch } : {}),
  });
  const gateway = createGateway({
    pool,
    preauthPool,
    sweepPool,
    auditWriter: w.writer?.(auditWriter) ?? auditWriter,
    searchQuota: createSearchQuota(quotaPool, { preparedStatements }),
    policy: await loadPolicy(w.policyFile, PHI_FIELDS),
    keyring,
    cipher,
    authenticate: createAuthenticator({
      oidc: createOidcVerifier({
        issuer: w.issuer,
        audience: 'phigate',
        algorithms: ['ES256'],
        clockToleranceSeconds: 30,
        rolesClaim: 'roles',
        clinicsClaim: 'clinics',
        mfaAcrValues: [],
      }),
      // As src/auth/partner-keys.ts assembles it without REDIS_URL: the in-process bucket.
      apiKeys: createApiKeyVerifier({ db: preauthPool, peppers: createPeppers(preauthPool, provider), rateLimits: createMemoryRateLimitStore(), logger }),
    }),
    logger,
    maxPageSize: 100,
    // The bench measures throughput of one registrar's searches, not the enumeration limit.
    searchesPerMinute: 100_000,
    // Nor one physician's fair share of the replica (20 requests a second, 4 at once): the bench
    // drives 32 connections from 9 principals, so the default shares would cap the run itself.
    principals: { concurrency: 1_000, queue: 1_000, ratePerSecond: 1e9, burst: 1e9 },
    limits: defaults.limits,
    introspectionRoles: defaults.introspectionRoles,
    trustedDocuments: null,
    corsOrigins: defaults.corsOrigins,
    issuer: w.issuer,
    queueLimit: 1000,
    transaction: { preparedStatements },
    routes: w.routes,
    phaseTimings: w.phaseTimings ?? false,
  });
  return {
    gateway,
    auditWriter,
    close: async () => {
      await gateway.close();
      await auditWriter.close();
      await Promise.all([pool.end(), keyPool.end(), auditPool.end(), quotaPool.end(), preauthPool.end(), sweepPool.end()]);
    },
  };
}

interface PhigateTargetConfig {
  appUrl: string;
  issuer: string;
  masterKeyHex: string;
  policyFile: string;
  poolSize: number;
  /** The audit writer's and key loads' connections (PHIGATE_AUX_DATABASE_URL); unset, appUrl. */
  auxUrl?: string;
  /** PHIGATE_PREPARED_STATEMENTS; off behind PgBouncer 1.18. Unset, on. */
  preparedStatements?: boolean;
}

/** The target's process: run by bench/run.ts (compiled) with BENCH_TARGET. */
async function target(): Promise<void> {
  // As src/main.ts does: the gateway process caps V8's old-generation growth (src/heap.ts) and
  // collects again after a full GC that kept floating garbage (src/floating-garbage.ts);
  // BENCH_FLOATING_GARBAGE=keep in a variant's env leaves the latter out, to measure it.
  limitHeapGrowth();
  if (process.env.BENCH_FLOATING_GARBAGE !== 'keep') recheckFloatingGarbage();
  const cfg = JSON.parse(process.env.BENCH_TARGET ?? '{}') as PhigateTargetConfig;
  // As src/app.ts: PHIGATE_AEAD, from the runner's environment, chooses the AES-GCM implementation.
  const aead = useAead(loadConfig({ PHIGATE_AEAD: process.env.PHIGATE_AEAD }).aead);
  process.stderr.write(`phigate target: aead: ${aead}${aead === 'native' ? '' : ` (${process.env.PHIGATE_AEAD === 'node' ? 'PHIGATE_AEAD=node' : nativeUnavailable()})`}\n`);

  /**
   * BENCH_PHASES_DIR (bench/p99-phases.ts): each request's moments, joined by its id, as JSON lines,
   * one file per stats call (the last one written is the measured run): its arrival and the end of
   * its answer (this process's clock), its summary line's `phasesMs` (src/telemetry/phases.ts) and
   * the audit batch that held its entry; with them the run's GC pauses and event-loop delay.
   */
  const phasesDir = process.env.BENCH_PHASES_DIR ?? null;
  interface PhaseRecord {
    arrivedAt?: number;
    finishedAt?: number;
    /** The summary line's write, its durationMs and phasesMs. */
    loggedAt?: number;
    durationMs?: number;
    phasesMs?: number[];
    batch?: { shard: number; size: number; heldMs: number; startedAt: number; settledAt: number };
  }
  let phaseRecords = new Map<string, PhaseRecord>();
  let gcPauses: Array<{ at: number; ms: number; kind: number }> = [];
  const loopDelay = monitorEventLoopDelay({ resolution: 5 });
  if (phasesDir !== null) {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) gcPauses.push({ at: e.startTime, ms: e.duration, kind: (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind ?? 0 });
    }).observe({ entryTypes: ['gc'] });
    loopDelay.enable();
  }
  const phaseRecord = (id: string): PhaseRecord => {
    let r = phaseRecords.get(id);
    if (r === undefined) phaseRecords.set(id, (r = {}));
    return r;
  };
  const phasesRoute = (req: http.IncomingMessage, res: http.ServerResponse): boolean => {
    if (phasesDir === null || req.url !== '/graphql') return false;
    const id = String(res.getHeader('X-Request-Id'));
    phaseRecord(id).arrivedAt = performance.now();
    res.once('finish', () => (phaseRecord(id).finishedAt = performance.now()));
    return false;
  };
  const onBatch = (b: BatchTiming): void => {
    for (const e of b.entries) {
      phaseRecord(e.request.requestId).batch = { shard: b.shard, size: b.entries.length, heldMs: b.heldMs, startedAt: b.startedAt, settledAt: b.settledAt };
    }
  };
  /**
   * BENCH_PROMOTED_DIR (bench/heap-sites.ts): where the objects that outlived a young-generation
   * collection were allocated. A sampling heap profile (a sample per 16 KiB allocated) that leaves
   * out what the scavenges freed and keeps what the full GCs freed: what was promoted, or is still
   * young and alive at the stats call. One `promoted-<label>-<n>.heapprofile` per stats call
   * (even-numbered: the measured runs). With BENCH_PROMOTED_ALL=1, every allocation instead
   * (`allocated-...`), the denominator of a site's promoted share.
   */
  const promotedDir = process.env.BENCH_PROMOTED_DIR ?? null;
  const sampler = promotedDir === null ? null : new Session();
  const allAllocations = process.env.BENCH_PROMOTED_ALL === '1';
  const startSampling = (): void =>
    sampler?.post('HeapProfiler.startSampling', { samplingInterval: 16_384, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: allAllocations } as never);
  if (sampler !== null) {
    sampler.connect();
    startSampling();
  }
  let promotedFiles = 0;
  const writePromoted = (): void => {
    sampler?.post('HeapProfiler.stopSampling', (err, r) => {
      if (err === null) writeFileSync(path.join(promotedDir!, `${allAllocations ? 'allocated' : 'promoted'}-${process.env.BENCH_LABEL ?? process.pid}-${++promotedFiles}.heapprofile`), JSON.stringify(r.profile));
      startSampling();
    });
  };
  let phaseFiles = 0;
  const writePhases = (): void => {
    writePromoted();
    if (phasesDir === null) return;
    const file = path.join(phasesDir, `phases-${process.env.BENCH_LABEL ?? process.pid}-${++phaseFiles}.jsonl`);
    const h = loopDelay;
    const head = { gcPauses, loopDelayMs: { p50: h.percentile(50) / 1e6, p99: h.percentile(99) / 1e6, max: h.max / 1e6, mean: h.mean / 1e6 } };
    const lines = [JSON.stringify(head), ...[...phaseRecords].filter(([, r]) => r.phasesMs !== undefined && r.finishedAt !== undefined).map(([id, r]) => JSON.stringify({ id, ...r }))];
    appendFileSync(file, `${lines.join('\n')}\n`);
    phaseRecords = new Map();
    gcPauses = [];
    loopDelay.reset();
  };

  // operation -> roundTrips -> count
  let roundTrips: Record<string, Record<number, number>> = {};
  // operation -> durationMs of every request line (server-side time, context creation to commit)
  let durationsMs: Record<string, number[]> = {};
  let otherLines = 0;
  const logger = createLogger('info', {
    write: (line: string) => {
      const l = JSON.parse(line) as { msg?: string; operation?: string; roundTrips?: number; durationMs?: number; level?: number; requestId?: string; phasesMs?: number[] };
      if (l.msg === 'request' && typeof l.roundTrips === 'number') {
        if (phasesDir !== null && l.requestId !== undefined) Object.assign(phaseRecord(l.requestId), { loggedAt: performance.now(), durationMs: l.durationMs, phasesMs: l.phasesMs });
        const op = (roundTrips[l.operation ?? '?'] ??= {});
        op[l.roundTrips] = (op[l.roundTrips] ?? 0) + 1;
        if (typeof l.durationMs === 'number') (durationsMs[l.operation ?? '?'] ??= []).push(l.durationMs);
      } else if ((l.level ?? 0) >= 40) {
        otherLines++;
        if (otherLines <= 5) process.stderr.write(`phigate: ${line}`);
      }
    },
  });

  const MB = 2 ** 20;
  const memorySample = (): Record<string, number> => {
    const m = process.memoryUsage();
    const sample: Record<string, number> = { rss: m.rss / MB, heapTotal: m.heapTotal / MB, heapUsed: m.heapUsed / MB, external: m.external / MB, arrayBuffers: m.arrayBuffers / MB };
    // space_size is what V8 has committed for the space: the young generation's semi-spaces count whole.
    for (const s of v8.getHeapSpaceStatistics()) sample[s.space_name] = s.space_size / MB;
    return sample;
  };
  // Node 24's V8 (13.6) keeps the heap's freed pages resident in a pool that only a memory-reducing
  // GC empties (none comes while requests keep arriving), so its heap's share of RSS is the largest
  // heapTotal the process ever had, not the present one: kept for the process's life, never reset.
  let heapTotalHighWater = 0;
  const withHighWater = (sample: Record<string, number>): Record<string, number> => {
    heapTotalHighWater = Math.max(heapTotalHighWater, sample.heapTotal!);
    return { ...sample, heapTotalHighWater };
  };
  let memoryAtPeak = withHighWater(memorySample());
  setInterval(() => {
    const sample = withHighWater(memorySample());
    if (sample.rss! > memoryAtPeak.rss!) memoryAtPeak = sample;
  }, 100).unref();

  const statsRoute = (req: http.IncomingMessage, res: http.ServerResponse): boolean => {
    if (req.url !== '/__bench/round-trips') return false;
    writePhases();
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ roundTrips, warnings: otherLines, durationsMs, memoryAtPeak }));
    roundTrips = {};
    durationsMs = {};
    otherLines = 0;
    memoryAtPeak = withHighWater(memorySample());
    return true;
  };

  const phigate = await assemblePhigate({
    appUrl: cfg.appUrl,
    auxUrl: cfg.auxUrl,
    issuer: cfg.issuer,
    masterKey: Buffer.from(cfg.masterKeyHex, 'hex'),
    policyFile: cfg.policyFile,
    poolSize: cfg.poolSize,
    preparedStatements: cfg.preparedStatements,
    logger,
    routes: [statsRoute, phasesRoute],
    phaseTimings: phasesDir !== null,
    ...(phasesDir !== null ? { onBatch } : {}),
  });
  const { port } = await phigate.gateway.listen(0, '127.0.0.1');
  process.send?.({ port });
  process.on('SIGTERM', () => {
    void phigate.close().finally(() => process.exit(0));
  });
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) await target();
