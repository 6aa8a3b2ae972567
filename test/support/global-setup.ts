import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../../src/db/embedded.ts';
import { ensureAppLogin, migrate } from '../../src/db/migrate.ts';
import { onFreePort } from './free-port.ts';
import { startPgBouncer, type PgBouncer } from './pgbouncer.ts';

export const TEST_APP_ROLE = 'phigate_test_gateway';
export const TEST_APP_PASSWORD = 'phigate-test-only';

declare module 'vitest' {
  export interface ProvidedContext {
    phigateDb: { adminUrl: string; template: string; pgbouncer: TestPgBouncers | null };
  }
}

/** Ports of the two PgBouncers the gateway's pools go through when PHIGATE_TEST_VIA_PGBOUNCER=1. */
export interface TestPgBouncers {
  /** Requests' connections (DATABASE_URL). */
  readonly main: number;
  /** The audit writer's, key loads' and search counts' (PHIGATE_AUX_DATABASE_URL). */
  readonly aux: number;
}

/**
 * Server connections per test database in each PgBouncer: below the clients' pools (a test
 * gateway's 4 request connections, 2 key and 2 audit connections), so connections really are shared.
 */
const PGBOUNCER_POOL_SIZE = 2;

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
    const dataDir = dir;
    embedded = await onFreePort((port) => startEmbeddedPostgres({ dataDir, port, persistent: false }));
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
  const bouncers: PgBouncer[] = [];
  if (process.env.PHIGATE_TEST_VIA_PGBOUNCER === '1') {
    const upstream = new URL(adminUrl);
    const options = {
      upstream: { host: upstream.hostname, port: Number(upstream.port || 5432) },
      users: { [TEST_APP_ROLE]: TEST_APP_PASSWORD },
      poolSize: PGBOUNCER_POOL_SIZE,
    };
    bouncers.push(await startPgBouncer(options), await startPgBouncer(options));
  }
  const [main, aux] = bouncers;
  project.provide('phigateDb', { adminUrl, template, pgbouncer: main && aux ? { main: main.port, aux: aux.port } : null });

  return async () => {
    const c = new pg.Client({ connectionString: adminUrl });
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS ${template} WITH (FORCE)`);
    await c.end();
    await Promise.all(bouncers.map((b) => b.stop()));
    await embedded?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  };
}
