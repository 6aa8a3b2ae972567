import { createAuthenticator } from './auth/authenticate.ts';
import { createDevIssuerHandler } from './auth/dev-issuer.ts';
import { loadOrCreateDevIssuerKeys } from './auth/dev-issuer-keys.ts';
import { createOidcVerifier } from './auth/oidc.ts';
import type { Config } from './config.ts';
import { createFieldCipher, type FieldCipher } from './crypto/field-cipher.ts';
import { keyProviderFromConfig } from './crypto/keys/from-config.ts';
import { createKeyring, type Keyring } from './crypto/keys/keyring.ts';
import { createPgKeyStore } from './db/key-store.ts';
import { assertSafeAppRole, createPool, type Pool } from './db/pool.ts';
import { createGateway, type Gateway } from './http/gateway.ts';
import type { Logger } from './log.ts';
import { loadPolicy } from './policy/load.ts';
import { PHI_FIELDS } from './policy/phi-fields.ts';

export interface App {
  readonly pool: Pool;
  readonly keyring: Keyring;
  readonly cipher: FieldCipher;
  readonly gateway: Gateway;
  /** The issuer tokens must come from (the built-in one in development when none is configured). */
  readonly issuer: string;
}

export const devIssuerUrl = (config: Config): string => `http://${config.host}:${config.port}/dev-issuer`;

/** Everything the gateway needs, checked before it listens: any failure here stops start-up. */
export async function assembleApp(config: Config, appUrl: string, logger: Logger): Promise<App> {
  const policy = await loadPolicy(config.policyFile, PHI_FIELDS);
  const pool = createPool(appUrl, { max: config.pool.size });
  try {
    await assertSafeAppRole(pool);
    const keyring = createKeyring({ provider: await keyProviderFromConfig(config), store: createPgKeyStore(pool) });
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
      authenticate: createAuthenticator({ oidc }),
      logger,
      maxPageSize: config.maxPageSize,
      transaction: { statementTimeoutMs: config.timeouts.statementMs, idleInTransactionTimeoutMs: config.timeouts.idleInTransactionMs },
      graphiql: config.env === 'development',
      routes,
    });
    return { pool, keyring, cipher, gateway, issuer };
  } catch (err) {
    await pool.end();
    throw err;
  }
}
