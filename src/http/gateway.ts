import { setMaxListeners } from 'node:events';
import http from 'node:http';
import { SpanStatusCode } from '@opentelemetry/api';
import { createYoga, type Plugin, type YogaInitialContext } from 'graphql-yoga';
import { createAuditBuffer } from '../audit/buffer.ts';
import { createAlertSweeper } from '../audit/alert-sweep.ts';
import { createAlerts, type Alerts } from '../audit/alerts.ts';
import type { AuditRequest } from '../audit/event.ts';
import type { AuditRecorder } from '../audit/recorder.ts';
import type { AuditWriter } from '../audit/writer.ts';
import { claimedSubject } from '../auth/claimed-subject.ts';
import { withKnownClinics } from '../auth/clinic-claims.ts';
import { discoverJwksUri } from '../auth/discovery.ts';
import type { Principal } from '../auth/principal.ts';
import { ALERT_SWEEP_SECONDS, BREAK_GLASS_DEFAULTS, type BreakGlassSettings, type Config } from '../config.ts';
import type { FieldCipher } from '../crypto/field-cipher.ts';
import type { Keyring } from '../crypto/keys/keyring.ts';
import { createClinicDirectory, type ClinicDirectory } from '../db/clinics.ts';
import type { SearchQuota } from '../db/search-quota.ts';
import type { Pool } from '../db/pool.ts';
import { isPhigateError } from '../errors.ts';
import { openRequestTransaction, type TransactionOptions } from '../db/transaction.ts';
import type { GraphQLContext } from '../graphql/context.ts';
import { createLoaders } from '../graphql/loaders.ts';
import { buildSchema } from '../graphql/schema.ts';
import { requestLogger, type Logger } from '../log.ts';
import { effectiveLimits } from '../policy/limits.ts';
import type { PolicySet } from '../policy/types.ts';
import type { ApiKeyService } from '../records/api-keys.ts';
import { createPhiBudget } from '../records/phi-budget.ts';
import { phiMinuteFor } from '../records/phi-minute.ts';
import { RequestPhases } from '../telemetry/phases.ts';
import { inSpan } from '../telemetry/tracing.ts';
import { createClientAddress } from './client-address.ts';
import { createFastPath } from './fast-path.ts';
import { createErrorMasking } from './mask-error.ts';
import { createGatewayMetrics } from './metrics.ts';
import { SECURITY_HEADERS, useHttpHygiene } from './plugins/use-http-hygiene.ts';
import { useGraphQlJitExecution } from './plugins/use-graphql-jit.ts';
import { useMetrics } from './plugins/use-metrics.ts';
import { useNoReconnaissance } from './plugins/use-no-reconnaissance.ts';
import { useQueryLimits } from './plugins/use-query-limits.ts';
import { useFairShare } from './plugins/use-fair-share.ts';
import { useNoEcho } from './plugins/use-no-echo.ts';
import { useRefusalTrace } from './plugins/use-refusal-trace.ts';
import { useRequestTimeout } from './plugins/use-request-timeout.ts';
import { useRequestTransaction } from './plugins/use-request-transaction.ts';
import { useSaturation } from './plugins/use-saturation.ts';
import { useUnexpectedErrorLog } from './plugins/use-unexpected-error-log.ts';
import { useTrustedDocuments, type TrustedDocuments } from './plugins/use-trusted-documents.ts';
import { useValidationCache } from './plugins/use-validation-cache.ts';
import { cachedCheck, checkReadiness, type ReadinessCheck } from './readiness.ts';
import { createRefusalTrail } from './refusal-trail.ts';
import { newRequestFacts, type RequestFacts } from './request-id.ts';
import { securityContextFor } from './security-context.ts';

export interface GatewayDeps {
  readonly pool: Pool;
  /**
   * Connections no request holds (on PHIGATE_AUX_DATABASE_URL) for what runs before or without
   * authentication: the clinic list, /metrics' overdue-review count, /readyz's database check.
   */
  readonly preauthPool: Pool;
  readonly policy: PolicySet;
  readonly keyring: Keyring;
  readonly cipher: FieldCipher;
  readonly authenticate: (authorization: string | null) => Promise<Principal>;
  /** Commits reads' audit events in shared batches, on connections of its own; the caller closes it after the gateway. */
  readonly auditWriter: AuditWriter;
  /** Durable writer of audit events outside a request's transaction; default: the audit writer. */
  readonly recorder?: AuditRecorder;
  /** Break-glass settings (config.breakGlass); unset, the defaults. */
  readonly breakGlass?: BreakGlassSettings;
  /** Where alerts go; unset, the log only. */
  readonly alerts?: Alerts;
  /** How often this replica tries to sweep the audit trail for alerts (config.alertSweep); unset, the default. */
  readonly alertSweepSeconds?: number;
  /**
   * The alert sweep's own connection (a pool of one): a sweep is one statement of 100 ms or more,
   * which on the request pool held a connection a request could have had. The caller ends it after the gateway.
   */
  readonly sweepPool: Pool;
  readonly logger: Logger;
  readonly maxPageSize: number;
  /** Searches by an identifier per principal and minute (config.searchesPerMinute); unset, the config's default. */
  readonly searchesPerMinute?: number;
  /**
   * Counts searches outside the request's read-only transaction, on a pool no request holds a
   * connection of while it waits (the audit pool), so that it can never wait on itself.
   */
  readonly searchQuota: SearchQuota;
  readonly transaction?: TransactionOptions;
  readonly limits: Config['limits'];
  readonly introspectionRoles: readonly string[];
  /** `null`: any document may run; else only these (see use-trusted-documents.ts). */
  readonly trustedDocuments: TrustedDocuments | null;
  readonly corsOrigins: readonly string[];
  /** Bounds of each request and of shutdown (config.timeouts, config.pool); unset, the config's defaults. */
  readonly requestTimeoutMs?: number;
  readonly shutdownGraceMs?: number;
  /** Executions that may wait for a connection when the pool is busy; past that, 503 at once. */
  readonly queueLimit?: number;
  /** The issuer whose discovery document /readyz fetches; unset, readiness does not check one. */
  readonly issuer?: string;
  /** Settings of the same names in config.ts; unset, their defaults. */
  readonly serverTimeouts?: Pick<Config['timeouts'], 'headersMs' | 'bodyMs'> & Partial<Pick<Config['timeouts'], 'keepAliveMs'>>;
  /** `now`: the shares' clock (token refills), for tests; unset, the system's. */
  readonly principals?: Config['principals'] & { readonly now?: () => number };
  /** `now`: the refusal trail's clock (its seconds and minutes), for tests; unset, the system's. */
  readonly refusals?: Config['refusals'] & { readonly now?: () => number };
  readonly maxTokenClinics?: number;
  /** Which clinic ids exist; default: phigate.clinics through `preauthPool`, cached. */
  readonly clinics?: ClinicDirectory;
  /** Partner key management for the GraphQL mutations; unset, they refuse. */
  readonly apiKeys?: ApiKeyService;
  /**
   * Dependencies /readyz reports without making the replica unready (the shared rate-limit store:
   * without it only requests with API keys are refused, with 503).
   */
  readonly readiness?: Readonly<Record<string, ReadinessCheck>>;
  /**
   * Who the client is for audit rows and logs: the socket peer, or behind trusted balancers the
   * address they forward (config.trustedProxies); unset, always the socket peer.
   */
  readonly clientAddress?: Pick<Config, 'trustedProxies' | 'forwardedHeader'>;
  /** Serve /metrics only on this address, apart from the public port (config.metricsPort); unset, on the main port. */
  readonly metricsListener?: { readonly port: number; readonly host: string } | null;
  /** Extra routes tried before GraphQL (the development issuer, GraphiQL); return true when handled. */
  readonly routes?: ReadonlyArray<(req: http.IncomingMessage, res: http.ServerResponse) => boolean>;
  /** Answer the common request without yoga's Request/Response layer (fast-path.ts); default true. Tests compare both. */
  readonly fastPath?: boolean;
  /** Each request's summary line says when it passed each seam (src/telemetry/phases.ts): the bench's p99 analysis; default false. */
  readonly phaseTimings?: boolean;
}

export interface Gateway {
  readonly server: http.Server;
  /** Resolves with the main port and, when /metrics has a listener of its own, that one's. */
  listen(port: number, host: string): Promise<{ port: number; metricsPort?: number }>;
  close(): Promise<void>;
}

export function createGateway(deps: GatewayDeps): Gateway {
  const { pool, preauthPool, policy, keyring, cipher, logger } = deps;
  const shutdown = new AbortController();
  // Every execution in flight listens for shutdown until it ends; their number is bounded by
  // useSaturation, not by Node's default warning threshold of 10.
  setMaxListeners(0, shutdown.signal);
  const recorder = deps.recorder ?? deps.auditWriter;
  const alerts = deps.alerts ?? createAlerts({ webhookUrl: null, logger });
  const breakGlass = deps.breakGlass ?? BREAK_GLASS_DEFAULTS;
  const sweeper = createAlertSweeper({ pool: deps.sweepPool, sweepSeconds: deps.alertSweepSeconds ?? ALERT_SWEEP_SECONDS, alerts, logger });
  const metrics = createGatewayMetrics({ pool, preauthPool, keyring, cipher, alerts, overdueReviewHours: breakGlass.reviewAfterHours });
  const refusals = createRefusalTrail({ recorder, logger, ...(deps.refusals ?? DEFAULT_REFUSALS) });
  const clinics = deps.clinics ?? createClinicDirectory(preauthPool);
  const maxClinics = deps.maxTokenClinics ?? 50;
  const authenticate = async (authorization: string | null, facts: RequestFacts): Promise<Principal> => {
    try {
      return await withKnownClinics(await deps.authenticate(authorization), { maxClinics, directory: clinics });
    } catch (e) {
      if (isPhigateError(e) && e.code === 'UNAUTHENTICATED') {
        const { requestId, clientAddr } = facts;
        const log = requestLogger(logger, facts);
        await refusals.refused({ requestId, subject: claimedSubject(authorization), authenticated: false, clientAddr, code: e.code, reason: e.reason, typeName: 'Request', field: null, log });
      }
      throw e;
    }
  };
  // The IdP is asked at most once per ISSUER_READY_TTL_MS however often /readyz is called.
  const issuerReady = deps.issuer === undefined ? undefined : cachedCheck(() => discoverJwksUri(deps.issuer as string), ISSUER_READY_TTL_MS);
  // While the KMS fails, the probe asks it again (only it can say it is back): at most once per TTL, whatever the /readyz rate.
  const keysReady = cachedCheck(() => keyring.probe(), KEYS_READY_TTL_MS);
  // The KMS itself, asked at most once per TTL: down while every needed key is cached, the replica
  // still serves (degraded); once a key it needs is not cached, `keys` makes it unready.
  const kmsReady = cachedCheck(() => keyring.kmsReachable(), KEYS_READY_TTL_MS);
  // Likewise the database and whatever else is checked (Redis). The database is asked through a
  // connection no request holds, and through the request pool (DATABASE_URL may lead elsewhere,
  // e.g. a paused PgBouncer entry) only when it has one to spare: with every request connection
  // taken the replica is serving, and a probe queued behind them would time out and take a busy
  // replica out of the balancer. pg's per-query timeout (left out of its typings): a hung answer
  // drops its connection instead of keeping it.
  const readyQuery = { text: 'SELECT 1', query_timeout: READY_QUERY_TIMEOUT_MS };
  const spareRequestConnection = () => pool.idleCount > 0 || pool.totalCount < (pool.options.max ?? 10);
  const databaseReady = cachedCheck(
    () => Promise.all([preauthPool.query(readyQuery), spareRequestConnection() ? pool.query(readyQuery) : null]),
    KEYS_READY_TTL_MS,
  );
  const otherReady = Object.fromEntries(Object.entries(deps.readiness ?? {}).map(([name, check]) => [name, cachedCheck(check, KEYS_READY_TTL_MS)]));

  // Their request and response hooks are also called by the fast path (fast-path.ts).
  const httpPlugins = [useHttpHygiene({ corsOrigins: deps.corsOrigins }), useMetrics(metrics)];
  const masking = createErrorMasking();
  const yoga = createYoga<{ req: http.IncomingMessage; facts: RequestFacts }, GraphQLContext>({
    schema: buildSchema(),
    graphqlEndpoint: '/graphql',
    // GraphiQL, in development, is a route of its own (graphiql.ts): yoga's page loads from a CDN.
    graphiql: false,
    landingPage: false,
    logging: false,
    maskedErrors: { maskError: masking.maskError },
    // CORS is use-http-hygiene's: yoga's default reflects any origin, with credentials.
    cors: false,
    batching: deps.limits.maxBatch === 0 ? false : { limit: deps.limits.maxBatch },
    // useQueryLimits bounds the body (maxBodyBytes, far below yoga's 25 MB); a second counting
    // stream on every body would only cost CPU.
    maxRequestBodySize: false,
    // Validation is cached by useValidationCache, below; yoga keeps parsing's cache.
    parserAndValidationCache: { validationCache: false },
    plugins: [
      ...httpPlugins,
      useUnexpectedErrorLog(masking, logger),
      useQueryLimits({ limits: deps.limits, maxPageSize: deps.maxPageSize }),
      useNoEcho(),
      ...(deps.trustedDocuments ? [useTrustedDocuments(deps.trustedDocuments)] : []),
      useNoReconnaissance({ introspectionRoles: deps.introspectionRoles }),
      // Sets the execute function, so it must come before the plugins that wrap it.
      useGraphQlJitExecution(logger),
      // From here each plugin's execution wrapper wraps the one before it, so a request meets, in
      // order: admission, the deadline, the transaction.
      useRequestTransaction(logger, deps.auditWriter, (ctx, outcome, operation) => {
        metrics.settled(ctx, outcome, operation);
        if (outcome === 'committed') for (const fn of ctx.committed) fn();
      }),
      useFairShare(deps.principals ?? DEFAULT_PRINCIPALS),
      useRequestTimeout({ timeoutMs: deps.requestTimeoutMs ?? 15_000, commitWaitMs: deps.transaction?.statementTimeoutMs ?? 5_000, shutdown: shutdown.signal }),
      useSaturation({ capacity: (pool.options.max ?? 10) + (deps.queueLimit ?? 100) }),
      useRefusalTrace(refusals),
      useValidationCache(),
    ],
    context: async ({ request, facts }: YogaInitialContext & { facts: RequestFacts }): Promise<GraphQLContext> => {
      const startedAt = performance.now();
      const { requestId, clientAddr } = facts;
      const principal = await inSpan('phigate.auth', {}, () => authenticate(request.headers.get('authorization'), facts));
      facts.subject = principal.subject;
      const phases = deps.phaseTimings === true ? new RequestPhases(startedAt) : null;
      const budget = createPhiBudget();
      const minute = phiMinuteFor(principal, effectiveLimits(policy, principal), budget);
      const tx = openRequestTransaction(pool, securityContextFor(principal, policy, requestId), deps.transaction, minute.preamble, phases);
      const auditRequest: AuditRequest = {
        requestId,
        actor: principal.subject,
        actorKind: principal.kind,
        clientAddr,
        credentialId: principal.kind === 'partner' ? principal.keyId : null,
      };
      const committed: Array<() => void> = [];
      if (phases !== null) phases.contextMade = performance.now();
      return {
        startedAt,
        phases,
        requestId,
        facts,
        log: requestLogger(logger, facts),
        principal,
        policy,
        tx,
        cipher,
        keyring,
        audit: createAuditBuffer(auditRequest),
        auditRequest,
        recorder,
        alerts,
        breakGlass,
        committed,
        afterCommit: (fn) => void committed.push(fn),
        loaders: createLoaders(tx),
        budget,
        minute,
        maxPageSize: deps.maxPageSize,
        maxEncounters: deps.limits.maxEncounters,
        searchesPerMinute: deps.searchesPerMinute ?? 30,
        searchQuota: deps.searchQuota,
        apiKeys: deps.apiKeys ?? null,
      };
    },
  });

  const fastPath =
    deps.fastPath === false
      ? null
      : createFastPath({ yoga, maxBodyBytes: deps.limits.maxBodyBytes, documentIds: deps.trustedDocuments !== null, plugins: httpPlugins as Plugin[], logger });
  const securityHeaders = Object.entries(SECURITY_HEADERS);
  // Requests being answered, so that close() can let them finish.
  let inFlight = 0;
  let drained: (() => void) | null = null;
  const timeouts = deps.serverTimeouts ?? DEFAULT_SERVER_TIMEOUTS;
  const serverOptions: http.ServerOptions = {
    // A client that trickles its headers or body must not hold a socket and a parser for long.
    headersTimeout: timeouts.headersMs,
    requestTimeout: timeouts.bodyMs,
    // Node's 5 s default is below every balancer's idle timeout: one that reused the connection at
    // the moment Node closed it got ECONNRESET and answered its client 502. An idle connection
    // holds no parser deadline: the headers timeout counts from the next request's first byte.
    keepAliveTimeout: timeouts.keepAliveMs ?? DEFAULT_SERVER_TIMEOUTS.keepAliveMs,
    // Node checks those timeouts only this often (30 s by default).
    connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(timeouts.headersMs / 4))),
  };
  const clientAddress = createClientAddress({
    trustedProxies: deps.clientAddress?.trustedProxies ?? [],
    header: deps.clientAddress?.forwardedHeader ?? 'x-forwarded-for',
  });
  const server = http.createServer(serverOptions, (req, res) => {
    handle(req, res, newRequestFacts(singleHeader(req.headers['x-request-id']), clientAddress(req.socket.remoteAddress ?? null, req.headers)));
  });
  const handle = (req: http.IncomingMessage, res: http.ServerResponse, facts: RequestFacts): void => {
    const { requestId } = facts;
    inFlight++;
    res.once('close', () => {
      if (--inFlight === 0) drained?.();
    });
    for (const [name, value] of securityHeaders) res.setHeader(name, value);
    res.setHeader('X-Request-Id', requestId);
    for (const route of deps.routes ?? []) if (route(req, res)) return;
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') return void res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    if (path === '/readyz') {
      // A replica shutting down says so first, so that the balancer stops sending before it stops accepting.
      if (closing !== null) return void res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ ready: false, draining: true }));
      void Promise.all([
        checkReadiness({
          database: databaseReady,
          keys: keysReady,
          ...(issuerReady !== undefined ? { issuer: issuerReady } : {}),
        }),
        // Shown, but not a reason to take the replica out of service: users' requests do not need it.
        checkReadiness({ kms: kmsReady, ...otherReady }),
      ]).then(([r, degraded]) => {
        const body = { ...r, checks: { ...r.checks, ...degraded.checks }, ...(degraded.ready ? {} : { degraded: true }) };
        res.writeHead(r.ready ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      });
      return;
    }
    if (path === '/metrics' && metricsServer === null) return serveMetrics(res);
    // The root of the request's trace: the seams' spans (auth, SQL, policy, decryption, audit) join
    // it through the active context. The id is the one in the logs and audit rows, never PHI-shaped.
    const attributes = { 'http.request.method': req.method ?? 'UNKNOWN', 'phigate.request_id': requestId };
    void inSpan('phigate.request', attributes, async (span) => {
      await (fastPath?.qualifies(req) ? fastPath.answer(req, res, facts) : yoga(req, res, { facts }));
      span.setAttribute('http.response.status_code', res.statusCode);
      // As OpenTelemetry's HTTP conventions say for a server: a 4xx is the client's, a 5xx ours.
      if (res.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    });
  };

  function serveMetrics(res: http.ServerResponse): void {
    void metrics.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
      () => res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics unavailable\n'),
    );
  }
  // Nothing but /metrics there: no GraphQL, no PHI, on an address the balancer does not publish.
  const metricsServer =
    deps.metricsListener == null
      ? null
      : http.createServer((req, res) => {
          if ((req.url ?? '/').split('?')[0] === '/metrics') return serveMetrics(res);
          res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
        });

  let closing: Promise<void> | null = null;
  return {
    server,
    listen: async (port, host) => {
      const main = await listenOn(server, port, host);
      if (metricsServer === null || deps.metricsListener == null) return { port: main };
      return { port: main, metricsPort: await listenOn(metricsServer, deps.metricsListener.port, deps.metricsListener.host) };
    },
    close: () => (closing ??= closeGracefully()),
  };

  /**
   * Stops accepting at once, lets requests in flight finish for up to the grace period, then
   * abandons what still runs (rolled back, see use-request-timeout.ts) and drops every connection.
   * The pool is the caller's to end afterwards.
   */
  async function closeGracefully(): Promise<void> {
    // No new alert sweep once shutdown begins; one under way finishes before its pool closes.
    const stopped = Promise.all([
      new Promise<void>((resolve) => server.close(() => resolve())),
      sweeper.stop(),
      ...(metricsServer === null ? [] : [new Promise<void>((resolve) => metricsServer.close(() => resolve()))]),
    ]);
    metricsServer?.closeAllConnections();
    server.closeIdleConnections();
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((resolve) => (inFlight === 0 ? resolve() : (drained = resolve))),
      new Promise<void>((resolve) => (grace = setTimeout(resolve, deps.shutdownGraceMs ?? 10_000))),
    ]);
    clearTimeout(grace);
    if (inFlight > 0) logger.warn({ inFlight }, 'shutdown grace period over; abandoning requests still running');
    shutdown.abort();
    server.closeAllConnections();
    await stopped;
    await refusals.close();
  }
}

const DEFAULT_SERVER_TIMEOUTS = { headersMs: 10_000, bodyMs: 30_000, keepAliveMs: 65_000 };
const DEFAULT_PRINCIPALS = { concurrency: 4, queue: 32, ratePerSecond: 20, burst: 40 };
const DEFAULT_REFUSALS = { auditedPerSecond: 10, alertPerMinute: 60 };
const ISSUER_READY_TTL_MS = 10_000;
const KEYS_READY_TTL_MS = 2_000;
/** The probe's own bound (readiness.ts). */
const READY_QUERY_TIMEOUT_MS = 3_000;

function listenOn(server: http.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve((server.address() as import('node:net').AddressInfo).port));
  });
}

const singleHeader = (value: string | string[] | undefined): string | null => (typeof value === 'string' ? value : null);
