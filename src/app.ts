import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { createAlerts } from './audit/alerts.ts';
import { reportAlertThresholds } from './audit/alert-thresholds.ts';
import { auditSigner } from './audit/log/from-config.ts';
import { createLogRunner, type LogRunner } from './audit/log/runner.ts';
import { sinksFromConfig } from './audit/sink/from-config.ts';
import { createAuditWriter, type AuditWriter } from './audit/writer.ts';
import { createAuthenticator } from './auth/authenticate.ts';
import { checkIssuer } from './auth/check-issuer.ts';
import { createPartnerKeys, type PartnerKeys } from './auth/partner-keys.ts';
import { createDevIssuerHandler } from './auth/dev-issuer.ts';
import { devIssuerUrl } from './auth/dev-issuer-url.ts';
import type { DevStaff } from './auth/dev-login.ts';
import { loadOrCreateDevIssuerKeys, type DevIssuerKeys } from './auth/dev-issuer-keys.ts';
import { mintDevToken } from './auth/dev-token.ts';
import { createOidcVerifier } from './auth/oidc.ts';
import { ConfigError, type Config } from './config.ts';
import { nativeUnavailable, useAead, type AeadImplementation } from './crypto/aead.ts';
import { createFieldCipher, type FieldCipher } from './crypto/field-cipher.ts';
import { assertKeyUsable } from './crypto/keys/check-provider.ts';
import { keyProviderFromConfig } from './crypto/keys/from-config.ts';
import { createKeyring, type Keyring } from './crypto/keys/keyring.ts';
import { createPgKeyStore } from './db/key-store.ts';
import { createSearchQuota } from './db/search-quota.ts';
import { assertSafeAppRole, createPool, type Pool } from './db/pool.ts';
import { assertRowScopes, RowScopeError } from './db/row-scopes.ts';
import { assertTlsConnection } from './db/tls.ts';
import { createGateway, type Gateway } from './http/gateway.ts';
import { createConsoleRoute } from './http/console.ts';
import { createGraphiqlRoute } from './http/graphiql.ts';
import { loadTrustedDocuments } from './http/plugins/use-trusted-documents.ts';
import type { Logger } from './log.ts';
import { loadPolicy } from './policy/load.ts';
import { PHI_FIELDS } from './policy/phi-fields.ts';
import type { Tracing } from './telemetry/start-tracing.ts';

export interface App {
  readonly pool: Pool;
  /** Wrapped-key reads and writes only; see assembleApp. */
  readonly keyPool: Pool;
  /** The audit writer's own connections. */
  readonly auditPool: Pool;
  /** Work anyone can cause before authenticating (key lookups, the clinic list, /metrics, /readyz); see assembleApp. */
  readonly preauthPool: Pool;
  /** Search counts (src/db/search-quota.ts), apart from the writer's connections. */
  readonly quotaPool: Pool;
  readonly auditWriter: AuditWriter;
  readonly keyring: Keyring;
  readonly cipher: FieldCipher;
  readonly gateway: Gateway;
  /** The issuer tokens must come from (the built-in one in development when none is configured). */
  readonly issuer: string;
  /** Span export; `null` when no OTLP endpoint is configured. */
  readonly tracing: Tracing | null;
  readonly partnerKeys: PartnerKeys;
  /** Sealing, checkpoints and the outside sink (docs/audit-log.md), on a pool of one connection of its own. */
  readonly logPool: Pool;
  /** The alert sweep's one connection (src/audit/alert-sweep.ts), apart from requests'. */
  readonly sweepPool: Pool;
  readonly auditLog: LogRunner;
}

/** Ends every connection pool of the app: the one list, so that no pool is left open at shutdown. */
export async function endAppPools(app: App): Promise<void> {
  await Promise.all([app.pool, app.keyPool, app.auditPool, app.preauthPool, app.quotaPool, app.logPool, app.sweepPool].map((p) => p.end()));
}

// Before any pool is opened: PHIGATE_AEAD=native without a loadable addon stops start-up with nothing to close.
function chooseAead(config: Config, logger: Logger): void {
  let aead: AeadImplementation;
  try {
    aead = useAead(config.aead);
  } catch (err) {
    throw new ConfigError('PHIGATE_AEAD', (err as Error).message);
  }
  const why = aead === 'native' ? undefined : config.aead === 'node' ? 'PHIGATE_AEAD=node' : (nativeUnavailable() ?? undefined);
  logger.info({ aead, why }, `aead: ${aead}`);
}

/** Everything the gateway needs, checked before it listens: any failure here stops start-up. */
export async function assembleApp(config: Config, appUrl: string, logger: Logger): Promise<App> {
  chooseAead(config, logger);
  const policy = await loadPolicy(config.policyFile, PHI_FIELDS);
  // Introspection goes by the roles a principal can act in, which are the policy's (use-no-reconnaissance.ts):
  // a name it does not define would let nobody introspect, silently.
  const undefinedRole = config.introspectionRoles.find((r) => r !== '*' && !policy.roles.has(r));
  if (undefinedRole !== undefined) throw new ConfigError('PHIGATE_INTROSPECTION_ROLES', `names a role the policy does not define: ${undefinedRole}`);
  // Imported only when configured: without an endpoint the SDK is never loaded, and no provider is registered.
  const endpoint = config.otelExporterUrl;
  const tracing =
    endpoint === null
      ? null
      : await import('./telemetry/start-tracing.ts').then((t) => t.startTracing({ endpoint, scheduleDelayMs: config.otelScheduleDelayMs, logger }));
  const pool = createPool(appUrl, { max: config.pool.size, caFile: config.databaseCaFile });
  // Behind PgBouncer these two pools must draw on a server pool of their own (config.auxDatabaseUrl).
  const auxUrl = config.auxDatabaseUrl ?? appUrl;
  const keyPool = createPool(auxUrl, { max: 2, caFile: config.databaseCaFile, applicationName: 'phigate-keys' });
  // The writer's batches never wait behind requests for a connection, nor requests behind them.
  const auditPool = createPool(auxUrl, { max: config.audit.connections, caFile: config.databaseCaFile, applicationName: 'phigate-audit' });
  const auditWriter = createAuditWriter({
    pool: auditPool,
    queueLimit: config.audit.queueLimit,
    logger,
    preparedStatements: config.preparedStatements,
    gather: { percent: config.audit.gatherPercent, maxMs: config.audit.gatherMaxMs },
  });
  // Search counts keep out of the writer's connections: a burst of searches would delay every read's audit commit.
  const quotaPool = createPool(auxUrl, { max: 1, caFile: config.databaseCaFile, applicationName: 'phigate-search-quota' });
  const logPool = createPool(appUrl, { max: 1, caFile: config.databaseCaFile, applicationName: 'phigate-audit-log' });
  // The alert sweep, one statement of 100 ms or more every PHIGATE_ALERT_SWEEP_SECONDS, takes none of
  // the request pool's connections. On DATABASE_URL like the sealer, not the auxiliary URL: behind
  // PgBouncer that entry's few server connections carry the audit commits every read waits for.
  const sweepPool = createPool(appUrl, { max: 1, caFile: config.databaseCaFile, applicationName: 'phigate-alert-sweep' });
  // What an unauthenticated client can make the gateway ask the database (a made-up API key, a
  // token naming clinics, a /metrics scrape, a /readyz probe) goes through connections of its own:
  // a flood of it must never take, or wait behind, the connections requests run in.
  const preauthPool = createPool(auxUrl, { max: 2, caFile: config.databaseCaFile, applicationName: 'phigate-preauth' });
  try {
    if (config.env === 'production') await assertTlsConnection(pool);
    await assertSafeAppRole(pool);
    await assertRowScopes(pool, policy, config.policyFile).catch((err: unknown) => {
      throw err instanceof RowScopeError ? new ConfigError('PHIGATE_POLICY_FILE', err.message) : err;
    });
    await reportAlertThresholds(pool, config.alertSweep.thresholds, logger);
    // Keys load through a pool of their own: a request holding one of the main pool's connections
    // may wait for a key, and if every connection were held that way, a key load queued behind
    // them would never get one.
    const provider = await keyProviderFromConfig(config);
    // A checkpoint signer that cannot be had (key file readable by others, wrong KMS key) stops start-up.
    const logSigner = await auditSigner(config);
    // A production gateway that cannot use its master key would start and then fail every request.
    if (config.env === 'production') await assertKeyUsable(provider, config.kms.provider === 'aws' ? 'PHIGATE_KMS_KEY_ID' : 'PHIGATE_KMS');
    const keyring = createKeyring({ provider, store: createPgKeyStore(keyPool), cache: config.keyCache });
    const partnerKeys = await createPartnerKeys({ config, db: preauthPool, provider, logger });
    const cipher = createFieldCipher(keyring);
    const routes = [];
    let issuer = config.oidc.issuer;
    let devKeys: DevIssuerKeys | null = null;
    if (issuer !== null) await checkConfiguredIssuer(issuer, logger);
    else {
      // Only reachable in development: loadConfig refuses production without PHIGATE_OIDC_ISSUER.
      issuer = devIssuerUrl(config);
      const devIssuer = issuer;
      devKeys = await loadOrCreateDevIssuerKeys(config.dataDir);
      const manifest = path.join(config.dataDir, 'seed.json');
      routes.push(
        createDevIssuerHandler({
          issuer: () => devIssuer,
          keys: devKeys,
          login: {
            staff: () => readSeedStaff(manifest),
            audience: config.oidc.audience,
            rolesClaim: config.oidc.rolesClaim,
            clinicsClaim: config.oidc.clinicsClaim,
            tokenTtlSeconds: DEV_LOGIN_TOKEN_TTL_SECONDS,
          },
        }),
      );
    }
    routes.push(await createConsoleRoute({ issuer, clientId: config.oidc.consoleClientId }));
    if (config.graphiql) routes.push(await createGraphiqlRoute(graphiqlOptions(config, issuer, devKeys)));
    const oidc = createOidcVerifier({
      ...config.oidc,
      issuer,
      maxLifetimeSeconds: config.oidc.maxTokenLifetimeSeconds,
      maxAuthAgeSeconds: config.oidc.maxAuthAgeSeconds,
    });
    const gateway = createGateway({
      pool,
      preauthPool,
      auditWriter,
      searchQuota: createSearchQuota(quotaPool, { preparedStatements: config.preparedStatements }),
      policy,
      keyring,
      cipher,
      authenticate: createAuthenticator({ oidc, apiKeys: partnerKeys.verifier }),
      apiKeys: partnerKeys.service,
      readiness: partnerKeys.readiness,
      logger,
      maxPageSize: config.maxPageSize,
      searchesPerMinute: config.searchesPerMinute,
      transaction: {
        statementTimeoutMs: config.timeouts.statementMs,
        idleInTransactionTimeoutMs: config.timeouts.idleInTransactionMs,
        preparedStatements: config.preparedStatements,
      },
      requestTimeoutMs: config.timeouts.requestMs,
      shutdownGraceMs: config.timeouts.shutdownGraceMs,
      serverTimeouts: config.timeouts,
      principals: config.principals,
      refusals: config.refusals,
      maxTokenClinics: config.oidc.maxTokenClinics,
      queueLimit: config.pool.queueLimit,
      routes,
      limits: config.limits,
      introspectionRoles: config.introspectionRoles,
      trustedDocuments: config.trustedDocumentsFile === null ? null : await loadTrustedDocuments(config.trustedDocumentsFile),
      corsOrigins: config.corsOrigins,
      issuer,
      breakGlass: config.breakGlass,
      alerts: createAlerts({ webhookUrl: config.alertWebhookUrl, logger }),
      alertSweepSeconds: config.alertSweep.sweepSeconds,
      sweepPool,
      clientAddress: config,
      metricsListener: config.metricsPort === null ? null : { port: config.metricsPort, host: config.metricsHost },
    });
    const auditLog = createLogRunner({ pool: logPool, signer: logSigner, settings: config.auditLog, sinks: await sinksFromConfig(config.auditLog), logger });
    return { pool, keyPool, auditPool, preauthPool, quotaPool, auditWriter, keyring, cipher, gateway, issuer, tracing, partnerKeys, logPool, sweepPool, auditLog };
  } catch (err) {
    await Promise.all([pool.end(), keyPool.end(), auditPool.end(), quotaPool.end(), logPool.end(), sweepPool.end(), preauthPool.end(), tracing?.shutdown()]);
    throw err;
  }
}

/** Long enough for a review session, short enough that the console's expiry handling is seen. */
const DEV_LOGIN_TOKEN_TTL_SECONDS = 900;

/** The staff the development login page offers: those of the seed manifest, none before the first seed. */
async function readSeedStaff(manifest: string): Promise<DevStaff[]> {
  try {
    return (JSON.parse(await readFile(manifest, 'utf8')) as { staff: DevStaff[] }).staff;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** The seeded physician GraphiQL signs in as with the development issuer (see `.phigate/seed.json`). */
const GRAPHIQL_DEV_USER = { subject: 'dr-north-1', roles: ['physician'], clinics: ['c-north'] };

/**
 * GraphiQL's starting headers: with the development issuer, a fresh token of a seeded physician on
 * every page load; with a real issuer, where its access token goes.
 */
function graphiqlOptions(config: Config, issuer: string, devKeys: DevIssuerKeys | null) {
  const headers =
    devKeys === null
      ? async () => ({ Authorization: `Bearer <an access token from ${issuer} for audience ${config.oidc.audience}>` })
      : async () => {
          const token = await mintDevToken(devKeys, {
            ...GRAPHIQL_DEV_USER,
            issuer,
            audience: config.oidc.audience,
            mfa: true,
            rolesClaim: config.oidc.rolesClaim,
            clinicsClaim: config.oidc.clinicsClaim,
          });
          return { Authorization: `Bearer ${token}` };
        };
  return {
    endpoint: '/graphql',
    headers,
    defaultQuery: '{\n  me { subject roles mfa }\n  patients(first: 5) { edges { node { id mrn ssn givenName familyName encounters { kind reason } } } }\n}\n',
  };
}

async function checkConfiguredIssuer(issuer: string, logger: Logger): Promise<void> {
  const check = await checkIssuer(issuer);
  if (check.ok) return;
  if (!check.unreachable) {
    throw new ConfigError('PHIGATE_OIDC_ISSUER', check.problem);
  }
  logger.warn({ issuer, problem: check.problem }, 'the OIDC issuer does not answer; tokens are refused until it does');
}
