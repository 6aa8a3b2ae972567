import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ParseArgsConfig } from 'node:util';
import { applyConfiguredThresholds } from '../audit/alert-thresholds.ts';
import { loadOrCreateDevIssuerKeys } from '../auth/dev-issuer-keys.ts';
import { devIssuerUrl } from '../auth/dev-issuer-url.ts';
import { mintDevToken } from '../auth/dev-token.ts';
import type { Config } from '../config.ts';
import { keyProviderFromConfig } from '../crypto/keys/from-config.ts';
import { createKeyring } from '../crypto/keys/keyring.ts';
import { createPgKeyStore } from '../db/key-store.ts';
import { ensureAppLogin, migrate } from '../db/migrate.ts';
import { createPool } from '../db/pool.ts';
import { RowScopeError } from '../db/row-scopes.ts';
import { databaseUrls } from '../dev/embedded-stack.ts';
import { loadPolicy } from '../policy/load.ts';
import { PHI_FIELDS } from '../policy/phi-fields.ts';
import { seed } from '../seed/seed.ts';
import { AlertsCommandError, alertsOptions, runAlerts } from './alerts.ts';
import { ApiKeyCommandError, apikeyOptions, runApiKey } from './apikey.ts';
import { AuditCommandError, auditOptions, runAudit } from './audit.ts';
import { INDEX_KEYS_USAGE, IndexKeysCommandError, indexKeysOptions, runIndexKeys } from './index-keys.ts';
import { AuditEvidenceError, auditEvidenceOptions, auditVerbNeedsConfig, runAuditEvidence } from './audit-evidence.ts';
import { KeysCommandError, keysOptions, runKeys } from './keys.ts';
import { progressBar } from './progress.ts';

type Values = Record<string, string | boolean | undefined>;

export interface Command {
  readonly options: NonNullable<ParseArgsConfig['options']>;
  /** Whether the command takes words after its name (e.g. `apikey revoke ID`). */
  readonly positionals?: boolean;
  /** False when the command (verb) runs on its arguments alone: the environment is then not read. */
  readonly needsConfig?: (positionals: readonly string[]) => boolean;
  run(values: Values, config: Config, positionals: readonly string[]): Promise<number>;
}

export class CommandError extends Error {}

const out = (s: string) => process.stdout.write(`${s}\n`);
const err = (s: string) => process.stderr.write(`${s}\n`);

function positiveInt(name: string, raw: string | boolean | undefined, max: number): number {
  if (typeof raw !== 'string' || !/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > max) {
    throw new CommandError(`--${name} must be a whole number from 1 to ${max}`);
  }
  return Number(raw);
}

function list(name: string, raw: string | boolean | undefined, required: boolean): string[] {
  const items = typeof raw === 'string' ? raw.split(',').map((s) => s.trim()).filter(Boolean) : [];
  if (required && items.length === 0) throw new CommandError(`--${name} needs at least one value (comma-separated)`);
  return items;
}

function migratorUrl(config: Config, urls: { migrateUrl: string | null }): string {
  if (!urls.migrateUrl) throw new CommandError('PHIGATE_MIGRATE_URL: is required to migrate or seed an external database');
  return urls.migrateUrl;
}

const SCHEMA_FILE = fileURLToPath(new URL('../../schema/schema.graphql', import.meta.url));

export const commands: Record<string, Command> = {
  migrate: {
    options: {},
    async run(_v, config) {
      // Read first: a policy that cannot be trusted stops migrate before the database is touched.
      const policy = await loadPolicy(config.policyFile, PHI_FIELDS);
      const urls = await databaseUrls(config, err);
      try {
        const migrateUrl = migratorUrl(config, urls);
        const { applied, alreadyApplied } = await migrate(migrateUrl, { onProgress: err, policy }).catch((e: unknown) => {
          throw e instanceof RowScopeError ? new CommandError(`${config.policyFile}: ${e.message}`) : e;
        });
        await applyConfiguredThresholds(migrateUrl, config.alertSweep.thresholds, err);
        if (config.env === 'development' && config.database) {
          const r = await ensureAppLogin(migrateUrl, config.database.appUrl);
          if (r === 'created') err('created the gateway login role of DATABASE_URL (member of phigate_app)');
        }
        out(`migrations: ${applied.length} applied, ${alreadyApplied.length} already applied`);
        return 0;
      } finally {
        await urls.stop();
      }
    },
  },

  seed: {
    options: { patients: { type: 'string' }, manifest: { type: 'string' }, seed: { type: 'string' } },
    async run(v, config) {
      const patients = positiveInt('patients', v.patients, 2_000_000);
      const seedNumber = v.seed === undefined ? undefined : positiveInt('seed', v.seed, 2 ** 31 - 1);
      const manifest = path.resolve(typeof v.manifest === 'string' ? v.manifest : path.join(config.dataDir, 'seed.json'));
      const urls = await databaseUrls(config, err);
      const pool = createPool(urls.appUrl, { max: 2, caFile: config.databaseCaFile });
      try {
        const keyring = createKeyring({ provider: await keyProviderFromConfig(config), store: createPgKeyStore(pool) });
        const bar = progressBar('patients', process.stderr);
        await seed({ migrateUrl: migratorUrl(config, urls), keyring, patients, manifest, seed: seedNumber, onProgress: bar });
        out(`seeded ${patients} patients; manifest: ${manifest}`);
        return 0;
      } finally {
        await pool.end();
        await urls.stop();
      }
    },
  },

  token: {
    options: {
      sub: { type: 'string' },
      roles: { type: 'string' },
      clinics: { type: 'string' },
      mfa: { type: 'boolean' },
      'auth-age': { type: 'string' },
      ttl: { type: 'string' },
    },
    async run(v, config) {
      if (config.oidc.issuer !== null) {
        throw new CommandError('token works only with the built-in development issuer (PHIGATE_OIDC_ISSUER is set)');
      }
      if (typeof v.sub !== 'string' || v.sub.trim() === '') throw new CommandError('--sub is required');
      const token = await mintDevToken(await loadOrCreateDevIssuerKeys(config.dataDir), {
        issuer: devIssuerUrl(config),
        audience: config.oidc.audience,
        subject: v.sub.trim(),
        roles: list('roles', v.roles, true),
        clinics: list('clinics', v.clinics, false),
        mfa: v.mfa === true,
        authAgeSeconds: v['auth-age'] === undefined ? 60 : positiveInt('auth-age', v['auth-age'], 86_400),
        ttlSeconds: v.ttl === undefined ? 900 : positiveInt('ttl', v.ttl, 86_400),
        rolesClaim: config.oidc.rolesClaim,
        clinicsClaim: config.oidc.clinicsClaim,
      });
      out(token);
      return 0;
    },
  },

  apikey: {
    options: apikeyOptions,
    positionals: true,
    async run(v, config, positionals) {
      try {
        return await runApiKey(positionals, v, config, out, err);
      } catch (e) {
        if (e instanceof ApiKeyCommandError) throw new CommandError(e.message);
        throw e;
      }
    },
  },

  audit: {
    options: { ...auditOptions, ...auditEvidenceOptions },
    positionals: true,
    needsConfig: (positionals) => auditVerbNeedsConfig(positionals[0]),
    async run(v, config, positionals) {
      try {
        const evidence = positionals.length === 1 ? await runAuditEvidence(positionals[0]!, v, config, { out, err }) : null;
        return evidence ?? (await runAudit(positionals, v, config, out, err));
      } catch (e) {
        if (e instanceof AuditCommandError || e instanceof AuditEvidenceError) throw new CommandError(e.message);
        throw e;
      }
    },
  },

  alerts: {
    options: alertsOptions,
    positionals: true,
    async run(v, config, positionals) {
      try {
        return await runAlerts(positionals, v, config, out, err);
      } catch (e) {
        if (e instanceof AlertsCommandError) throw new CommandError(e.message);
        throw e;
      }
    },
  },

  keys: {
    options: { ...keysOptions, ...indexKeysOptions },
    positionals: true,
    async run(v, config, positionals) {
      try {
        if (positionals[0] === 'rotate-index') {
          if (positionals.length !== 1) throw new CommandError(`usage:\n${INDEX_KEYS_USAGE}`);
          return await runIndexKeys(v, config, out, err);
        }
        return await runKeys(positionals, v, config, out, err);
      } catch (e) {
        if (e instanceof KeysCommandError || e instanceof IndexKeysCommandError) throw new CommandError(e.message);
        throw e;
      }
    },
  },

  'print-schema': {
    options: { check: { type: 'boolean' }, write: { type: 'boolean' } },
    async run(v) {
      // Loaded here: building the schema (graphql, Pothos, every type) is most of what a CLI process
      // would otherwise spend starting, and only this verb needs it.
      const { printSdl } = await import('../graphql/schema.ts');
      const sdl = printSdl();
      if (v.check) {
        const current = await readFile(SCHEMA_FILE, 'utf8').catch(() => '');
        if (current !== sdl) {
          err('schema/schema.graphql is out of date: run `npx phigate print-schema --write`');
          return 1;
        }
        out('schema/schema.graphql is current');
        return 0;
      }
      if (v.write) {
        await writeFile(SCHEMA_FILE, sdl);
        out(`wrote ${SCHEMA_FILE}`);
        return 0;
      }
      process.stdout.write(sdl);
      return 0;
    },
  },
};
