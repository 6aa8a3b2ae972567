import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { TEST_APP_PASSWORD, TEST_APP_ROLE, withDatabase } from './global-setup.ts';

export interface TestDatabase {
  readonly name: string;
  /** Superuser (or TEST_DATABASE_URL's role): the migrator and seeder of tests. */
  readonly adminUrl: string;
  /** The gateway's login role: member of phigate_app only. */
  readonly appUrl: string;
  /** A URL for any login role of this cluster, e.g. one a test creates. */
  urlAs(user: string, password: string): string;
  drop(): Promise<void>;
}

/** A fresh, migrated database cloned from the run's template; drop it in afterAll. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const { adminUrl, template } = inject('phigateDb');
  const name = `phigate_t_${randomBytes(6).toString('hex')}`;
  await withClient(adminUrl, (c) => c.query(`CREATE DATABASE ${name} TEMPLATE ${template}`));
  const dbAdminUrl = withDatabase(adminUrl, name);
  const urlAs = (user: string, password: string) => {
    const u = new URL(dbAdminUrl);
    u.username = user;
    u.password = password;
    return u.toString();
  };
  return {
    name,
    adminUrl: dbAdminUrl,
    appUrl: urlAs(TEST_APP_ROLE, TEST_APP_PASSWORD),
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
