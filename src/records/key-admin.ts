import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { createAuditBuffer } from '../audit/buffer.ts';
import type { AuditEvent } from '../audit/event.ts';
import type { Pool } from '../db/pool.ts';

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

/**
 * One short transaction as phigate_keys (row security lets it read and rewrite ciphertext of every
 * clinic, nothing in the clear); the `key` audit events it collects are inserted in the same
 * transaction, so a change and its record commit or roll back together.
 */
export async function inKeyTransaction<T>(admin: KeyAdmin, fn: (c: pg.PoolClient, record: (e: KeyEvent) => void) => Promise<T>): Promise<T> {
  const client = await admin.pool.connect();
  const buffer = createAuditBuffer({ requestId: `keys-${randomUUID()}`, actor: admin.actor, actorKind: 'system', clientAddr: null });
  try {
    await client.query('BEGIN');
    await client.query('SET LOCAL ROLE phigate_keys');
    const out = await fn(client, (e) => buffer.add({ ...e, action: 'key', role: null, purpose: KEY_PURPOSE, breakGlass: false }));
    const statement = buffer.seal();
    if (statement) await client.query(statement.text, statement.values as unknown[]);
    await client.query('COMMIT');
    return out;
  } catch (e) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw e;
  } finally {
    client.release();
  }
}
