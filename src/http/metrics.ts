import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Alerts } from '../audit/alerts.ts';
import { aeadImplementation } from '../crypto/aead.ts';
import type { FieldCipher } from '../crypto/field-cipher.ts';
import type { Keyring } from '../crypto/keys/keyring.ts';
import type { Pool } from '../db/pool.ts';
import type { GraphQLContext } from '../graphql/context.ts';

/**
 * The gateway's Prometheus metrics, in a registry of its own (several gateways in one process,
 * as in tests, must not share counters). Labels are operation types, outcomes, error codes and
 * field names: a bounded set chosen by this code, never a value a client sent.
 */
export interface GatewayMetrics {
  readonly registry: Registry;
  readonly requests: Counter<'operation' | 'outcome'>;
  readonly duration: Histogram<'operation'>;
  readonly errors: Counter<'code'>;
  /** An executed operation ended (committed, rolled back, withheld...): see use-request-transaction. */
  settled(ctx: GraphQLContext, outcome: string, operation: string | undefined): void;
}

export interface MetricsSources {
  /** The request pool, whose counts are read; never queried. */
  readonly pool: Pool;
  /** Where the scrape's own query runs: not the request pool, so a scrape never waits behind requests nor they behind it. */
  readonly preauthPool: Pool;
  readonly keyring: Keyring;
  readonly cipher: FieldCipher;
  readonly alerts: Alerts;
  /** Break-glass grants unreviewed for longer are overdue. */
  readonly overdueReviewHours: number;
}

/** Well below a Prometheus scrape's default timeout (10 s). */
const SCRAPE_QUERY_TIMEOUT_MS = 2_000;

/** Counters kept elsewhere (keyring, cipher) are read at scrape time rather than mirrored. */
function setCounter(counter: Counter, value: number): void {
  counter.reset();
  counter.inc(value);
}

export function createGatewayMetrics({ pool, preauthPool, keyring, cipher, alerts, overdueReviewHours }: MetricsSources): GatewayMetrics {
  const registry = new Registry();
  const registers = [registry];
  collectDefaultMetrics({ register: registry });

  const requests = new Counter({
    name: 'phigate_graphql_requests_total',
    help: 'GraphQL operations by type and outcome (refused: stopped before execution, e.g. authentication, validation, limits)',
    labelNames: ['operation', 'outcome'] as const,
    registers,
  });
  const duration = new Histogram({
    name: 'phigate_graphql_request_duration_seconds',
    help: 'Time from request to response, by operation type',
    labelNames: ['operation'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  const errors = new Counter({
    name: 'phigate_graphql_errors_total',
    help: 'Errors in GraphQL responses by extensions.code (RATE_LIMITED counts rate-limit rejections)',
    labelNames: ['code'] as const,
    registers,
  });
  const denied = new Counter({
    name: 'phigate_fields_denied_total',
    help: 'PHI fields refused by policy (never decrypted)',
    labelNames: ['field'] as const,
    registers,
  });
  const auditRows = new Counter({ name: 'phigate_audit_rows_written_total', help: 'Audit rows committed', registers });
  const auditFailures = new Counter({
    name: 'phigate_audit_failures_total',
    help: 'Requests whose audit rows could not be written (their result was withheld)',
    registers,
  });

  new Counter({
    name: 'phigate_fields_decrypted_total',
    help: 'PHI field decryptions attempted, by table.column',
    labelNames: ['column'] as const,
    registers,
    collect() {
      this.reset();
      for (const [column, n] of cipher.stats.decryptsByColumn) this.inc({ column }, n);
    },
  });
  new Counter({ name: 'phigate_kms_calls_total', help: 'Calls to the key provider (generate or unwrap a data key)', registers, collect() { setCounter(this, keyring.stats.kmsCalls); } });
  new Counter({ name: 'phigate_key_cache_hits_total', help: 'Data-key lookups answered from the cache', registers, collect() { setCounter(this, keyring.stats.cacheHits); } });
  new Counter({ name: 'phigate_key_cache_misses_total', help: 'Data-key lookups that needed the key store and provider', registers, collect() { setCounter(this, keyring.stats.cacheMisses); } });
  new Counter({ name: 'phigate_key_cache_evictions_total', help: 'Unwrapped keys dropped (age, uses or room) and zero-filled', registers, collect() { setCounter(this, keyring.stats.evictions); } });
  new Gauge({
    name: 'phigate_key_cache_hit_ratio',
    help: 'Share of data-key lookups answered from the cache since start (for a recent rate, use the _total counters)',
    registers,
    collect() {
      const { cacheHits, cacheMisses } = keyring.stats;
      this.set(cacheHits + cacheMisses === 0 ? 0 : cacheHits / (cacheHits + cacheMisses));
    },
  });
  new Counter({ name: 'phigate_alerts_sent_total', help: 'Alerts delivered to the webhook', registers, collect() { setCounter(this, alerts.stats.sent); } });
  new Counter({
    name: 'phigate_alert_delivery_failures_total',
    help: 'Alerts the webhook did not take after every retry (each is also in the log)',
    registers,
    collect() {
      setCounter(this, alerts.stats.failed);
    },
  });
  new Gauge({
    name: 'phigate_aead_native',
    help: 'Fields are opened and sealed by the native AES-GCM addon (1) or by node:crypto (0); PHIGATE_AEAD',
    registers,
    collect() {
      this.set(aeadImplementation() === 'native' ? 1 : 0);
    },
  });
  new Gauge({ name: 'phigate_db_pool_clients', help: 'Connections the pool holds', registers, collect() { this.set(pool.totalCount); } });
  new Gauge({ name: 'phigate_db_pool_idle_clients', help: 'Connections idle in the pool', registers, collect() { this.set(pool.idleCount); } });
  new Gauge({ name: 'phigate_db_pool_waiting', help: 'Requests waiting for a connection', registers, collect() { this.set(pool.waitingCount); } });
  // pg's per-query timeout (left out of its typings): a scrape of a hung database answers -1 and drops the connection.
  const overdueQuery = { text: 'SELECT phigate.overdue_break_glass($1) AS n', values: [overdueReviewHours], query_timeout: SCRAPE_QUERY_TIMEOUT_MS };
  new Gauge({
    name: 'phigate_break_glass_overdue_reviews',
    help: `Break-glass grants unreviewed for more than ${overdueReviewHours} hours (PHIGATE_BREAK_GLASS_REVIEW_HOURS); -1 when the database could not be asked`,
    registers,
    async collect() {
      try {
        const { rows } = await preauthPool.query<{ n: string }>(overdueQuery);
        this.set(Number(rows[0]!.n));
      } catch {
        this.set(-1);
      }
    },
  });

  return {
    registry,
    requests,
    duration,
    errors,
    settled(ctx, outcome, operation) {
      requests.inc({ operation: operation ?? 'none', outcome });
      for (const e of ctx.audit.events) if (e.action === 'denied') denied.inc({ field: `${e.typeName}.${e.field}` });
      if (outcome === 'committed') auditRows.inc(ctx.audit.size);
      if (outcome === 'audit_failed') auditFailures.inc();
    },
  };
}
