import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { TEST_APP_PASSWORD, TEST_APP_ROLE, withDatabase } from './global-setup.ts';

export interface TestDatabase {
  readonly name: string;
  /** Superuser (or TEST_DATABASE_URL's role): the migrator and seeder of tests. */
  readonly adminUrl: string;
  /** The gateway's login role: member of phigate_app only (through PgBouncer when the run says so). */
  readonly appUrl: string;
  /** The gateway's login role straight to PostgreSQL, for a test of what one server session does. */
  readonly directAppUrl: string;
  /** The same role for the audit writer's, key loads' and search counts' pools (PHIGATE_AUX_DATABASE_URL). */
  readonly auxUrl: string;
  /** What a gateway process needs to reach this database: DATABASE_URL and, through PgBouncer, its settings. */
  readonly gatewayEnv: Readonly<Record<string, string>>;
  /** A URL for any login role of this cluster, e.g. one a test creates. */
  urlAs(user: string, password: string): string;
  drop(): Promise<void>;
}

/**
 * PHIGATE_TEST_VIA_PGBOUNCER=1: the gateway's connections go through PgBouncer in transaction mode
 * (Debian's 1.18 keeps no prepared statements per client, so none are named).
 */
export const viaPgBouncer = (): boolean => inject('phigateDb').pgbouncer !== null;
export const preparedStatements = (): boolean => !viaPgBouncer();

/** A fresh, migrated database cloned from the run's template; drop it in afterAll. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const { adminUrl, template, pgbouncer } = inject('phigateDb');
  const name = `phigate_t_${randomBytes(6).toString('hex')}`;
  await withClient(adminUrl, (c) => c.query(`CREATE DATABASE ${name} TEMPLATE ${template}`));
  const dbAdminUrl = withDatabase(adminUrl, name);
  const urlAs = (user: string, password: string) => {
    const u = new URL(dbAdminUrl);
    u.username = user;
    u.password = password;
    return u.toString();
  };
  const appUrl = urlAs(TEST_APP_ROLE, TEST_APP_PASSWORD);
  const through = (port: number | undefined) => {
    if (port === undefined) return appUrl;
    const u = new URL(appUrl);
    u.hostname = '127.0.0.1';
    u.port = String(port);
    return u.toString();
  };
  const gatewayEnv: Record<string, string> = { DATABASE_URL: through(pgbouncer?.main) };
  if (pgbouncer) Object.assign(gatewayEnv, { PHIGATE_AUX_DATABASE_URL: through(pgbouncer.aux), PHIGATE_PREPARED_STATEMENTS: 'off' });
  return {
    name,
    adminUrl: dbAdminUrl,
    appUrl: through(pgbouncer?.main),
    directAppUrl: appUrl,
    auxUrl: through(pgbouncer?.aux),
    gatewayEnv,
    urlAs,
    async drop() {
      await withClient(adminUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

/** Runs `fn` with a fresh client on `url`, closed afterwards whatever happens. */
export async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}
