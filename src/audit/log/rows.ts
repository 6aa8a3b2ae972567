import type { CommittedAuditEvent } from '../canonical.ts';

/**
 * A row of phigate.audit_events_to_seal / phigate.audit_log_entries (016_audit_log.sql) as `pg`
 * returns it: bigints as strings, so that ids and microseconds keep every digit.
 */
export interface EventRow {
  readonly id: string;
  readonly occurred_at_us: string;
  readonly request_id: string;
  readonly actor: string;
  readonly actor_kind: string;
  readonly role: string | null;
  readonly purpose: string;
  readonly break_glass: boolean;
  readonly client_addr: string | null;
  readonly action: string;
  readonly type_name: string;
  readonly field: string | null;
  readonly patient_id: string | null;
  readonly record_id: string | null;
  readonly detail: string | null;
  readonly grant_id: string | null;
  readonly credential_id: string | null;
  readonly batch_id: string | null;
}

export const EVENT_COLUMNS =
  'id, occurred_at_us, request_id, actor, actor_kind, role, purpose, break_glass, client_addr, action, type_name, field, patient_id, record_id, detail, grant_id, credential_id, batch_id';

export function committedEvent(r: EventRow): CommittedAuditEvent {
  return {
    id: BigInt(r.id),
    occurredAtMicros: BigInt(r.occurred_at_us),
    requestId: r.request_id,
    actor: r.actor,
    actorKind: r.actor_kind,
    role: r.role,
    purpose: r.purpose,
    breakGlass: r.break_glass,
    clientAddr: r.client_addr,
    action: r.action,
    typeName: r.type_name,
    field: r.field,
    patientId: r.patient_id,
    recordId: r.record_id,
    detail: r.detail,
    grantId: r.grant_id,
    credentialId: r.credential_id,
    batchId: r.batch_id,
  };
}
