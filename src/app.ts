import { createAuthenticator } from './auth/authenticate.ts';
import { createPartnerKeys, type PartnerKeys } from './auth/partner-keys.ts';
import { createDevIssuerHandler } from './auth/dev-issuer.ts';
import { loadOrCreateDevIssuerKeys } from './auth/dev-issuer-keys.ts';
import { createOidcVerifier } from './auth/oidc.ts';
import type { Config } from './config.ts';
import { createFieldCipher, type FieldCipher } from './crypto/field-cipher.ts';
import { keyProviderFromConfig } from './crypto/keys/from-config.ts';
import { createKeyring, type Keyring } from './crypto/keys/keyring.ts';
import { createPgKeyStore } from './db/key-store.ts';
import { assertSafeAppRole, createPool, type Pool } from './db/pool.ts';
import { assertTlsConnection } from './db/tls.ts';
import { createGateway, type Gateway } from './http/gateway.ts';
import { loadTrustedDocuments } from './http/plugins/use-trusted-documents.ts';
import type { Logger } from './log.ts';
import { loadPolicy } from './policy/load.ts';
import { PHI_FIELDS } from './policy/phi-fields.ts';
import type { Tracing } from './telemetry/start-tracing.ts';

export interface App {
  readonly pool: Pool;
  /** Wrapped-key reads and writes only; see assembleApp. */
  readonly keyPool: Pool;
  readonly keyring: Keyring;
  readonly cipher: FieldCipher;
  readonly gateway: Gateway;
  /** The issuer tokens must come from (the built-in one in development when none is configured). */
  readonly issuer: string;
  /** Span export; `null` when no OTLP endpoint is configured. */
  readonly tracing: Tracing | null;
  readonly partnerKeys: PartnerKeys;
}

export const devIssuerUrl = (config: Config): string => `http://${config.host}:${config.port}/dev-issuer`;

/** Everything the gateway needs, checked before it listens: any failure here stops start-up. */
export async function assembleApp(config: Config, appUrl: string, logger: Logger): Promise<App> {
  const policy = await loadPolicy(config.policyFile, PHI_FIELDS);
  // Imported only when configured: without an endpoint the SDK is never loaded, and no provider is registered.
  const endpoint = config.otelExporterUrl;
  const tracing =
    endpoint === null
      ? null
      : await import('./telemetry/start-tracing.ts').then((t) => t.startTracing({ endpoint, scheduleDelayMs: config.otelScheduleDelayMs, logger }));
  const pool = createPool(appUrl, { max: config.pool.size, caFile: config.databaseCaFile });
  const keyPool = createPool(appUrl, { max: 2, caFile: config.databaseCaFile, applicationName: 'phigate-keys' });
  try {
    if (config.env === 'production') await assertTlsConnection(pool);
    await assertSafeAppRole(pool);
    // Keys load through a pool of their own: a request holding one of the main pool's connections
    // may wait for a key, and if every connection were held that way, a key load queued behind
    // them would never get one.
    const provider = await keyProviderFromConfig(config);
    const keyring = createKeyring({ provider, store: createPgKeyStore(keyPool) });
    const partnerKeys = createPartnerKeys({ config, db: pool, provider, logger });
    const cipher = createFieldCipher(keyring);
    const routes = [];
    let issuer = config.oidc.issuer;
    if (issuer === null) {
      // Only reachable in development: loadConfig refuses production without PHIGATE_OIDC_ISSUER.
      issuer = devIssuerUrl(config);
      const devIssuer = issuer;
      routes.push(createDevIssuerHandler({ issuer: () => devIssuer, keys: await loadOrCreateDevIssuerKeys(config.dataDir) }));
    }
    const oidc = createOidcVerifier({ ...config.oidc, issuer });
    const gateway = createGateway({
      pool,
      policy,
      keyring,
      cipher,
      authenticate: createAuthenticator({ oidc, apiKeys: partnerKeys.verifier }),
      apiKeys: partnerKeys.service,
      readiness: partnerKeys.readiness,
      logger,
      maxPageSize: config.maxPageSize,
      transaction: {
        statementTimeoutMs: config.timeouts.statementMs,
        idleInTransactionTimeoutMs: config.timeouts.idleInTransactionMs,
        preparedStatements: config.preparedStatements,
      },
      requestTimeoutMs: config.timeouts.requestMs,
      shutdownGraceMs: config.timeouts.shutdownGraceMs,
      queueLimit: config.pool.queueLimit,
      graphiql: config.env === 'development',
      routes,
      limits: config.limits,
      introspectionRoles: config.introspectionRoles,
      trustedDocuments: config.trustedDocumentsFile === null ? null : await loadTrustedDocuments(config.trustedDocumentsFile),
      corsOrigins: config.corsOrigins,
      issuer,
    });
    return { pool, keyPool, keyring, cipher, gateway, issuer, tracing, partnerKeys };
  } catch (err) {
    await Promise.all([pool.end(), keyPool.end(), tracing?.shutdown()]);
    throw err;
  }
}
