import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/pool.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

describe('a pooled connection that dies while checked out', () => {
  it('fails its holder\'s next query instead of crashing the process, and the pool carries on', async () => {
    // Direct: behind PgBouncer in transaction mode an idle client holds no server connection to kill.
    const pool = createPool(db.directAppUrl, { max: 1, applicationName: 'phigate-pool-killed' });
    try {
      const client = await pool.connect();
      await client.query('SELECT 1');
      // Without a listener of its own, the client's 'error' event would be an uncaught exception.
      expect(client.listenerCount('error')).toBeGreaterThan(0);
      const died = new Promise((resolve) => client.once('error', resolve));
      const killed = await withClient(db.adminUrl, async (c) =>
        (await c.query(`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = 'phigate-pool-killed'`)).rows,
      );
      expect(killed.length).toBeGreaterThan(0);
      await died;
      const next = await client.query('SELECT 1').then(
        () => null,
        (e: unknown) => e,
      );
      expect(next).toBeInstanceOf(Error);
      client.release(next as Error);
      expect((await pool.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await pool.end();
    }
  });
});
