import type { Statement } from '../db/transaction.ts';
import type { AuditEvent, AuditRequest } from './event.ts';

export interface AuditBuffer {
  add(event: AuditEvent): void;
  readonly size: number;
  /**
   * Closes the buffer and gives the ONE statement that writes every event, for the request's
   * transaction to send with its COMMIT; null when there is nothing to write.
   */
  seal(): Statement | null;
  readonly events: readonly AuditEvent[];
  /**
   * A request refused whole shows nothing, so its events give way to the one that says why; the
   * buffer can be sealed again, for the transaction that records the refusal.
   */
  refuseWith(event: AuditEvent): void;
}

// unnest() of parallel arrays: one statement however many fields were read.
const INSERT = `
  INSERT INTO phigate.audit_events
    (request_id, actor, actor_kind, client_addr, action, type_name, field, patient_id, record_id, role, purpose, break_glass)
  SELECT $1, $2, $3, $4, u.action, u.type_name, u.field, u.patient_id, u.record_id, u.role, u.purpose, u.break_glass
  FROM unnest($5::text[], $6::text[], $7::text[], $8::uuid[], $9::uuid[], $10::text[], $11::text[], $12::boolean[])
    AS u(action, type_name, field, patient_id, record_id, role, purpose, break_glass)`;

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
    refuseWith(event) {
      events.length = 0;
      events.push(event);
      flushed = false;
    },
    seal() {
      flushed = true;
      if (events.length === 0) return null;
      const col = <K extends keyof AuditEvent>(k: K) => events.map((e) => e[k]);
      return {
        text: INSERT,
        values: [
          request.requestId,
          request.actor,
          request.actorKind,
          request.clientAddr,
          col('action'),
          col('typeName'),
          col('field'),
          col('patientId'),
          col('recordId'),
          col('role'),
          col('purpose'),
          col('breakGlass'),
        ],
      };
    },
  };
}
