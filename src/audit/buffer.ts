import type { RequestTransaction } from '../db/transaction.ts';
import { inSpan } from '../telemetry/tracing.ts';
import type { AuditEvent, AuditRequest } from './event.ts';

export interface AuditBuffer {
  add(event: AuditEvent): void;
  readonly size: number;
  /** Writes every buffered event with ONE statement inside the request's transaction. */
  flush(tx: RequestTransaction): Promise<number>;
  readonly events: readonly AuditEvent[];
}

// unnest() of parallel arrays: one round trip and one statement however many fields were read.
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
    async flush(tx) {
      flushed = true;
      if (events.length === 0) return 0;
      const col = <K extends keyof AuditEvent>(k: K) => events.map((e) => e[k]);
      const insert = () => tx.query(INSERT, [
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
      ]);
      await inSpan('phigate.audit', { 'phigate.audit.events': events.length }, insert);
      return events.length;
    },
  };
}
