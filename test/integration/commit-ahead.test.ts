import { randomUUID } from 'node:crypto';
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
    // The one connection is back in the pool before commit() is called: it went back when the COMMIT answered.
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
});
