/**
 * A database of its own for one of the bench's single-purpose scripts (bench/writer-pg.ts,
 * bench/search-count.ts), on the cluster of BENCH_DATABASE_URL (a superuser URL; default the
 * local cluster on 127.0.0.1:5432): created and migrated to this tree's head when `create` is set
 * (once; later runs reuse it, so a base and a head can be measured alternately), reached as the
 * superuser or as the gateway's app login.
 */
import pg from 'pg';
import { ensureAppLogin, migrate } from '../src/db/migrate.ts';

export interface ScratchDatabase {
  /** The superuser's URL of the database. */
  readonly admin: string;
  /** The app login's URL of the database (phigate_bench_gw: a member of phigate_app only). */
  readonly app: string;
}

export async function scratchDatabase(name: string | undefined, create: boolean): Promise<ScratchDatabase> {
  if (!name || !/^[a-z0-9_]+$/.test(name)) throw new Error('--db NAME (lowercase letters, digits, _)');
  const cluster = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const url = (user?: { name: string; password: string }) => {
    const u = new URL(cluster);
    u.pathname = `/${name}`;
    if (user) [u.username, u.password] = [user.name, user.password];
    return u.toString();
  };
  const db = { admin: url(), app: url({ name: 'phigate_bench_gw', password: 'bench-gateway-pw' }) };
  if (create) {
    const c = new pg.Client({ connectionString: cluster });
    await c.connect();
    try {
      await c.query(`CREATE DATABASE ${name}`);
    } finally {
      await c.end();
    }
    await migrate(db.admin);
    await ensureAppLogin(db.admin, db.app);
  }
  return db;
}
