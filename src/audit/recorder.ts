import { PhigateError } from '../errors.ts';
import type { Pool } from '../db/pool.ts';
import { createAuditBuffer } from './buffer.ts';
import type { AuditEvent, AuditRequest } from './event.ts';

/**
 * Writes audit events that belong to no request transaction: refused authentications, key events,
 * alerts. Resolves once they are durably committed; rejects with AUDIT_UNAVAILABLE when they are
 * not, or when the database wrote another number of rows than there were events (a trigger that
 * silently drops rows must not pass for a record).
 */
export interface AuditRecorder {
  record(request: AuditRequest, events: readonly AuditEvent[]): Promise<void>;
}

/** One autocommit INSERT per call, on the pool: durable when it answers (synchronous_commit on). */
export function createDirectRecorder(pool: Pool): AuditRecorder {
  return {
    async record(request, events) {
      if (events.length === 0) return;
      const buffer = createAuditBuffer(request);
      for (const e of events) buffer.add(e);
      const statement = buffer.seal();
      if (statement === null) return;
      let written: number | null;
      try {
        written = (await pool.query({ text: statement.text, values: statement.values as unknown[] })).rowCount;
      } catch (cause) {
        throw new PhigateError('AUDIT_UNAVAILABLE', 'The event could not be recorded.', { reason: 'audit_write_failed', cause });
      }
      if (written !== events.length) {
        throw new PhigateError('AUDIT_UNAVAILABLE', 'The event could not be recorded.', { reason: 'audit_rows_mismatch' });
      }
    },
  };
}
