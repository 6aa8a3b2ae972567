import { PhigateError } from '../errors.ts';
import type { Pool } from '../db/pool.ts';
import { createAuditBuffer } from './buffer.ts';
import type { AuditEvent, AuditRequest } from './event.ts';
import { AUDIT_ROWS_MISMATCH_SQLSTATE } from './insert.ts';

/**
 * Writes audit events that belong to no request transaction: refused authentications, key events,
 * alerts. Resolves once they are durably committed; rejects with AUDIT_UNAVAILABLE when they are
 * not, or when the database wrote another number of rows than there were events (a trigger that
 * silently drops rows must not pass for a record).
 */
export interface AuditRecorder {
  record(request: AuditRequest, events: readonly AuditEvent[]): Promise<void>;
}

/**
 * One autocommit INSERT per call, on the pool: durable when it answers (synchronous_commit on).
 * For commands that run without the gateway's audit writer (src/audit/writer.ts).
 */
export function createDirectRecorder(pool: Pool): AuditRecorder {
  return {
    async record(request, events) {
      if (events.length === 0) return;
      const buffer = createAuditBuffer(request);
      for (const e of events) buffer.add(e);
      const statement = buffer.seal();
      if (statement === null) return;
      let written: number;
      try {
        written = Number((await pool.query<{ events: number }>({ text: statement.text, values: statement.values as unknown[] })).rows[0]?.events);
      } catch (cause) {
        const reason = (cause as { code?: unknown }).code === AUDIT_ROWS_MISMATCH_SQLSTATE ? 'audit_rows_mismatch' : 'audit_write_failed';
        throw new PhigateError('AUDIT_UNAVAILABLE', 'The event could not be recorded.', { reason, cause });
      }
      if (written !== events.length) {
        throw new PhigateError('AUDIT_UNAVAILABLE', 'The event could not be recorded.', { reason: 'audit_rows_mismatch' });
      }
    },
  };
}
