import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { createAuditBuffer } from '../audit/buffer.ts';
import type { AuditEvent, AuditRequest } from '../audit/event.ts';
import type { Pool } from '../db/pool.ts';
import { PhigateError } from '../errors.ts';

/** What an operator's key command runs as, and how its events are recorded. */
export interface KeyAdmin {
  /** A pool of the migrator, which may take the role phigate_keys (schema/migrations/018_key_lifecycle.sql). */
  readonly pool: Pool;
  /** Recorded as the actor of every key event, e.g. `cli:alice`. */
  readonly actor: string;
}

/** Purpose of use of key events: system administration, as for the other operator commands. */
export const KEY_PURPOSE = 'HSYSADMIN';

export type KeyEvent = Omit<AuditEvent, 'action' | 'role' | 'purpose' | 'breakGlass'>;

/** An operator's job as the audit trail names it: one request id for all of the job's events. */
export const keyJobRequest = (requestIdPrefix: string, actor: string): AuditRequest => ({
  requestId: `${requestIdPrefix}-${randomUUID()}`,
  actor,
  actorKind: 'system',
  clientAddr: null,
});

/**
 * BEGIN, then `setup` (what gives the transaction its rights), `fn` and COMMIT; on any failure
 * ROLLBACK, so the connection can serve again and nothing of `fn` stays.
 */
export async function inTransaction<T>(db: pg.ClientBase, setup: string, fn: () => Promise<T>): Promise<T> {
  await db.query('BEGIN');
  try {
    await db.query(setup);
    const result = await fn();
    await db.query('COMMIT');
    return result;
  } catch (e) {
    await db.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
}

/**
 * Inserts `events` as `key` events of `request`, in the caller's transaction: they are there
 * exactly when the work they record is. Fails the transaction unless every event went in.
 */
export async function writeKeyEvents(db: pg.ClientBase, request: AuditRequest, events: readonly KeyEvent[]): Promise<void> {
  const buffer = createAuditBuffer(request);
  for (const e of events) buffer.add({ ...e, action: 'key', role: null, purpose: KEY_PURPOSE, breakGlass: false });
  const statement = buffer.seal();
  if (statement === null) return;
  const { rows } = await db.query<{ events: number }>(statement.text, statement.values as unknown[]);
  if (Number(rows[0]?.events) !== events.length) {
    throw new PhigateError('AUDIT_UNAVAILABLE', 'The key events could not be recorded.', { reason: 'audit_rows_mismatch' });
  }
}

/**
 * One short transaction as phigate_keys (row security lets it read and rewrite ciphertext of every
 * clinic, nothing in the clear); the `key` audit events it collects are inserted in the same
 * transaction, so a change and its record commit or roll back together.
 */
export async function inKeyTransaction<T>(admin: KeyAdmin, fn: (c: pg.PoolClient, record: (e: KeyEvent) => void) => Promise<T>): Promise<T> {
  const client = await admin.pool.connect();
  const request = keyJobRequest('keys', admin.actor);
  try {
    return await inTransaction(client, 'SET LOCAL ROLE phigate_keys', async () => {
      const events: KeyEvent[] = [];
      const out = await fn(client, (e) => events.push(e));
      await writeKeyEvents(client, request, events);
      return out;
    });
  } finally {
    client.release();
  }
}
