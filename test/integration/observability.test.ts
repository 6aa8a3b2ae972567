import net from 'node:net';
import { INVALID_SPAN_CONTEXT, trace, type Attributes, type Span, type TracerProvider } from '@opentelemetry/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aeadImplementation } from '../../src/crypto/aead.ts';
import { createPool } from '../../src/db/pool.ts';
import { enableTracing } from '../../src/telemetry/tracing.ts';
import { startTestGateway, type TestGateway } from '../support/gateway.ts';
import { seededSecrets } from '../support/phi-expect.ts';
import { parseMetrics, valueOf, type Sample } from '../support/prometheus.ts';

// 028's grant, given back after a test revokes it: reads' events are inserted into audit_records.
const AUDIT_RECORDS_GRANT = `GRANT INSERT (batch_id, request_id, actor, actor_kind, client_addr, credential_id, role, purpose, break_glass, grant_id, patient_id,
  actions, type_names, fields, record_ids, details) ON phigate.audit_records TO phigate_app`;

// What operators watch: /metrics moves with the traffic and never names a patient, /readyz says
// which dependency is missing, and tracing spans exist around each stage without carrying values.

let gw: TestGateway;
const tokens: string[] = [];
const base = () => gw.url.replace(/\/graphql$/, '');

const token = async (sub: string, over?: { mfa?: boolean }) => {
  const t = await gw.tokenFor(sub, over);
  tokens.push(t);
  return t;
};
const scrape = async (): Promise<{ text: string; samples: Sample[] }> => {
  const res = await fetch(`${base()}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  return { text, samples: parseMetrics(text) };
};
const delta = (before: Sample[], after: Sample[], name: string, labels: Record<string, string> = {}) =>
  valueOf(after, name, labels) - valueOf(before, name, labels);

const IDENTITY = '{ patients(first: 50) { edges { node { id mrn givenName } } } }';

beforeAll(async () => {
  gw = await startTestGateway({ patients: 12 });
});
afterAll(async () => gw?.close());

describe('/metrics', () => {
  it('counts requests, outcomes, decryptions, audit rows, key use and errors as they happen', async () => {
    const m0 = (await scrape()).samples;
    const first = await gw.gql(await token('reg-north'), IDENTITY);
    const n = first.body.data!.patients.edges.length;
    expect(n).toBeGreaterThan(0);
    const m1 = (await scrape()).samples;
    expect(delta(m0, m1, 'phigate_graphql_requests_total', { operation: 'query', outcome: 'committed' })).toBe(1);
    expect(delta(m0, m1, 'phigate_fields_decrypted_total', { column: 'patients.mrn' })).toBe(n);
    expect(delta(m0, m1, 'phigate_fields_decrypted_total', { column: 'patients.given_name' })).toBe(n);
    const rows = await gw.auditRows('request_id = $1', [first.headers.get('x-request-id')]);
    expect(delta(m0, m1, 'phigate_audit_rows_written_total')).toBe(rows.length);
    expect(rows.length).toBe(2 * n);
    // A cold replica: its first request fetched keys through the provider.
    expect(delta(m0, m1, 'phigate_kms_calls_total')).toBeGreaterThan(0);
    expect(delta(m0, m1, 'phigate_key_cache_misses_total')).toBeGreaterThan(0);

    await gw.gql(await token('reg-north'), IDENTITY);
    const m2 = (await scrape()).samples;
    expect(delta(m1, m2, 'phigate_kms_calls_total')).toBe(0);
    expect(delta(m1, m2, 'phigate_key_cache_hits_total')).toBeGreaterThanOrEqual(2 * n);
    expect(valueOf(m2, 'phigate_key_cache_hit_ratio')).toBeGreaterThan(0);

    const billing = await gw.gql(await token('bill-north'), '{ patients(first: 50) { edges { node { id ssn } } } }');
    const denied = billing.body.errors!.filter((e) => e.extensions?.code === 'FIELD_DENIED').length;
    expect(denied).toBeGreaterThan(0);
    const m3 = (await scrape()).samples;
    expect(delta(m2, m3, 'phigate_fields_denied_total', { field: 'Patient.ssn' })).toBe(denied);
    expect(delta(m2, m3, 'phigate_graphql_errors_total', { code: 'FIELD_DENIED' })).toBe(denied);
    expect(delta(m2, m3, 'phigate_fields_decrypted_total', { column: 'patients.ssn' })).toBe(0);

    expect((await gw.gql(null, IDENTITY)).status).toBe(401);
    expect((await gw.gql('not-a-token', IDENTITY)).status).toBe(401);
    const m4 = (await scrape()).samples;
    expect(delta(m3, m4, 'phigate_graphql_requests_total', { operation: 'none', outcome: 'refused' })).toBe(2);
    expect(delta(m3, m4, 'phigate_graphql_errors_total', { code: 'UNAUTHENTICATED' })).toBe(2);

    await gw.admin((c) => c.query('REVOKE INSERT ON phigate.audit_records FROM phigate_app'));
    try {
      const r = await gw.gql(await token('reg-north'), IDENTITY);
      expect(r.body.errors?.[0]?.extensions?.code).toBe('AUDIT_UNAVAILABLE');
    } finally {
      await gw.admin((c) => c.query(AUDIT_RECORDS_GRANT));
    }
    const m5 = (await scrape()).samples;
    expect(delta(m4, m5, 'phigate_audit_failures_total')).toBe(1);
    expect(delta(m4, m5, 'phigate_graphql_requests_total', { operation: 'query', outcome: 'audit_failed' })).toBe(1);
    expect(delta(m4, m5, 'phigate_audit_rows_written_total')).toBe(0);

    // Every request above reached the latency histogram, refused ones included.
    expect(delta(m0, m5, 'phigate_graphql_request_duration_seconds_count', { operation: 'query' })).toBe(4);
    expect(delta(m0, m5, 'phigate_graphql_request_duration_seconds_count', { operation: 'none' })).toBe(2);
    expect(valueOf(m5, 'phigate_db_pool_clients')).toBeGreaterThanOrEqual(1);
    expect(valueOf(m5, 'phigate_aead_native')).toBe(aeadImplementation() === 'native' ? 1 : 0);
    expect(valueOf(m5, 'phigate_db_pool_waiting')).toBe(0);
    expect(m5.some((s) => s.name === 'phigate_db_pool_idle_clients')).toBe(true);
    expect(m5.some((s) => s.name === 'process_cpu_seconds_total')).toBe(true);
  });

  it('names no patient, no PHI value and no token; its labels are codes and field names only', async () => {
    const { text, samples } = await scrape();
    for (const [secret, what] of seededSecrets(gw.data.patients)) {
      if (text.includes(secret)) throw new Error(`/metrics carries ${what}`);
    }
    for (const p of gw.data.patients) expect(text).not.toContain(p.id);
    for (const t of tokens) expect(text).not.toContain(t.split('.')[2]!);
    const allowed: Record<string, RegExp> = {
      operation: /^(query|mutation|subscription|none)$/,
      outcome: /^[a-z_]+$/,
      code: /^[A-Z_]+$/,
      field: /^(Patient|Encounter)\.[a-zA-Z]+$/,
      column: /^(patients|encounters)\.[a-z_]+$/,
      le: /^[\d.+Inf]+$/,
    };
    for (const s of samples.filter((x) => x.name.startsWith('phigate_'))) {
      for (const [label, value] of Object.entries(s.labels)) expect(value, `${s.name}{${label}}`).toMatch(allowed[label] ?? /^$/);
    }
  });

  it('keeps each gateway in its own registry', async () => {
    const other = await startTestGateway({ patients: 1 });
    try {
      const res = await fetch(other.url.replace(/\/graphql$/, '/metrics'));
      const samples = parseMetrics(await res.text());
      expect(valueOf(samples, 'phigate_graphql_requests_total')).toBe(0);
    } finally {
      await other.close();
    }
  });
});

describe('/readyz', () => {
  it('is ready when the database, the key provider and the issuer answer', async () => {
    const res = await fetch(`${base()}/readyz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ready: true, checks: { database: 'ok', keys: 'ok', issuer: 'ok', kms: 'ok' } });
  });

  it('is not ready, and says which, when the database and the issuer are unreachable', async () => {
    // A port nobody listens on: taken, then released.
    const deadPort = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const { port } = s.address() as net.AddressInfo;
        s.close(() => resolve(port));
      });
    });
    const deadPool = createPool(`postgres://nobody:nothing@127.0.0.1:${deadPort}/none`, { max: 1 });
    const other = await startTestGateway({ patients: 1, gatewayOptions: { pool: deadPool, issuer: `http://127.0.0.1:${deadPort}/realms/none` } });
    try {
      const res = await fetch(other.url.replace(/\/graphql$/, '/readyz'));
      expect(res.status).toBe(503);
      const body = await res.json();
      expect(body).toEqual({ ready: false, checks: { database: 'unavailable', keys: 'ok', issuer: 'unavailable', kms: 'ok' } });
      // Liveness is not readiness: the process itself is fine.
      expect((await fetch(other.url.replace(/\/graphql$/, '/healthz'))).status).toBe(200);
    } finally {
      await other.close();
      await deadPool.end();
    }
  });
});

describe('tracing', () => {
  /** Enough of an SDK to see which spans the code opens and what they carry. */
  function recordingProvider() {
    const spans: { name: string; attributes: Attributes; ended: boolean; status?: unknown }[] = [];
    const startSpan = (name: string, options: { attributes?: Attributes } = {}): Span => {
      const rec: (typeof spans)[number] = { name, attributes: { ...options.attributes }, ended: false };
      spans.push(rec);
      const span: Span = {
        spanContext: () => INVALID_SPAN_CONTEXT,
        setAttribute: (k, v) => ((rec.attributes[k] = v), span),
        setAttributes: (a) => (Object.assign(rec.attributes, a), span),
        addEvent: () => span,
        addLink: () => span,
        addLinks: () => span,
        setStatus: (s) => ((rec.status = s), span),
        updateName: () => span,
        end: () => void (rec.ended = true),
        isRecording: () => true,
        recordException: () => undefined,
      };
      return span;
    };
    const tracer = {
      startSpan,
      startActiveSpan: (name: string, ...rest: unknown[]) => {
        const fn = rest.at(-1) as (s: Span) => unknown;
        return fn(startSpan(name, rest.length > 1 ? (rest[0] as { attributes?: Attributes }) : {}));
      },
    };
    return { provider: { getTracer: () => tracer } as unknown as TracerProvider, spans };
  }

  it('opens spans around auth, SQL, policy, decryption, audit and KMS when enabled, carrying no values', async () => {
    const { provider, spans } = recordingProvider();
    trace.setGlobalTracerProvider(provider);
    try {
      enableTracing(false);
      await gw.gql(await token('dr-north-1'), IDENTITY);
      expect(spans).toEqual([]);

      enableTracing(true);
      const fresh = await startTestGateway({ patients: 3 }); // cold keyring: KMS calls happen
      try {
        const r = await fresh.gql(await fresh.tokenFor('reg-north'), '{ patients(first: 10) { edges { node { id ssn givenName encounters { notes } } } } }');
        expect(r.body.data!.patients.edges.length).toBeGreaterThan(0);
        const names = new Set(spans.map((s) => s.name));
        for (const n of ['phigate.auth', 'phigate.sql', 'phigate.policy', 'phigate.decrypt', 'phigate.audit', 'phigate.kms']) expect(names).toContain(n);
        expect(spans.every((s) => s.ended)).toBe(true);
        // A read's own transaction: it reads and commits; its audit rows are the audit writer's, in a batch of many requests.
        const statements = spans.filter((s) => s.name === 'phigate.sql').map((s) => s.attributes['db.operation.name']);
        expect(statements).toEqual(expect.arrayContaining(['BEGIN', 'SELECT', 'COMMIT']));
        expect(statements).not.toContain('INSERT');
        // The registrar may not read notes: the refusal shows as a policy span, with no decrypt for it.
        expect(spans.some((s) => s.name === 'phigate.policy' && s.attributes['phigate.field'] === 'Encounter.notes')).toBe(true);
        expect(spans.some((s) => s.name === 'phigate.decrypt' && s.attributes['phigate.field'] === 'Encounter.notes')).toBe(false);
        const carried = JSON.stringify(spans);
        for (const [secret, what] of seededSecrets(fresh.data.patients)) {
          if (carried.includes(secret)) throw new Error(`a span carries ${what}`);
        }
      } finally {
        await fresh.close();
      }
    } finally {
      enableTracing(false);
      trace.disable();
    }
  });
});
