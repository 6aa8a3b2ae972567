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

// One statement however many fields were read. A page of 100 patients is 800 events but only a
// dozen distinct (action, type, field, role, purpose, break-glass) tuples: those travel once, as
// parallel arrays, and each event is an index into them plus its patient and record ids.
const INSERT = `
  INSERT INTO phigate.audit_events
    (request_id, actor, actor_kind, client_addr, credential_id, action, type_name, field, patient_id, record_id, role, purpose, break_glass, detail, grant_id)
  SELECT $1, $2, $3, $4, $5, d.action, d.type_name, d.field, e.patient_id, e.record_id, d.role, d.purpose, d.break_glass, d.detail, d.grant_id
  FROM unnest($6::int[], $7::uuid[], $8::uuid[]) WITH ORDINALITY AS e(kind, patient_id, record_id, n)
  JOIN unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::boolean[], $15::text[], $16::uuid[]) WITH ORDINALITY
    AS d(action, type_name, field, role, purpose, break_glass, detail, grant_id, kind) USING (kind)
  ORDER BY e.n`;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * A uuid[] literal written directly: pg's generic array encoder escapes and concatenates element
 * by element, which was the largest allocation of a page request. Ids come from uuid columns or
 * validated input; one that is not a uuid fails the request rather than reach the SQL text.
 */
function uuidArray(ids: readonly (string | null)[]): string {
  for (const id of ids) if (id !== null && !UUID.test(id)) throw new Error('audit event id is not a uuid');
  return `{${ids.map((id) => id ?? 'NULL').join(',')}}`;
}

function encode(events: readonly AuditEvent[]) {
  const kinds = new Map<string, number>();
  const dictionary = {
    action: [] as string[],
    typeName: [] as string[],
    field: [] as (string | null)[],
    role: [] as (string | null)[],
    purpose: [] as string[],
    breakGlass: [] as boolean[],
    detail: [] as (string | null)[],
    grantId: [] as (string | null)[],
  };
  const kindOf: number[] = [];
  for (const e of events) {
    const key = `${e.action}\u0000${e.typeName}\u0000${e.field ?? '\u0001'}\u0000${e.role ?? '\u0001'}\u0000${e.purpose}\u0000${e.breakGlass}\u0000${e.detail ?? '\u0001'}\u0000${e.grantId ?? '\u0001'}`;
    let kind = kinds.get(key);
    if (kind === undefined) {
      kind = kinds.size + 1;
      kinds.set(key, kind);
      dictionary.action.push(e.action);
      dictionary.typeName.push(e.typeName);
      dictionary.field.push(e.field);
      dictionary.role.push(e.role);
      dictionary.purpose.push(e.purpose);
      dictionary.breakGlass.push(e.breakGlass);
      dictionary.detail.push(e.detail ?? null);
      dictionary.grantId.push(e.grantId ?? null);
    }
    kindOf.push(kind);
  }
  return {
    kinds: `{${kindOf.join(',')}}`,
    patientIds: uuidArray(events.map((e) => e.patientId)),
    recordIds: uuidArray(events.map((e) => e.recordId)),
    grantIds: uuidArray(dictionary.grantId),
    dictionary,
  };
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
    refuseWith(event) {
      events.length = 0;
      events.push(event);
      flushed = false;
    },
    seal() {
      flushed = true;
      if (events.length === 0) return null;
      const { kinds, patientIds, recordIds, grantIds, dictionary: d } = encode(events);
      return {
        text: INSERT,
        values: [
          request.requestId,
          request.actor,
          request.actorKind,
          request.clientAddr,
          request.credentialId ?? null,
          kinds,
          patientIds,
          recordIds,
          d.action,
          d.typeName,
          d.field,
          d.role,
          d.purpose,
          d.breakGlass,
          d.detail,
          grantIds,
        ],
      };
    },
  };
}
