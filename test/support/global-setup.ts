import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../../src/db/embedded.ts';
import { ensureAppLogin, migrate } from '../../src/db/migrate.ts';
import { freePort } from './free-port.ts';

export const TEST_APP_ROLE = 'phigate_test_gateway';
export const TEST_APP_PASSWORD = 'phigate-test-only';

declare module 'vitest' {
  export interface ProvidedContext {
    phigateDb: { adminUrl: string; template: string };
  }
}


export function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

/**
 * One PostgreSQL for the whole run: TEST_DATABASE_URL (a superuser URL) when set, otherwise an
 * embedded one in a temporary directory. Migrations run once into a template database; each
 * test file then clones it (CREATE DATABASE ... TEMPLATE), which takes milliseconds.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let embedded: EmbeddedDatabase | null = null;
  let dir: string | null = null;
  let adminUrl = process.env.TEST_DATABASE_URL ?? null;
  if (!adminUrl) {
    dir = await mkdtemp(path.join(os.tmpdir(), 'phigate-test-'));
    embedded = await startEmbeddedPostgres({ dataDir: dir, port: await freePort(), persistent: false });
    adminUrl = embedded.superuserUrl;
  }
  const template = `phigate_tpl_${process.pid}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${template}`);
  await admin.query(`CREATE DATABASE ${template}`);
  await admin.end();
  const templateUrl = withDatabase(adminUrl, template);
  await migrate(templateUrl);
  const appUrl = new URL(templateUrl);
  appUrl.username = TEST_APP_ROLE;
  appUrl.password = TEST_APP_PASSWORD;
  await ensureAppLogin(templateUrl, appUrl.toString());
  project.provide('phigateDb', { adminUrl, template });

  return async () => {
    const c = new pg.Client({ connectionString: adminUrl });
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS ${template} WITH (FORCE)`);
    await c.end();
    await embedded?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  };
}
