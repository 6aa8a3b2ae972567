import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sendInTick, sendTickNow, SkippedStatement } from '../../src/db/one-sync.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';

// src/db/one-sync.ts: statements sent in one tick share one Sync, so PostgreSQL answers
// ReadyForQuery once for them; each statement still gets its own rows or its own error, a
// statement behind a failed one is refused, and statements that cannot share a Sync go alone, in order.

describe('sendInTick', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  const withPipelined = async (fn: (c: pg.Client, readyCount: () => number) => Promise<void>) => {
    const c = new pg.Client({ connectionString: db.adminUrl, pipeline: true } as pg.ClientConfig);
    await c.connect();
    let ready = 0;
    c.connection.on('readyForQuery', () => ready++);
    try {
      await fn(c, () => ready);
    } finally {
      await c.end();
    }
  };

  it('answers each statement of a tick with its own rows, after one ReadyForQuery', async () => {
    await withPipelined(async (c, ready) => {
      const before = ready();
      const results = await Promise.all([
        sendInTick(c, 'SELECT $1::int + 1 AS n', [1]),
        sendInTick(c, "SELECT 'x'::text AS t, '\\x0102'::bytea AS raw, $1::text[] AS list", [['a', 'b']]),
        sendInTick(c, 'SELECT n FROM generate_series(1, $1::int) n', [3]),
      ]);
      expect(ready() - before).toBe(1);
      expect(results[0].rows).toEqual([{ n: 2 }]);
      expect(results[1].rows).toEqual([{ t: 'x', raw: Buffer.from([1, 2]), list: ['a', 'b'] }]);
      expect(results[2].rows.map((r) => r.n)).toEqual([1, 2, 3]);
      expect(results[2].command).toBe('SELECT');
    });
  });

  it('parses a named statement inside the group the first time, and only binds it afterwards', async () => {
    await withPipelined(async (c, ready) => {
      const connection = (c as unknown as { connection: { parsedStatements: Record<string, string> } }).connection;
      const tick = () => Promise.all([sendInTick(c, 'SELECT $1::int AS a', [1], 'one_sync_a'), sendInTick(c, 'SELECT $1::int AS b', [2], 'one_sync_b')]);
      let before = ready();
      expect((await tick()).map((r) => r.rows[0])).toEqual([{ a: 1 }, { b: 2 }]);
      expect(ready() - before).toBe(1);
      expect(connection.parsedStatements).toMatchObject({ one_sync_a: 'SELECT $1::int AS a', one_sync_b: 'SELECT $1::int AS b' });
      const prepared = await c.query<{ name: string }>('SELECT name FROM pg_prepared_statements ORDER BY name');
      expect(prepared.rows.map((r) => r.name)).toEqual(['one_sync_a', 'one_sync_b']);
      before = ready();
      expect((await tick()).map((r) => r.rows[0])).toEqual([{ a: 1 }, { b: 2 }]);
      expect(ready() - before).toBe(1);
    });
  });

  it('after a failed group, knows which of its named statements PostgreSQL prepared', async () => {
    await withPipelined(async (c) => {
      const connection = (c as unknown as { connection: { parsedStatements: Record<string, string>; submittedNamedStatements: Record<string, string> } }).connection;
      // The first runs, the second is parsed and fails as it runs, the third is skipped unparsed.
      const outcomes = await Promise.allSettled([
        sendInTick(c, 'SELECT $1::int AS ok', [1], 'one_sync_ok'),
        sendInTick(c, 'SELECT 1 / $1::int AS q', [0], 'one_sync_div'),
        sendInTick(c, 'SELECT $1::int AS later', [3], 'one_sync_later'),
      ]);
      expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'rejected']);
      const prepared = await c.query<{ name: string }>('SELECT name FROM pg_prepared_statements ORDER BY name');
      expect(prepared.rows.map((r) => r.name)).toEqual(['one_sync_div', 'one_sync_ok']);
      expect(Object.keys(connection.parsedStatements).sort()).toEqual(['one_sync_div', 'one_sync_ok']);
      expect(connection.submittedNamedStatements).toEqual({});
      // Each is sent again as what it is: bound, bound, parsed; none refused as unknown or as already prepared.
      const again = await Promise.all([
        sendInTick(c, 'SELECT $1::int AS ok', [1], 'one_sync_ok'),
        sendInTick(c, 'SELECT 1 / $1::int AS q', [1], 'one_sync_div'),
        sendInTick(c, 'SELECT $1::int AS later', [3], 'one_sync_later'),
      ]);
      expect(again.map((r) => r.rows[0])).toEqual([{ ok: 1 }, { q: 1 }, { later: 3 }]);
    });
  });

  it('forgets a named statement whose Parse PostgreSQL refused', async () => {
    await withPipelined(async (c) => {
      const connection = (c as unknown as { connection: { parsedStatements: Record<string, string>; submittedNamedStatements: Record<string, string> } }).connection;
      const outcomes = await Promise.allSettled([sendInTick(c, 'SELECT $1::int AS ok', [1], 'one_sync_ok2'), sendInTick(c, 'SELECT FROM WHERE $1', [1], 'one_sync_bad')]);
      expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'rejected']);
      expect((outcomes[1] as PromiseRejectedResult).reason).toMatchObject({ code: '42601' });
      expect(Object.keys(connection.parsedStatements)).toEqual(['one_sync_ok2']);
      expect(connection.submittedNamedStatements).toEqual({});
    });
  });

  it('refuses the statements behind a failed one, which PostgreSQL did not run', async () => {
    await withPipelined(async (c) => {
      await c.query('CREATE TEMP TABLE one_sync_t (n int)');
      await c.query('BEGIN');
      const [first, failed, skipped] = await Promise.allSettled([
        sendInTick(c, 'INSERT INTO one_sync_t VALUES ($1) RETURNING n', [1]),
        sendInTick(c, 'SELECT 1 / $1::int', [0]),
        sendInTick(c, 'INSERT INTO one_sync_t VALUES ($1)', [2]),
      ]);
      expect(first.status === 'fulfilled' && first.value.rows).toEqual([{ n: 1 }]);
      expect(failed.status === 'rejected' && (failed.reason as { code?: string }).code).toBe('22012');
      expect(skipped.status === 'rejected' && skipped.reason).toBeInstanceOf(SkippedStatement);
      // The transaction is aborted, as after any failed statement; ROLLBACK gives the connection back.
      await expect(c.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
      await c.query('ROLLBACK');
      expect((await c.query('SELECT count(*)::int AS n FROM one_sync_t')).rows).toEqual([{ n: 0 }]);
    });
  });

  it('sends a statement without parameters (COMMIT) alone, in its place', async () => {
    await withPipelined(async (c, ready) => {
      await c.query('CREATE TEMP TABLE one_sync_c (n int)');
      const before = ready();
      const [, , commit, after] = await Promise.all([
        sendInTick(c, 'BEGIN', []),
        sendInTick(c, 'INSERT INTO one_sync_c VALUES ($1)', [1]),
        sendInTick(c, 'COMMIT'),
        sendInTick(c, 'SELECT count(*)::int AS n, $1::int AS m FROM one_sync_c', [0]),
      ]);
      expect(commit.command).toBe('COMMIT');
      expect(after.rows).toEqual([{ n: 1, m: 0 }]);
      expect(ready() - before).toBe(3);
      expect((await c.query('SELECT pg_current_xact_id_if_assigned() IS NULL AS outside')).rows).toEqual([{ outside: true }]);
    });
  });

  it('hands the tick over at once when asked, so that a query sent on the client directly runs after it', async () => {
    await withPipelined(async (c) => {
      await c.query('CREATE TEMP TABLE one_sync_n (n int)');
      const sent = Promise.all([sendInTick(c, 'BEGIN', []), sendInTick(c, 'INSERT INTO one_sync_n VALUES ($1)', [1]), sendInTick(c, 'COMMIT')]);
      // As a pool's next holder of the connection would (pool.query), in the same tick.
      sendTickNow(c);
      const direct = c.query('SELECT count(*)::int AS n, pg_current_xact_id_if_assigned() IS NULL AS outside FROM one_sync_n');
      expect((await direct).rows).toEqual([{ n: 1, outside: true }]);
      expect((await sent)[2].command).toBe('COMMIT');
    });
  });

  it('fails a group whose value pg cannot bind as a whole, writing none of it', async () => {
    await withPipelined(async (c) => {
      await c.query('CREATE TEMP TABLE one_sync_v (n int)');
      const circular: Record<string, unknown> = {};
      circular.self = circular;
      const outcomes = await Promise.allSettled([sendInTick(c, 'INSERT INTO one_sync_v VALUES ($1)', [1]), sendInTick(c, 'SELECT $1::json', [circular])]);
      expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected']);
      expect((await c.query('SELECT count(*)::int AS n FROM one_sync_v')).rows).toEqual([{ n: 0 }]);
    });
  });
});
