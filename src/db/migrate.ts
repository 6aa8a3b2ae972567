import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { PolicySet } from '../policy/types.ts';
import { writeRoleScopes } from './row-scopes.ts';

export const MIGRATIONS_DIR = fileURLToPath(new URL('../../schema/migrations/', import.meta.url));

export interface Migration {
  readonly name: string;
  readonly sql: string;
  readonly checksum: string;
  /** `migrator` for cluster-level work (roles, database grants); everything else runs as phigate_owner. */
  readonly runAs: 'migrator' | 'owner';
}

export interface MigrateResult {
  readonly applied: readonly string[];
  readonly alreadyApplied: readonly string[];
  /** Roles whose row scopes were written from the policy; empty when no policy was given. */
  readonly roleScopes: readonly string[];
}

export async function readMigrations(dir: string = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f)).sort();
  return Promise.all(
    files.map(async (name) => {
      const sql = await readFile(path.join(dir, name), 'utf8');
      return {
        name,
        sql,
        checksum: createHash('sha256').update(sql).digest('hex'),
        runAs: /^--\s*phigate:run-as migrator\b/m.test(sql) ? 'migrator' : 'owner',
      } as const;
    }),
  );
}

// Any constant works; it only has to be the same for every migrator so two never run at once.
const MIGRATION_LOCK = 7_340_217_001;

/**
 * Applies pending migrations in order, each in its own transaction, recording name and checksum.
 * A migration already applied with a different checksum stops everything: history is not rewritten.
 * With a policy, then makes row security enforce its roles' row scopes and operations
 * (src/db/row-scopes.ts), or refuses one the database does not implement.
 */
export async function migrate(
  migrateUrl: string,
  opts: { onProgress?: (line: string) => void; dir?: string; policy?: PolicySet } = {},
): Promise<MigrateResult> {
  const migrations = await readMigrations(opts.dir);
  const client = new pg.Client({ connectionString: migrateUrl, application_name: 'phigate-migrate' });
  await client.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    await client.query(`CREATE TABLE IF NOT EXISTS public.phigate_migrations (
      name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    await client.query('REVOKE ALL ON public.phigate_migrations FROM PUBLIC');
    const done = new Map(
      (await client.query<{ name: string; checksum: string }>('SELECT name, checksum FROM public.phigate_migrations')).rows.map(
        (r) => [r.name, r.checksum],
      ),
    );
    const applied: string[] = [];
    const alreadyApplied: string[] = [];
    for (const m of migrations) {
      const previous = done.get(m.name);
      if (previous !== undefined) {
        if (previous !== m.checksum) {
          throw new Error(`migration ${m.name} was changed after it was applied; add a new migration instead`);
        }
        alreadyApplied.push(m.name);
        continue;
      }
      opts.onProgress?.(`applying ${m.name}`);
      await client.query('BEGIN');
      try {
        if (m.runAs === 'owner') await client.query('SET LOCAL ROLE phigate_owner');
        await client.query(m.sql);
        if (m.runAs === 'owner') await client.query('RESET ROLE');
        await client.query('INSERT INTO public.phigate_migrations (name, checksum) VALUES ($1, $2)', [m.name, m.checksum]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK');
        throw new Error(`migration ${m.name} failed: ${(err as Error).message}`, { cause: err });
      }
      applied.push(m.name);
    }
    const roleScopes = opts.policy ? (await writeRoleScopes(client, opts.policy)).map((s) => `${s.role}: ${s.rowScope}`) : [];
    if (roleScopes.length) opts.onProgress?.(`row scopes from the policy: ${roleScopes.join(', ')}`);
    return { applied, alreadyApplied, roleScopes };
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    await client.end();
  }
}

/**
 * Development convenience of the contract: create the gateway's login role named in DATABASE_URL
 * (member of phigate_app only, no superuser, no BYPASSRLS) when it does not exist yet.
 */
export async function ensureAppLogin(migrateUrl: string, appUrl: string): Promise<'created' | 'exists'> {
  const u = new URL(appUrl);
  const user = decodeURIComponent(u.username);
  const password = decodeURIComponent(u.password);
  if (!user) throw new Error('DATABASE_URL has no user name');
  const client = new pg.Client({ connectionString: migrateUrl, application_name: 'phigate-migrate' });
  await client.connect();
  try {
    const exists = await client.query('SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1', [user]);
    if (exists.rowCount) return 'exists';
    const pw = password ? ` PASSWORD ${client.escapeLiteral(password)}` : '';
    await client.query(
      `CREATE ROLE ${client.escapeIdentifier(user)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS INHERIT${pw} IN ROLE phigate_app`,
    );
    return 'created';
  } finally {
    await client.end();
  }
}
