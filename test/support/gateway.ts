import { randomBytes } from 'node:crypto';
import path from 'node:path';
import pg from 'pg';
import { createAuditWriter, type AuditWriter } from '../../src/audit/writer.ts';
import { createApiKeyVerifier, type ApiKeyVerifier } from '../../src/auth/api-key.ts';
import { createPeppers } from '../../src/auth/api-key-pepper.ts';
import { createAuthenticator } from '../../src/auth/authenticate.ts';
import { createOidcVerifier } from '../../src/auth/oidc.ts';
import { createFieldCipher, type FieldCipher } from '../../src/crypto/field-cipher.ts';
import { createKeyring, type Keyring } from '../../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../../src/crypto/keys/local.ts';
import type { KeyProvider } from '../../src/crypto/keys/provider.ts';
import { createPgKeyStore } from '../../src/db/key-store.ts';
import { createSearchQuota } from '../../src/db/search-quota.ts';
import { assertSafeAppRole, createPool, type Pool } from '../../src/db/pool.ts';
import { loadConfig } from '../../src/config.ts';
import { createGateway, type Gateway, type GatewayDeps } from '../../src/http/gateway.ts';
import { createLogger } from '../../src/log.ts';
import { loadPolicy } from '../../src/policy/load.ts';
import { createMemoryRateLimitStore } from '../../src/rate-limit/memory.ts';
import type { RateLimitStore } from '../../src/rate-limit/store.ts';
import type { ApiKeyService } from '../../src/records/api-keys.ts';
import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';
import { generateDataset, type Dataset, type SeedStaff } from '../../src/seed/dataset.ts';
import { writeDataset } from '../../src/seed/write.ts';
import { createTestDatabase, preparedStatements, withClient, type TestDatabase } from './db.ts';
import { startTestIssuer, type TestIssuer } from './oidc-issuer.ts';

export const POLICY_FILE = path.resolve(import.meta.dirname, '../../policies/default.yaml');

export interface GqlResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly body: { data?: Record<string, any> | null; errors?: { message: string; path?: (string | number)[]; extensions?: Record<string, any> }[] };
  readonly text: string;
}

export interface TestGateway {
  readonly url: string;
  /** /metrics on a listener of its own when gatewayOptions.metricsListener asks for one. */
  readonly metricsUrl: string | null;
  readonly db: TestDatabase;
  readonly pool: Pool;
  /** What runs before authentication (key lookups, clinic list, /metrics, /readyz), as in src/app.ts. */
  readonly preauthPool: Pool;
  readonly issuer: TestIssuer;
  readonly data: Dataset;
  readonly cipher: FieldCipher;
  readonly keyring: Keyring;
  readonly keyProvider: KeyProvider;
  readonly gateway: Gateway;
  readonly auditWriter: AuditWriter;
  /** Partner keys: the verifier behind `Authorization: ApiKey`, and what the key mutations use. */
  readonly apiKeys: { readonly verifier: ApiKeyVerifier; readonly service: ApiKeyService };
  /** Every log line the gateway wrote, parsed. */
  readonly logs: Record<string, any>[];
  /** The per-request summary line of the last request. */
  lastRequestLog(): Record<string, any> | undefined;
  staff(sub: string): SeedStaff;
  /** A token for a seeded staff member (MFA unless said otherwise). */
  tokenFor(sub: string, over?: { mfa?: boolean; roles?: string[]; clinics?: string[] }): Promise<string>;
  gql(token: string | null, query: string, variables?: Record<string, unknown>, headers?: Record<string, string>): Promise<GqlResponse>;
  /** Audit rows as the auditor sees them. */
  auditRows(where?: string, params?: unknown[]): Promise<Record<string, any>[]>;
  admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/**
 * The real gateway on port 0: real PostgreSQL, real issuer over HTTP, real keys, seeded synthetic
 * data. Its edge settings (limits, introspection roles, CORS) are a fresh development deployment's
 * defaults; `gatewayOptions` overrides any of the gateway's dependencies.
 */
export async function startTestGateway(
  opts: {
    patients?: number;
    poolSize?: number;
    gatewayOptions?: Partial<GatewayDeps>;
    /** Where it listens; default any free port (0). */
    port?: number;
    /** The issuer whose tokens it accepts instead of the test issuer's (the development issuer, for the console). */
    oidcIssuer?: string;
    /** Another replica of that gateway: same database, data, issuer and keys, which its close() leaves alone. */
    replicaOf?: TestGateway;
    /** Partner keys: the rate-limit store (default in-process) and how long a key is remembered (default 5 s). */
    apiKeys?: { rateLimits?: RateLimitStore; cacheSeconds?: number };
  } = {},
): Promise<TestGateway> {
  const base = opts.replicaOf;
  const db = base?.db ?? (await createTestDatabase());
  const pool = createPool(db.appUrl, { max: opts.poolSize ?? 4 });
  await assertSafeAppRole(pool);
  const issuer = base?.issuer ?? (await startTestIssuer());
  const provider = base?.keyProvider ?? createLocalKeyProvider(randomBytes(32));
  const data = base?.data ?? generateDataset({ patients: opts.patients ?? 12, seed: 42 });
  const admin = <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => withClient(db.adminUrl, fn);
  const seedKeyring = createKeyring({ provider, store: createPgKeyStore(pool) });
  if (!base) await admin((c) => writeDataset(c, seedKeyring, data));
  // The gateway gets its own keyring and cipher, cold like a freshly started replica: its stats
  // count only what requests do, and a test may tamper with stored keys before first use.
  // Keys load through their own pool, as in src/app.ts.
  const keyPool = createPool(db.auxUrl, { max: 2 });
  const auditPool = createPool(db.auxUrl, { max: loadConfig({}).audit.connections, applicationName: 'phigate-audit' });
  const preauthPool = createPool(db.auxUrl, { max: 2, applicationName: 'phigate-preauth' });
  const sweepPool = createPool(db.appUrl, { max: 1, applicationName: 'phigate-alert-sweep' });
  const keyring = createKeyring({ provider, store: createPgKeyStore(keyPool) });
  const cipher = createFieldCipher(keyring);

  const logs: Record<string, any>[] = [];
  const defaults = loadConfig({});
  const oidc = createOidcVerifier({
    issuer: opts.oidcIssuer ?? issuer.issuer,
    audience: 'phigate',
    algorithms: ['ES256', 'RS256'],
    clockToleranceSeconds: 30,
    rolesClaim: 'roles',
    clinicsClaim: 'clinics',
    mfaAcrValues: [],
  });
  const logger = createLogger('info', { write: (line: string) => void logs.push(JSON.parse(line)) });
  const auditWriter = createAuditWriter({
    pool: auditPool,
    queueLimit: defaults.audit.queueLimit,
    logger,
    preparedStatements: preparedStatements(),
    gather: { percent: defaults.audit.gatherPercent, maxMs: defaults.audit.gatherMaxMs },
  });
  const peppers = createPeppers(preauthPool, provider);
  const verifier = createApiKeyVerifier({
    db: preauthPool,
    peppers,
    rateLimits: opts.apiKeys?.rateLimits ?? createMemoryRateLimitStore(),
    logger,
    cacheTtlMs: (opts.apiKeys?.cacheSeconds ?? 5) * 1000,
  });
  const apiKeys = { verifier, service: { peppers, defaults: defaults.apiKeys, forget: (id: string) => verifier.forget(id) } };
  const gateway = createGateway({
    pool,
    preauthPool,
    sweepPool,
    auditWriter,
    searchQuota: createSearchQuota(auditPool, { preparedStatements: preparedStatements() }),
    policy: await loadPolicy(POLICY_FILE, PHI_FIELDS),
    keyring,
    cipher,
    authenticate: createAuthenticator({ oidc, apiKeys: verifier }),
    apiKeys: apiKeys.service,
    logger,
    maxPageSize: 100,
    // Suites search far more often than a person does; searches.test.ts tests the limit itself.
    searchesPerMinute: 100_000,
    limits: defaults.limits,
    introspectionRoles: defaults.introspectionRoles,
    trustedDocuments: null,
    corsOrigins: defaults.corsOrigins,
    issuer: opts.oidcIssuer ?? issuer.issuer,
    // The default concurrency share, but no request-rate share: tests drive one principal far faster
    // than a person would; test/security/cheap-dos.test.ts sets the shares it tests.
    principals: { ...defaults.principals, ratePerSecond: 1_000_000, burst: 1_000_000 },
    ...opts.gatewayOptions,
    // A test's own transaction options add to the pooler's: through PgBouncer nothing may be named,
    // whatever timeouts the test sets (a named statement there meets another client's of that name).
    transaction: { preparedStatements: preparedStatements(), ...opts.gatewayOptions?.transaction },
  });
  const close = async (): Promise<void> => {
    await gateway.close();
    await verifier.close();
    await auditWriter.close();
    await Promise.all([pool.end(), keyPool.end(), auditPool.end(), preauthPool.end(), sweepPool.end()]);
    if (base) return;
    await issuer.close();
    await db.drop();
  };
  // A port the caller chose may be taken by then (test/support/free-port.ts, onFreePort): nothing is left behind.
  const { port, metricsPort } = await gateway.listen(opts.port ?? 0, '127.0.0.1').catch(async (err: unknown) => {
    await close();
    throw err;
  });
  const url = `http://127.0.0.1:${port}/graphql`;

  const staff = (sub: string) => {
    const s = data.staff.find((x) => x.sub === sub);
    if (!s) throw new Error(`no seeded staff ${sub}`);
    return s;
  };
  return {
    url,
    metricsUrl: metricsPort === undefined ? null : `http://127.0.0.1:${metricsPort}/metrics`,
    db,
    pool,
    preauthPool,
    issuer,
    data,
    cipher,
    keyring,
    keyProvider: provider,
    gateway,
    auditWriter,
    apiKeys,
    logs,
    lastRequestLog: () => logs.filter((l) => l.msg === 'request').at(-1),
    staff,
    tokenFor: (sub, over = {}) => {
      const s = data.staff.find((x) => x.sub === sub);
      return issuer.token({ sub, roles: over.roles ?? [...(s?.roles ?? [])], clinics: over.clinics ?? [...(s?.clinics ?? [])], mfa: over.mfa ?? true });
    },
    async gql(token, query, variables, headers = {}) {
      const res = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
        body: JSON.stringify({ query, variables }),
      });
      const text = await res.text();
      return { status: res.status, headers: res.headers, body: JSON.parse(text), text };
    },
    auditRows: (where = 'true', params = []) =>
      admin(async (c) => {
        await c.query('SET ROLE phigate_auditor');
        return (await c.query(`SELECT * FROM phigate.audit_events WHERE ${where} ORDER BY id`, params)).rows;
      }),
    admin,
    close,
  };
}
