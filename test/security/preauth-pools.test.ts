import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { assembleApp, endAppPools, type App } from '../../src/app.ts';
import { createApiKeyVerifier } from '../../src/auth/api-key.ts';
import { loadConfig } from '../../src/config.ts';
import { createPeppers } from '../../src/auth/api-key-pepper.ts';
import { parseApiKey } from '../../src/auth/api-key-secret.ts';
import { createLocalKeyProvider } from '../../src/crypto/keys/local.ts';
import { createPool, type Pool } from '../../src/db/pool.ts';
import type { PhigateError } from '../../src/errors.ts';
import { createLogger } from '../../src/log.ts';
import { loadPolicy } from '../../src/policy/load.ts';
import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';
import { createMemoryRateLimitStore } from '../../src/rate-limit/memory.ts';
import { createApiKey } from '../../src/records/api-keys.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';
import { refusingPort } from '../support/free-port.ts';
import { POLICY_FILE, startTestGateway, type TestGateway } from '../support/gateway.ts';
import { postJson, send } from './http.ts';

// What an unauthenticated client can make the gateway ask the database (a made-up API key, a
// token naming clinics, a /metrics scrape, a /readyz probe) never takes a request connection:
// with every one of them held, all of it is still answered at once. Real keys stay cached
// whatever number of made-up ids is tried, and a hung database refuses lookups with 503 in
// bounded time.

const randomKey = () => `phg_${randomUUID()}_${randomBytes(32).toString('base64url')}`;

describe('with every request connection held', () => {
  let gw: TestGateway;
  let held: pg.PoolClient[] = [];
  beforeAll(async () => {
    gw = await startTestGateway({ poolSize: 2 });
  });
  afterAll(async () => {
    for (const c of held) c.release();
    await gw?.close();
  });

  const holdRequestPool = async () => {
    held = await Promise.all([gw.pool.connect(), gw.pool.connect()]);
    expect(gw.pool.idleCount).toBe(0);
    expect(gw.pool.totalCount).toBe(gw.pool.options.max);
  };
  const release = () => {
    for (const c of held) c.release();
    held = [];
  };

  it('a flood of made-up API keys is refused with 401 at once, none waiting for a request connection', async () => {
    await holdRequestPool();
    try {
      const answers = await Promise.all(Array.from({ length: 60 }, () => postJson(gw, { query: '{ me { subject } }' }, null, { authorization: `ApiKey ${randomKey()}` })));
      // Fewer than the 64 lookups that may be pending at once. Queued on the request pool, each
      // waited out its 5 s connection timeout and failed.
      expect(answers.map((a) => `${a.status} ${a.json?.errors?.[0]?.extensions?.reason}`)).toEqual(answers.map(() => '401 invalid_api_key'));
      expect(gw.pool.waitingCount).toBe(0);
    } finally {
      release();
    }
  });

  it('/metrics answers, with the overdue-review count from the database', async () => {
    await holdRequestPool();
    try {
      const t0 = performance.now();
      const res = await send(gw.url.replace('/graphql', '/metrics'));
      expect(res.status).toBe(200);
      expect(res.text).toMatch(/^phigate_break_glass_overdue_reviews 0$/m);
      expect(res.text).toMatch(/^phigate_db_pool_idle_clients 0$/m);
      expect(performance.now() - t0).toBeLessThan(3_000);
    } finally {
      release();
    }
  });

  it('/readyz says the database is ready', async () => {
    await holdRequestPool();
    try {
      const res = await send(gw.url.replace('/graphql', '/readyz'));
      expect(res.status).toBe(200);
      expect(res.json).toMatchObject({ ready: true, checks: { database: 'ok' } });
    } finally {
      release();
    }
  });

  it("the clinic list a token's clinics are checked against loads without a request connection", async () => {
    // A fresh replica: its list of clinics is not loaded yet, so authenticating loads it.
    const fresh = await startTestGateway({ replicaOf: gw, poolSize: 1 });
    const heldFresh = await fresh.pool.connect();
    try {
      expect(fresh.pool.idleCount).toBe(0);
      const token = await fresh.tokenFor('reg-north', { clinics: ['c-north', 'c-phantom'] });
      const res = await postJson(fresh, { query: '{ me { subject clinics } }' }, token);
      expect(res.status).toBe(200);
      expect(res.json?.data?.me).toEqual({ subject: 'reg-north', clinics: ['c-north'] });
    } finally {
      heldFresh.release();
      await fresh.close();
    }
  });
});

describe('a flood of made-up API keys', () => {
  let gw: TestGateway;
  let partnerKey: string;
  beforeAll(async () => {
    gw = await startTestGateway({ poolSize: 4 });
    const created = await createApiKey(gw.pool, gw.apiKeys.service.peppers, await loadPolicy(POLICY_FILE, PHI_FIELDS), { ratePerMinute: 1_000_000, burst: 1_000_000 }, {
      actor: 'test',
      clinics: null,
      role: null,
      purpose: 'HSYSADMIN',
      audit: () => undefined,
    }, { partner: 'flood-lab', clinics: ['c-north'], fields: ['mrn'], purpose: 'TREAT' });
    partnerKey = created.key;
  });
  afterAll(async () => {
    await gw?.close();
  });

  // PHIGATE_FLOOD_MS=10000 for the measurement in the report (docs/scale-out.md); 3 s in the suite.
  it("never makes a partner's or a user's request wait for a request connection", async () => {
    const durationMs = Number(process.env.PHIGATE_FLOOD_MS ?? 3_000);
    const PAGE = '{ patients(first: 5) { edges { node { id } } } }';
    const token = await gw.tokenFor('reg-north');
    const end = performance.now() + durationMs;
    const flood = new Map<string, number>();
    const flooders = Array.from({ length: 32 }, async () => {
      while (performance.now() < end) {
        const r = await postJson(gw, { query: '{ me { subject } }' }, null, { authorization: `ApiKey ${randomKey()}` });
        const k = `${r.status} ${r.json?.errors?.[0]?.extensions?.reason}`;
        flood.set(k, (flood.get(k) ?? 0) + 1);
      }
    });
    const served = { partner: [] as number[], user: [] as number[] };
    const failed: string[] = [];
    const steady = async (who: 'partner' | 'user') => {
      while (performance.now() < end) {
        const t0 = performance.now();
        const r = await postJson(gw, { query: PAGE }, who === 'user' ? token : null, who === 'partner' ? { authorization: `ApiKey ${partnerKey}` } : {});
        if (r.status === 200 && r.json?.errors === undefined) served[who].push(performance.now() - t0);
        else failed.push(`${who} ${r.status}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    };
    let maxWaiting = 0;
    const sampler = setInterval(() => (maxWaiting = Math.max(maxWaiting, gw.pool.waitingCount)), 5);
    try {
      await Promise.all([...flooders, steady('partner'), steady('user')]);
    } finally {
      clearInterval(sampler);
    }
    const median = (xs: number[]) => Math.round([...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN);
    const tried = [...flood.values()].reduce((a, b) => a + b, 0);
    console.info(
      `flood of made-up keys: ${Math.round(tried / (durationMs / 1000))} refused/s (each a lookup); partner ${served.partner.length} served, median ${median(served.partner)} ms; ` +
        `user ${served.user.length} served, median ${median(served.user)} ms; most requests waiting for a request connection: ${maxWaiting}`,
    );
    expect(Object.fromEntries(flood)).toEqual({ '401 invalid_api_key': tried });
    expect(failed).toEqual([]);
    expect(served.partner.length).toBeGreaterThan(0);
    expect(served.user.length).toBeGreaterThan(0);
    // Before, every made-up key took a request connection for its lookup: 24 to 26 waited at once.
    expect(maxWaiting).toBe(0);
  }, 60_000);
});

describe('the gateway as src/app.ts assembles it', () => {
  let db: TestDatabase;
  let dataDir: string;
  let app: App;
  let url: string;
  beforeAll(async () => {
    db = await createTestDatabase();
    dataDir = await mkdtemp(path.join(tmpdir(), 'phigate-preauth-'));
    const config = loadConfig({
      PHIGATE_ENV: 'development',
      PHIGATE_DATA_DIR: dataDir,
      ...db.gatewayEnv,
      PHIGATE_LOCAL_MASTER_KEY: randomBytes(32).toString('base64'),
      PHIGATE_POOL_SIZE: '2',
      PHIGATE_PRINCIPAL_CONCURRENCY: '1',
    });
    app = await assembleApp(config, db.appUrl, createLogger('silent'));
    const { port } = await app.gateway.listen(0, '127.0.0.1');
    url = `http://127.0.0.1:${port}/graphql`;
  });
  afterAll(async () => {
    await app?.gateway.close();
    await app?.auditWriter.close();
    await app?.auditLog.stop();
    await app?.partnerKeys.close();
    if (app) await endAppPools(app);
    await db?.drop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('looks made-up API keys up without a request connection', async () => {
    const held = await Promise.all([app.pool.connect(), app.pool.connect()]);
    try {
      const answers = await Promise.all(
        Array.from({ length: 20 }, () =>
          send(url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `ApiKey ${randomKey()}` }, body: '{"query":"{ me { subject } }"}' }),
        ),
      );
      expect(answers.map((a) => `${a.status} ${a.json?.errors?.[0]?.extensions?.reason}`)).toEqual(answers.map(() => '401 invalid_api_key'));
    } finally {
      for (const c of held) c.release();
    }
  });
});

describe('the API-key verifier', () => {
  let db: TestDatabase;
  let pool: Pool;
  let realKey: string;
  let realId: string;
  const peppers = () => createPeppers(pool, provider);
  const provider = createLocalKeyProvider(randomBytes(32));

  beforeAll(async () => {
    db = await createTestDatabase();
    // Straight to PostgreSQL even in the run through PgBouncer: the hung-database case stops the
    // server processes of this pool's own sessions, and a fresh connection must reach a fresh one.
    pool = createPool(db.directAppUrl, { max: 2, applicationName: 'phigate-preauth-test' });
    await withClient(db.adminUrl, (c) => c.query(`INSERT INTO phigate.clinics (id, name) VALUES ('c-t', 'T')`));
    const created = await createApiKey(pool, peppers(), await loadPolicy(POLICY_FILE, PHI_FIELDS), { ratePerMinute: 1_000_000, burst: 1_000_000 }, {
      actor: 'test',
      clinics: null,
      role: null,
      purpose: 'HSYSADMIN',
      audit: () => undefined,
    }, { partner: 'cache-lab', clinics: ['c-t'], fields: ['mrn'], purpose: 'TREAT' });
    realKey = created.key;
    realId = parseApiKey(realKey)!.id;
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  /** The pool, counting the lookups of each key id. */
  const counting = (lookups: Map<string, number>) =>
    ({
      query: (...args: unknown[]) => {
        const first = args[0] as string | { values?: unknown[] };
        const id = String((typeof first === 'string' ? (args[1] as unknown[] | undefined) : first.values)?.[0]);
        lookups.set(id, (lookups.get(id) ?? 0) + 1);
        return (pool.query as (...a: unknown[]) => unknown)(...args);
      },
    }) as unknown as Pool;

  it('keeps a real key cached through more made-up ids than its cache holds, and a repeated unknown id is looked up once', async () => {
    const lookups = new Map<string, number>();
    const verifier = createApiKeyVerifier({ db: counting(lookups), peppers: peppers(), rateLimits: createMemoryRateLimitStore(), logger: createLogger('silent'), cacheTtlMs: 600_000 });
    try {
      expect((await verifier.verify(realKey)).keyId).toBe(realId);
      const repeated = randomKey();
      const refusals = new Set<string>();
      const t0 = performance.now();
      // More than the 10,000 rows the key cache holds, sent 50 at a time.
      for (let sent = 0; sent < 10_250; sent += 50) {
        const batch = Array.from({ length: 50 }, (_, i) => (i === 0 ? repeated : randomKey()));
        for (const r of await Promise.allSettled(batch.map((k) => verifier.verify(k)))) {
          refusals.add(r.status === 'rejected' ? `${r.reason.code}/${r.reason.reason}` : 'accepted');
        }
      }
      const seconds = (performance.now() - t0) / 1000;
      expect([...refusals]).toEqual(['UNAUTHENTICATED/invalid_api_key']);
      const total = [...lookups.values()].reduce((a, b) => a + b, 0);
      expect(total).toBeGreaterThan(10_000);
      console.info(`verifier: ${total} lookups of made-up ids in ${seconds.toFixed(1)} s (${Math.round(total / seconds)}/s)`);
      expect(lookups.get(parseApiKey(repeated)!.id)).toBe(1);
      expect((await verifier.verify(realKey)).keyId).toBe(realId);
      expect(lookups.get(realId)).toBe(1);
      // A revocation's forget() still reaches the row: the next use reads it again.
      verifier.forget(realId);
      expect((await verifier.verify(realKey)).keyId).toBe(realId);
      expect(lookups.get(realId)).toBe(2);
    } finally {
      await verifier.close();
    }
  }, 120_000);

  it("a lookup's database failure is answered by the shared mapping (src/db/failure.ts), anything else with 500; never as an invalid key, never in the server's words", async () => {
    const answerOf = async (db: Pool) => {
      const verifier = createApiKeyVerifier({ db, peppers: peppers(), rateLimits: createMemoryRateLimitStore(), logger: createLogger('silent') });
      try {
        const e = (await verifier.verify(randomKey()).then(
          () => null,
          (err: unknown) => err,
        )) as PhigateError;
        expect(JSON.stringify(e.toJSON())).not.toMatch(/ECONNREFUSED|relation|phigate\.|api_keys|does not exist/);
        return { code: e.code, reason: e.reason, message: e.message, http: e.extensions.http };
      } finally {
        await verifier.close();
      }
    };
    // Held for the test: a port found free and let go could be bound by another process meanwhile.
    const refusing = await refusingPort();
    onTestFinished(() => refusing.release());
    const nobody = createPool(`postgres://nobody@127.0.0.1:${refusing.port}/nothing`, { max: 1 });
    // A database without the gateway's schema: the lookup fails with 42P01, which is no database failure.
    const noSchema = new URL(db.adminUrl);
    noSchema.pathname = '/postgres';
    const elsewhere = createPool(noSchema.toString(), { max: 1 });
    try {
      expect(await answerOf(nobody)).toEqual({ code: 'INTERNAL', reason: 'db_unavailable', message: 'The database is unavailable.', http: { status: 503, headers: { 'Retry-After': '1' } } });
      expect(await answerOf(elsewhere)).toEqual({ code: 'INTERNAL', reason: 'api_key_lookup_failed', message: 'API keys cannot be checked now.', http: { status: 500 } });
    } finally {
      await Promise.all([nobody.end(), elsewhere.end()]);
    }
  });

  it('drops a lookup the database does not answer (503) instead of keeping its connection, and refuses past 64 pending lookups, except for a key it knows', async () => {
    const verifier = createApiKeyVerifier({
      db: pool,
      peppers: peppers(),
      rateLimits: createMemoryRateLimitStore(),
      logger: createLogger('silent'),
      cacheTtlMs: 200,
      lookupTimeoutMs: 500,
    });
    const role = new URL(db.appUrl).username;
    try {
      // The pepper and the real key's row are known (and then stale) before the database hangs.
      expect((await verifier.verify(realKey)).keyId).toBe(realId);
      await new Promise((r) => setTimeout(r, 250));
      const backends: number[] = await withClient(db.adminUrl, async (c) =>
        (await c.query('SELECT pid FROM pg_stat_activity WHERE usename = $1 AND datname = current_database()', [role])).rows.map((r) => r.pid),
      );
      expect(backends.length).toBeGreaterThan(0);
      const outcome = (p: Promise<unknown>) =>
        p.then(
          () => 'accepted',
          (e: { code: string; reason: string; extensions: { http?: { status: number } } }) => `${e.extensions.http?.status ?? 200} ${e.code}/${e.reason}`,
        );
      let pending: string[];
      let stale: string;
      let busy: string[];
      let elapsed: number;
      // SIGSTOP: the pool's server processes neither answer nor close, as when PostgreSQL hangs.
      for (const pid of backends) process.kill(pid, 'SIGSTOP');
      try {
        const t0 = performance.now();
        let floodSettled = 0;
        const flood = Array.from({ length: 64 }, () => outcome(verifier.verify(randomKey())).finally(() => floodSettled++));
        busy = await Promise.all(Array.from({ length: 10 }, () => outcome(verifier.verify(randomKey()))));
        // Refused at once: before any lookup on the hung connections reached its 500 ms timeout (a
        // bound in milliseconds raced the machine's load instead).
        expect(floodSettled).toBe(0);
        stale = await outcome(verifier.verify(realKey));
        pending = await Promise.all(flood);
        elapsed = performance.now() - t0;
      } finally {
        for (const pid of backends) process.kill(pid, 'SIGCONT');
      }
      expect(busy).toEqual(busy.map(() => '503 INTERNAL/api_key_lookups_busy'));
      // Those sent on the hung connections fail after the lookup timeout, and those connections
      // are dropped: the rest get fresh ones. Kept, every lookup queued behind them waited out
      // the pool's 5 s connection timeout.
      expect(pending.filter((o) => o === '503 INTERNAL/db_unavailable').length).toBeGreaterThan(0);
      expect(new Set(pending)).toEqual(new Set(['503 INTERNAL/db_unavailable', '401 UNAUTHENTICATED/invalid_api_key']));
      expect(stale).toBe('accepted');
      // Below the pool's 5 s connection timeout, which every lookup queued behind a kept hung
      // connection would have waited out.
      expect(elapsed).toBeLessThan(5_000);
    } finally {
      await verifier.close();
    }
  });
});
