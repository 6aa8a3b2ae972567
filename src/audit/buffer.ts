import { randomUUID } from 'node:crypto';
import type { Statement } from '../db/transaction.ts';
import type { AuditEvent, AuditRequest } from './event.ts';
import { auditInsert } from './insert.ts';

export interface AuditBuffer {
  add(event: AuditEvent): void;
  readonly size: number;
  /**
   * Closes the buffer and gives the ONE statement that writes every event (a batch of its own,
   * checked row count), for a write's transaction to send with its COMMIT; null when there is
   * nothing to write. Reads hand `events` to the audit writer instead.
   */
  seal(): Statement | null;
  /** Closes the buffer and gives its events, for the audit writer (reads). */
  close(): readonly AuditEvent[];
  readonly events: readonly AuditEvent[];
  /** The facts every event of the request repeats. */
  readonly request: AuditRequest;
}

export function createAuditBuffer(request: AuditRequest): AuditBuffer {
  const events: AuditEvent[] = [];
  let flushed = false;
  return {
    add(event) {
      // Anything resolved after the flush would leave without its audit row.
      if (flushed) throw new Error('audit buffer already flushed');
      events.push(event);
    },
    get size() {
      return events.length;
    },
    get events() {
      return events;
    },
    request,
    close() {
      flushed = true;
      return events;
    },
    seal() {
      flushed = true;
      if (events.length === 0) return null;
      return auditInsert(randomUUID(), [{ request, events }]);
    },
  };
}
