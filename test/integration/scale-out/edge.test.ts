import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';

// Behind a load balancer: whose address the audit trail records, and what the balancer's checks see.

const READ = 'query ($id: ID!) { patient(id: $id) { id givenName } }';
const FORGED = { 'x-forwarded-for': '198.51.100.66', forwarded: 'for=198.51.100.67' };

let trusting: TestGateway;
let untrusting: TestGateway;

beforeAll(async () => {
  // This test speaks from 127.0.0.1: to `trusting` it is a balancer, to `untrusting` a client.
  trusting = await startTestGateway({
    gatewayOptions: { clientAddress: { trustedProxies: ['127.0.0.0/8', '::1/128'], forwardedHeader: 'x-forwarded-for' }, metricsListener: { port: 0, host: '127.0.0.1' } },
  });
  untrusting = await startTestGateway({ replicaOf: trusting, gatewayOptions: { clientAddress: { trustedProxies: ['10.0.0.0/8', 'fd00::/8'], forwardedHeader: 'x-forwarded-for' } } });
});
afterAll(async () => {
  await untrusting?.close();
  await trusting?.close();
});

async function readAs(gw: TestGateway, headers: Record<string, string>): Promise<string> {
  const physician = trusting.data.staff.find((s) => s.roles.includes('physician'))!;
  const patient = trusting.data.patients.find((p) => p.careTeam.includes(physician.sub))!;
  const res = await gw.gql(await gw.tokenFor(physician.sub), READ, { id: patient.id }, headers);
  expect(res.body.errors).toBeUndefined();
  expect(res.body.data?.patient?.id).toBe(patient.id);
  return res.headers.get('x-request-id')!;
}

const addrsOf = async (requestId: string) => [...new Set((await trusting.auditRows('request_id = $1', [requestId])).map((r) => r.client_addr))];

describe('the audit client address behind a balancer (PHIGATE_TRUSTED_PROXIES)', () => {
  it('from a trusted balancer, the client it forwards; a hop the client forged to its left is not believed', async () => {
    const id = await readAs(trusting, { 'x-forwarded-for': '203.0.113.5, 198.51.100.23' });
    expect(await addrsOf(id)).toEqual(['198.51.100.23']);
  });

  it('from any other peer, the socket address: forged X-Forwarded-For and Forwarded are ignored', async () => {
    const id = await readAs(untrusting, FORGED);
    expect(await addrsOf(id)).toEqual(['127.0.0.1']);
  });

  it('a refused request is recorded with the same address', async () => {
    const res = await untrusting.gql('not-a-token', '{ me { subject } }', undefined, FORGED);
    expect(res.status).toBe(401);
    expect(await addrsOf(res.headers.get('x-request-id')!)).toEqual(['127.0.0.1']);
  });
});

describe("the balancer's checks and the metrics port", () => {
  it('/healthz and /readyz answer without credentials; /readyz names what it checked', async () => {
    const base = trusting.url.replace('/graphql', '');
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(Object.keys((await ready.json()).checks)).toEqual(expect.arrayContaining(['database', 'keys']));
  });

  it('with PHIGATE_METRICS_PORT, /metrics is served there only, and nothing else is', async () => {
    expect(trusting.metricsUrl).not.toBeNull();
    const metrics = await fetch(trusting.metricsUrl!);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain('phigate_db_pool_clients');
    expect((await fetch(trusting.url.replace('/graphql', '/metrics'))).status).toBe(404);
    expect((await fetch(trusting.metricsUrl!.replace('/metrics', '/graphql'), { method: 'POST' })).status).toBe(404);
  });

  it('a replica shutting down never reports ready', async () => {
    const draining = await startTestGateway({ replicaOf: trusting });
    const base = draining.url.replace('/graphql', '');
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    const closing = draining.close();
    // On a connection still open it is told 503; a new connection is refused: never a 200.
    const res = await fetch(`${base}/readyz`).catch(() => null);
    expect(res?.status ?? 503).toBe(503);
    await closing;
  });
});
