import net from 'node:net';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { applyConfiguredThresholds } from '../audit/alert-thresholds.ts';
import type { Config } from '../config.ts';
import { startEmbeddedPostgres } from '../db/embedded.ts';
import { ensureAppLogin, migrate } from '../db/migrate.ts';
import { loadPolicy } from '../policy/load.ts';
import { PHI_FIELDS } from '../policy/phi-fields.ts';

export interface DatabaseUrls {
  readonly appUrl: string;
  readonly migrateUrl: string | null;
  /** Stops the embedded server when this process started it; a no-op otherwise. */
  stop(): Promise<void>;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.once('connect', () => s.end(() => resolve(true)));
    s.once('error', () => resolve(false));
  });
}

/**
 * The database URLs of this run. With DATABASE_URL set, those given. Otherwise the embedded
 * PostgreSQL under the data directory: reused when a running gateway already started it (so the
 * CLI works beside `npm start`), started (and migrated, with the gateway's login role) otherwise.
 */
export async function databaseUrls(config: Config, log: (line: string) => void): Promise<DatabaseUrls> {
  if (config.database) return { appUrl: config.database.appUrl, migrateUrl: config.database.migrateUrl, stop: async () => undefined };
  const port = config.embeddedPgPort;
  if (await portOpen(port)) {
    const secret = (name: string) => readFile(path.join(config.dataDir, name), 'utf8').then((s) => encodeURIComponent(s.trim()));
    const base = `127.0.0.1:${port}/phigate`;
    return {
      appUrl: `postgres://phigate_gateway:${await secret('pg-gateway.secret')}@${base}`,
      migrateUrl: `postgres://postgres:${await secret('pg-superuser.secret')}@${base}`,
      stop: async () => undefined,
    };
  }
  log(`starting embedded PostgreSQL (data in ${path.join(config.dataDir, 'pg')}, port ${port})`);
  const db = await startEmbeddedPostgres({ dataDir: config.dataDir, port });
  try {
    const policy = await loadPolicy(config.policyFile, PHI_FIELDS);
    const { applied } = await migrate(db.superuserUrl, { onProgress: log, policy });
    if (applied.length) log(`applied ${applied.length} migration(s)`);
    await applyConfiguredThresholds(db.superuserUrl, config.alertSweep.thresholds, log);
    await ensureAppLogin(db.superuserUrl, db.appUrl);
  } catch (err) {
    await db.stop();
    throw err;
  }
  return { appUrl: db.appUrl, migrateUrl: db.superuserUrl, stop: () => db.stop() };
}
