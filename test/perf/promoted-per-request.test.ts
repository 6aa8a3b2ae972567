import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import { Session } from 'node:inspector/promises';
import { PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';
import { describe, it } from 'vitest';
import { startTestGateway } from '../support/gateway.ts';
import { openRequestTransaction } from '../../src/db/transaction.ts';
import { submit } from '../../src/db/submit.ts';

// What a request leaves in V8's old generation, one request at a time: a measurement, not a check,
// so it runs only when its variable is set (bench/README.md, "The tail of `patient(id)`: the full
// GCs' marking"):
//   PHIGATE_PERF_PROMOTED=1 TEST_DATABASE_URL=... npx vitest run test/perf/promoted-per-request.test.ts
// Each kind of request is sent PHIGATE_PERF_PROMOTED_N times (default 2,000) on one keep-alive
// connection, once to warm up and once measured; the old space's growth across the scavenges of the
// measured pass, per request, is what the scavenges promoted (one request in flight, so nothing of
// it should outlive a scavenge interval). PHIGATE_PERF_PROMOTED_ORDER: the kinds, comma-separated
// (`tx only`, `tx read only` and `pool query` drive the request transaction and a pool query directly:
// no HTTP, no GraphQL).
// PHIGATE_PERF_PROMOTED_PROFILE=prefix: a sampling heap profile of each measured pass without what
// the scavenges freed (prefix-<kind>.heapprofile, for bench/heap-sites.ts).
// PHIGATE_PERF_PROMOTED_SNAPSHOT=file: a heap snapshot once every request has ended.

const oldSpaceUsed = (): number => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')!.space_used_size;

function send(url: URL, path: string, method: 'GET' | 'POST', headers: http.OutgoingHttpHeaders, body: string, count: number): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  let done = 0;
  return new Promise((resolve, reject) => {
    const next = (): void => {
      const req = http.request(new URL(path, url), { method, agent, headers }, (res) => {
        res.on('data', () => undefined);
        res.on('end', () => {
          if (++done < count) return next();
          agent.destroy();
          resolve();
        });
      });
      req.on('error', reject);
      req.end(method === 'POST' ? body : undefined);
    };
    next();
  });
}

describe.skipIf(!process.env.PHIGATE_PERF_PROMOTED)('PROMOTED', () => {
  it('measures', async () => {
    const n = Number(process.env.PHIGATE_PERF_PROMOTED_N ?? 2_000);
    const gw = await startTestGateway({ patients: 200, poolSize: 10, });
    try {
      const patient = gw.data.patients.find((p) => p.clinicId === 'c-north')!;
      const token = await gw.issuer.token({ sub: 'reg-promoted', roles: ['registrar'], clinics: ['c-north'], mfa: true });
      const url = new URL(gw.url);
      const post = (query: object, auth: boolean) => {
        const body = JSON.stringify(query);
        const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...(auth ? { authorization: `Bearer ${token}` } : {}) };
        return () => send(url, '/graphql', 'POST', headers, body, n);
      };
      const kinds = new Map<string, () => Promise<void>>([
        ['by id', post({ query: 'query ($id: ID!) { patient(id: $id) { id givenName familyName birthDate mrn } }', variables: { id: patient.id } }, true)],
        ['id only', post({ query: 'query ($id: ID!) { patient(id: $id) { id } }', variables: { id: patient.id } }, true)],
        ['me', post({ query: '{ me { subject roles } }' }, true)],
        ['missing patient', post({ query: 'query ($id: ID!) { patient(id: $id) { id } }', variables: { id: '00000000-0000-4000-8000-000000000000' } }, true)],
        ['missing patient via yoga', () => {
          // Chunked (no content-length): not the fast path's one shape, so yoga's own Request/Response layer answers.
          const body = JSON.stringify({ query: 'query ($id: ID!) { patient(id: $id) { id } }', variables: { id: '00000000-0000-4000-8000-000000000000' } });
          return send(url, '/graphql', 'POST', { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body, n);
        }],
        ['typename', post({ query: '{ __typename }' }, true)],
        ['no token', post({ query: '{ __typename }' }, false)],
        ['tx only', async () => {
          for (let i = 0; i < n; i++) {
            const tx = openRequestTransaction(gw.pool, { actor: 'reg-promoted', actorKind: 'user', roles: ['registrar'], clinics: ['c-north'], requestId: `r${i}`, purpose: 'treatment' }, { preparedStatements: true });
            await tx.query('SELECT $1::text AS id', [patient.id]);
            await tx.commit();
          }
        }],
        ['tx read only', async () => {
          for (let i = 0; i < n; i++) {
            const tx = openRequestTransaction(gw.pool, { actor: 'reg-promoted', actorKind: 'user', roles: ['registrar'], clinics: ['c-north'], requestId: `r${i}`, purpose: 'treatment' }, { preparedStatements: true });
            tx.readOnly();
            await tx.query('SELECT $1::text AS id', [patient.id]);
            await tx.commit();
          }
        }],
        ['pool query', async () => {
          for (let i = 0; i < n; i++) {
            const c = await gw.pool.connect();
            await submit(c, 'SELECT $1::text AS id', [patient.id], 'probe_1');
            c.release();
          }
        }],
        ['healthz', () => send(url, '/healthz', 'GET', {}, '', n)],
      ]);
      const order = process.env.PHIGATE_PERF_PROMOTED_ORDER?.split(',') ?? [...kinds.keys()];
      let grown = 0;
      let scavenges = 0;
      let last = oldSpaceUsed();
      const observer = new PerformanceObserver((list) => {
        for (const e of list.getEntries()) {
          const now = oldSpaceUsed();
          if ((e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === 1) {
            scavenges++;
            grown += Math.max(0, now - last);
          }
          last = now;
        }
      });
      observer.observe({ entryTypes: ['gc'] });
      const profiler = new Session();
      profiler.connect();
      const prefix = process.env.PHIGATE_PERF_PROMOTED_PROFILE;
      for (const kind of order) {
        const go = kinds.get(kind);
        if (go === undefined) throw new Error(`no request kind ${JSON.stringify(kind)}`);
        await go();
        if (prefix) await profiler.post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: false } as never);
        grown = 0;
        scavenges = 0;
        last = oldSpaceUsed();
        await go();
        const kb = grown / 1024 / n;
        if (prefix) {
          const { profile } = await profiler.post('HeapProfiler.stopSampling');
          await writeFile(`${prefix}-${kind.replace(/\W+/g, '-')}.heapprofile`, JSON.stringify(profile));
        }
        console.log(`PROMOTED ${JSON.stringify({ kind, requests: n, scavenges, promotedKbPerRequest: Number(kb.toFixed(2)) })}`);
      }
      observer.disconnect();
      profiler.disconnect();
      if (process.env.PHIGATE_PERF_PROMOTED_SNAPSHOT) v8.writeHeapSnapshot(process.env.PHIGATE_PERF_PROMOTED_SNAPSHOT);
    } finally {
      await gw.close();
    }
  }, 900_000);
});
