import type pg from 'pg';
import type { Pool } from '../../db/pool.ts';

/**
 * Runs `fn` in a transaction that holds the transaction-level advisory lock named `name`
 * (hashtextextended(name, 0)); null, having done nothing, when another process holds it. A
 * transaction-level lock leaves no session state behind (PgBouncer transaction mode), and the
 * holder's work serves every process that did not get it. `durable`: the commit waits for the
 * WAL flush whatever the connection's default (the sealer's leaves and heads are evidence).
 */
export async function underXactLock<T>(pool: Pool, name: string, durable: boolean, fn: (client: pg.PoolClient) => Promise<T>): Promise<T | null> {
  const client = await pool.connect();
  let broken = false;
  try {
    await client.query('BEGIN');
    const { rows } = await client.query<{ locked: boolean }>(
      durable
        ? "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS locked, set_config('synchronous_commit', 'on', true)"
        : 'SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0)) AS locked',
      [name],
    );
    if (rows[0]?.locked !== true) {
      await client.query('ROLLBACK');
      return null;
    }
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => (broken = true));
    throw err;
  } finally {
    client.release(broken);
  }
}
