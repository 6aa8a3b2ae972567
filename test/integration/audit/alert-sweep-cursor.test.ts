import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, withClient, type TestDatabase } from '../../support/db.ts';

// The alert sweep reads only the audit rows of transactions its previous sweep could not see
// (schema/migrations/026_incremental_alert_sweep.sql): a transaction still in flight during a
// sweep is counted by a later one, whenever its rows occurred, a row is counted once however
// many sweeps follow, and a long transaction elsewhere delays no alert.

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
  // Rows that occurred before swept_until's minute are never counted: let the last minutes count.
  await admin((c) => c.query(`UPDATE phigate.alert_sweep SET swept_until = clock_timestamp() - interval '10 minutes'`));
});
afterAll(async () => db?.drop());

const admin = <T>(fn: (c: pg.Client) => Promise<T>) => withClient(db.adminUrl, fn);
interface Raised {
  readonly kind: string;
  readonly actor: string;
  readonly window_start: Date;
  readonly observed: number;
}
const sweep = () => admin(async (c) => (await c.query<Raised>(`SELECT * FROM phigate.sweep_alerts(3, 100, '00:00', '24:00', 'UTC', 0)`)).rows);
// One request per patient, stored as the audit writer stores it: a record of audit_records (028).
// All of a call's rows at one time (`at`, else the statement's), never clock_timestamp() per row,
// whose rows a minute boundary could part.
const reads = (c: pg.Client, actor: string, patients: number, at: Date | null = null) =>
  c.query(
    `INSERT INTO phigate.audit_records (occurred_at, request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
     SELECT coalesce($3, statement_timestamp()), 'r-' || g, $1, 'user', 'registrar', 'healthcare_operations', gen_random_uuid(), '{read}', '{Patient}', '{mrn}', '{NULL}', '{NULL}'
     FROM generate_series(1, $2) g`,
    [actor, patients, at],
  );
/** The database clock's minute now, `back` minutes ago: read once, so that every call given it shares it. */
const minuteAgo = (back: number) =>
  admin(async (c) => (await c.query<{ m: Date }>(`SELECT date_trunc('minute', clock_timestamp()) - make_interval(mins => $1) AS m`, [back])).rows[0]!.m);
const mine = (rows: Raised[], actor: string) => rows.filter((r) => r.actor === actor);

describe('the incremental alert sweep', () => {
  it('counts a transaction that was in flight during a sweep in the next one, in the minute its rows occurred', async () => {
    const actor = `reg-${randomUUID()}`;
    const late = new pg.Client({ connectionString: db.adminUrl });
    await late.connect();
    try {
      // Two minutes ago: a sweep that counted by time up to a settle point would have passed it.
      const twoMinutesAgo = await minuteAgo(2);
      await late.query('BEGIN');
      await reads(late, actor, 4, twoMinutesAgo);
      expect(mine(await sweep(), actor)).toEqual([]);
      await late.query('COMMIT');
    } finally {
      await late.end();
    }
    const raised = mine(await sweep(), actor);
    expect(raised).toEqual([expect.objectContaining({ kind: 'bulk_read', observed: 4 })]);
    expect(raised[0]!.window_start.getTime()).toBeLessThan(Date.now() - 60_000);
  });

  it('counts each row once: a minute adds up across sweeps, and a sweep with nothing new changes nothing', async () => {
    const actor = `reg-${randomUUID()}`;
    // Pinned to one minute, read once, whichever minute the sweeps run in.
    const minute = await minuteAgo(0);
    await admin(async (c) => {
      await reads(c, actor, 2, minute);
      expect(mine(await sweep(), actor)).toEqual([]);
      await reads(c, actor, 1, minute);
      expect(mine(await sweep(), actor)).toEqual([]);
      await reads(c, actor, 1, minute);
      expect(mine(await sweep(), actor)).toEqual([expect.objectContaining({ kind: 'bulk_read', observed: 4 })]);
      const counted = (await c.query('SELECT patients FROM phigate.alert_minutes WHERE actor = $1', [actor])).rows;
      expect(counted).toEqual([{ patients: 4 }]);
    });
    // Nothing new: no alert, and the minute's count stays.
    expect(await sweep()).toEqual([]);
    expect(await admin(async (c) => (await c.query('SELECT patients FROM phigate.alert_minutes WHERE actor = $1', [actor])).rows)).toEqual([{ patients: 4 }]);
  });

  it('is not held back by a long transaction elsewhere: rows committed after it began are counted at once', async () => {
    const actor = `reg-${randomUUID()}`;
    const long = new pg.Client({ connectionString: db.adminUrl });
    await long.connect();
    try {
      await long.query('BEGIN');
      await long.query('SELECT pg_current_xact_id()');
      await admin((c) => reads(c, actor, 4));
      expect(mine(await sweep(), actor)).toEqual([expect.objectContaining({ kind: 'bulk_read', observed: 4 })]);
    } finally {
      await long.query('ROLLBACK');
      await long.end();
    }
  });
});
