import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { submit } from '../../src/db/submit.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../support/db.ts';

// src/db/submit.ts sends statements as pg Query objects and keeps what pg derives from a statement's
// RowDescription per statement text: rows must come back exactly as client.query returns them, and
// a statement whose columns change (same text) must be parsed by its new description.

const TYPED = `SELECT 1::int AS i, 'x'::text AS t, true AS b, '2026-12-06T08:00:00Z'::timestamptz AS at,
  '\\x0102'::bytea AS raw, ARRAY[1, 2]::int[] AS ints, 2.5::numeric AS n, NULL::text AS none, $1::text AS p`;

describe('submit', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('answers what client.query answers, the first time and again, named or not', async () => {
    await withClient(db.adminUrl, async (c) => {
      const expected = await c.query(TYPED, ['v']);
      for (const name of [undefined, undefined, 'submit_test_typed', 'submit_test_typed']) {
        const r = await submit(c, TYPED, ['v'], name);
        expect(r.rows).toEqual(expected.rows);
        expect(r.rows[0]!.raw).toBeInstanceOf(Buffer);
        expect(r.fields.map((f) => [f.name, f.dataTypeID])).toEqual(expected.fields.map((f) => [f.name, f.dataTypeID]));
        expect(r.command).toBe('SELECT');
        expect(r.rowCount).toBe(1);
      }
    });
  });

  it('parses by the new description when a statement of the same text returns other columns or types', async () => {
    await withClient(db.adminUrl, async (c) => {
      await c.query('CREATE TEMP TABLE submit_t (a int)');
      await c.query('INSERT INTO submit_t VALUES (1)');
      const all = 'SELECT * FROM submit_t';
      expect((await submit(c, all)).rows).toEqual([{ a: 1 }]);
      expect((await submit(c, all)).rows).toEqual([{ a: 1 }]);
      await c.query('ALTER TABLE submit_t ALTER COLUMN a TYPE text');
      expect((await submit(c, all)).rows).toEqual([{ a: '1' }]);
      await c.query('ALTER TABLE submit_t ADD COLUMN b bool DEFAULT true');
      expect((await submit(c, all)).rows).toEqual([{ a: '1', b: true }]);
    });
  });

  it('rejects with the statement error, and the client goes on', async () => {
    await withClient(db.adminUrl, async (c) => {
      await expect(submit(c, 'SELECT 1/0')).rejects.toMatchObject({ code: '22012' });
      expect((await submit(c, 'SELECT 2 AS two')).rows).toEqual([{ two: 2 }]);
    });
  });
});
