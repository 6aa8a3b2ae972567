import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { writeAlertSettings } from '../../../src/db/alert-settings.ts';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';

// The gateway's alert sweep runs on a connection of its own, not one of the request pool's: with
// every request connection held it still sweeps, and at shutdown its timer stops once the sweep
// under way has finished. The replicas here sweep every 200 ms; the first gateway never does.

const SWEEP_SQL = 'SELECT * FROM phigate.sweep_alerts()';

let gw: TestGateway;
beforeAll(async () => {
  gw = await startTestGateway({ patients: 4, gatewayOptions: { alertSweepSeconds: 3600 } });
  await gw.admin((c) => writeAlertSettings(c, { bulkPatientsPerMinute: 3, dayStart: '00:00', dayEnd: '24:00' }));
});
afterAll(async () => gw?.close());

const sweepingReplica = (poolSize = 4) => startTestGateway({ replicaOf: gw, poolSize, gatewayOptions: { alertSweepSeconds: 0.2 } });

/**
 * Four patients read by `actor` in one minute, stored as the audit writer stores them: past the
 * threshold of 3. The statement's time, not clock_timestamp() per row, which a minute boundary could part.
 */
const bulkRead = (c: pg.Client, actor: string) =>
  c.query(
    `INSERT INTO phigate.audit_records (occurred_at, request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
     SELECT date_trunc('minute', statement_timestamp()), 'r-' || g, $1, 'user', 'registrar', 'healthcare_operations', gen_random_uuid(),
            '{read}', '{Patient}', '{mrn}', '{NULL}', '{NULL}'
     FROM generate_series(1, 4) g`,
    [actor],
  );
const alertsOf = (actor: string) => gw.auditRows("action = 'alert' AND actor = $1", [actor]);
const sweepFailures = (replica: TestGateway) => replica.logs.filter((l) => l.task === 'alert-sweep' && l.msg !== 'alert');

describe("the gateway's alert sweep", () => {
  it('runs with every request connection held', async () => {
    const replica = await sweepingReplica(2);
    const held = await Promise.all([replica.pool.connect(), replica.pool.connect()]);
    try {
      expect(replica.pool.idleCount).toBe(0);
      const actor = `reg-${randomUUID()}`;
      await gw.admin((c) => bulkRead(c, actor));
      // On the request pool each sweep would wait out the 5 s connection timeout and fail.
      await vi.waitFor(async () => expect(await alertsOf(actor)).toEqual([expect.objectContaining({ detail: 'bulk_read:4' })]), { timeout: 30_000, interval: 100 });
      expect(replica.pool.waitingCount).toBe(0);
      expect(sweepFailures(replica)).toEqual([]);
    } finally {
      for (const c of held) c.release();
      await replica.close();
    }
  });

  it('stops at shutdown, after finishing the sweep under way', async () => {
    const replica = await sweepingReplica();
    const actor = `reg-${randomUUID()}`;
    // The owner's lock on the thresholds holds the next sweep at its first statement.
    await gw.admin(async (c) => {
      await c.query('BEGIN');
      await c.query('LOCK TABLE phigate.alert_settings IN ACCESS EXCLUSIVE MODE');
      await vi.waitFor(
        async () => {
          const { rows } = await gw.admin((a) => a.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query = $1 AND wait_event_type = 'Lock'`, [SWEEP_SQL]));
          expect(rows).toHaveLength(1);
        },
        { timeout: 30_000, interval: 50 },
      );
      await gw.admin((a) => bulkRead(a, actor));
      let closed = false;
      const closing = replica.gateway.close().then(() => (closed = true));
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(closed).toBe(false);
      await c.query('COMMIT');
      await closing;
    });
    // The sweep that was waiting ran to its end before close() resolved.
    expect(await alertsOf(actor)).toEqual([expect.objectContaining({ detail: 'bulk_read:4' })]);
    const seen = async () => (await gw.admin((c) => c.query('SELECT seen::text FROM phigate.alert_sweep'))).rows[0].seen as string;
    const before = await seen();
    const later = `reg-${randomUUID()}`;
    await gw.admin((c) => bulkRead(c, later));
    // Five of its intervals: a timer left running would have swept, or failed on the pool closed below.
    await replica.close();
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(await seen()).toBe(before);
    expect(await alertsOf(later)).toEqual([]);
    expect(sweepFailures(replica)).toEqual([]);
  });
});
