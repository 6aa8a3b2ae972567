import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, type Pool } from '../../src/db/pool.ts';
import { openRequestTransaction, type RequestTransaction, type SecurityContext } from '../../src/db/transaction.ts';
import { PhigateError } from '../../src/errors.ts';
import { createTestDatabase, preparedStatements, type TestDatabase } from '../support/db.ts';

// A read whose last statement is known sends its COMMIT behind it (RequestTransaction.endWithNext):
// the whole request transaction in one round trip, and the connection clean for its next holder
// however the statement ended.

let db: TestDatabase;
let pool: Pool;
const ctx = (): SecurityContext => ({ actor: 'reg-a', actorKind: 'user', roles: ['registrar'], clinics: ['c-a'], requestId: randomUUID(), purpose: 'test' });
const open = (readOnly = true): RequestTransaction => {
  const tx = openRequestTransaction(pool, ctx(), { preparedStatements: preparedStatements() });
  if (readOnly) tx.readOnly();
  return tx;
};

/** What the pool's one connection is in when its next holder gets it: no transaction, no context left. */
async function nextHolderSees(): Promise<unknown> {
  const { rows } = await pool.query<{ actor: string | null; ro: string; xact: boolean }>(
    `SELECT current_setting('phigate.actor', true) AS actor, current_setting('transaction_read_only') AS ro,
            now() = statement_timestamp() AS xact`,
  );
  return rows[0];
}
const CLEAN = { actor: '', ro: 'off', xact: true };

/**
 * `statement` (one that sleeps) sent with COMMIT ahead, once PostgreSQL is running it; with where
 * the pool's one connection was then: back in the pool (idle) or still held by the read.
 */
async function sentAhead(tx: RequestTransaction, statement: string, values?: unknown[]): Promise<{ pid: number; idleWhileRunning: number; result: Promise<unknown> }> {
  // Its statements parsed on the pool's one connection first: a read whose Parse is still
  // unanswered keeps its connection until its COMMIT answers (the last case below).
  const warm = open();
  await warm.query(values === undefined ? 'SELECT 1' : statement, values).catch(() => undefined);
  await warm.commit().catch(() => undefined);
  tx.endWithNext();
  const result = tx.query(statement, values);
  result.catch(() => undefined);
  const pid = await asAdmin(async (c) => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const { rows } = await c.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()`, [db.name]);
      if (rows[0]) return rows[0].pid;
      if (Date.now() > deadline) throw new Error('the statement never ran');
      await c.query('SELECT pg_sleep(0.01)');
    }
  });
  return { pid, idleWhileRunning: pool.idleCount, result };
}

async function asAdmin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: db.adminUrl });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  db = await createTestDatabase();
  // One connection, so that the next holder is the same session.
  pool = createPool(db.appUrl, { max: 1 });
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

describe('a read that sends its COMMIT with its last statement', () => {
  it('costs one round trip, BEGIN, context, statement and COMMIT, and commits', async () => {
    const tx = open();
    tx.endWithNext();
    const { rows } = await tx.query<{ ro: string; actor: string }>(`SELECT current_setting('transaction_read_only') AS ro, current_setting('phigate.actor') AS actor`);
    expect(rows).toEqual([{ ro: 'on', actor: 'reg-a' }]);
    // The one connection is back in the pool before commit() is called: it went back as the COMMIT left.
    expect(await nextHolderSees()).toEqual(CLEAN);
    await tx.commit();
    expect(tx.roundTrips).toBe(1);
  });

  it('refuses a statement sent after it, and still ends cleanly', async () => {
    const tx = open();
    tx.endWithNext();
    await tx.query('SELECT 1');
    await expect(tx.query('SELECT 2')).rejects.toBeInstanceOf(PhigateError);
    await tx.commit();
    expect(await nextHolderSees()).toEqual(CLEAN);
  });

  it('fails the commit when its statement failed, and leaves the connection clean', async () => {
    const tx = open();
    tx.endWithNext();
    await expect(tx.query('SELECT 1 / $1::int', [0])).rejects.toMatchObject({ code: '22012' });
    expect(tx.failed).toBe(true);
    await expect(tx.commit()).rejects.toMatchObject({ reason: 'transaction_failed' });
    expect(await nextHolderSees()).toEqual(CLEAN);
  });

  it('is ended by abort(), as any read', async () => {
    const tx = open();
    tx.endWithNext();
    await tx.query('SELECT 1');
    expect(await tx.abort()).toBe(true);
    await expect(tx.commit()).rejects.toBeInstanceOf(PhigateError);
    expect(await nextHolderSees()).toEqual(CLEAN);
  });

  it('changes nothing in a transaction that may write: its COMMIT waits for commit()', async () => {
    const tx = open(false);
    tx.endWithNext();
    await tx.query('SELECT 1');
    await tx.query('SELECT 2');
    await tx.commit();
    expect(tx.roundTrips).toBe(3);
    expect(await nextHolderSees()).toEqual(CLEAN);
  });

  it('gives its connection back as its COMMIT leaves, before its statement answers: the next holder runs behind that COMMIT', async () => {
    const tx = open();
    const sent = await sentAhead(tx, `SELECT pg_sleep(0.5), current_setting('phigate.actor') AS actor`);
    expect(sent.idleWhileRunning).toBe(1);
    // Behind the read's statement and COMMIT on the same session: outside its transaction, none of its context.
    expect(await nextHolderSees()).toEqual(CLEAN);
    await expect(sent.result).resolves.toMatchObject({ rows: [{ actor: 'reg-a' }] });
    await tx.commit();
    expect(tx.roundTrips).toBe(1);
  });

  it('whose statement fails with the next holder already behind it: that COMMIT answers ROLLBACK and the next holder finds the session clean', async () => {
    const tx = open();
    const sent = await sentAhead(tx, 'SELECT pg_sleep(0.5), 1 / $1::int', [0]);
    expect(sent.idleWhileRunning).toBe(1);
    const next = nextHolderSees();
    await expect(sent.result).rejects.toMatchObject({ code: '22012' });
    await expect(tx.commit()).rejects.toMatchObject({ reason: 'transaction_failed' });
    expect(await next).toEqual(CLEAN);
  });

  it('whose session ends before its COMMIT answers fails, and the next holder gets a fresh connection', async () => {
    const tx = open();
    const sent = await sentAhead(tx, 'SELECT pg_sleep(30)');
    const { pid } = sent;
    await asAdmin((c) => c.query('SELECT pg_terminate_backend($1)', [pid]));
    await expect(sent.result).rejects.toBeDefined();
    await expect(tx.commit()).rejects.toMatchObject({ code: 'INTERNAL' });
    // A new session: the context's setting was never defined in it.
    expect(await nextHolderSees()).toEqual({ ...CLEAN, actor: null });
    expect((await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid).not.toBe(pid);
  });

  // Found by review: the connection went back while the lookup's Parse was unanswered; the read's
  // group failed before it, PostgreSQL skipped it, and the next holder only bound the statement pg
  // counted as submitted: 26000 for another request's failure.
  it.skipIf(!preparedStatements())("whose group fails before a statement's first Parse does not fail the next holder sending that statement", async () => {
    const lookup = `SELECT $1::int + 1 AS n /* first use ${randomUUID()} */`;
    const failing = openRequestTransaction(pool, ctx(), { preparedStatements: true }, { text: 'SELECT 1 / $1::int AS z', values: [0], onRows: () => undefined });
    failing.readOnly();
    failing.endWithNext();
    const failed = failing.query(lookup, [1]).then(
      () => 'answered',
      () => 'failed',
    );
    const next = openRequestTransaction(pool, ctx(), { preparedStatements: true });
    next.readOnly();
    const answered = next.query<{ n: number }>(lookup, [41]);
    expect(await failed).toBe('failed');
    expect((await answered).rows).toEqual([{ n: 42 }]);
    await failing.commit().catch(() => undefined);
    await next.commit();
    expect(await nextHolderSees()).toEqual(CLEAN);
  });
});
