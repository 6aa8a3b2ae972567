import {
  canonicalBytes,
  canonicalRecordBytes,
  canonicalRecordV3Bytes,
  EVENT_ORDINAL_BITS,
  type CommittedAuditEvent,
  type CommittedAuditRecord,
  type CommittedAuditRecordV3,
  type CommittedRecordFacts,
} from '../canonical.ts';

/**
 * A leaf's row as phigate.audit_leaves_to_seal / phigate.audit_log_leaves (030) return it, `pg`
 * giving bigints as strings so that ids and microseconds keep every digit. One shape for both
 * kinds of leaf: a v1 event (version 1) reads as a record of one event, keyed by its own id; a
 * record (version 2, or 3 when it holds several patients: 061) is keyed by its first event's id,
 * (record id << 16).
 */
export interface LeafRow {
  readonly key: string;
  readonly version: number;
  readonly occurred_at_us: string;
  readonly batch_id: string | null;
  readonly request_id: string;
  readonly actor: string;
  readonly actor_kind: string;
  readonly client_addr: string | null;
  readonly credential_id: string | null;
  readonly role: string | null;
  readonly purpose: string;
  readonly break_glass: boolean;
  readonly grant_id: string | null;
  readonly patient_id: string | null;
  readonly actions: string[];
  readonly type_names: string[];
  readonly fields: (string | null)[];
  readonly record_ids: (string | null)[];
  readonly details: (string | null)[];
  /** A v3 record's patients (patient_id is then null); null for v1 and v2. */
  readonly patient_ids?: string[] | null;
}

export const LEAF_COLUMNS =
  'key, version, occurred_at_us, batch_id, request_id, actor, actor_kind, client_addr, credential_id, role, purpose, break_glass, grant_id, patient_id, actions, type_names, fields, record_ids, details, patient_ids';

export class LeafRowError extends Error {}

export function committedEvent(r: LeafRow): CommittedAuditEvent {
  if (r.version !== 1 || r.actions.length !== 1) throw new LeafRowError(`leaf ${r.key} is not one v1 event`);
  return {
    id: BigInt(r.key),
    occurredAtMicros: BigInt(r.occurred_at_us),
    requestId: r.request_id,
    actor: r.actor,
    actorKind: r.actor_kind,
    role: r.role,
    purpose: r.purpose,
    breakGlass: r.break_glass,
    clientAddr: r.client_addr,
    action: r.actions[0]!,
    typeName: r.type_names[0]!,
    field: r.fields[0] ?? null,
    patientId: r.patient_id,
    recordId: r.record_ids[0] ?? null,
    detail: r.details[0] ?? null,
    grantId: r.grant_id,
    credentialId: r.credential_id,
    batchId: r.batch_id,
  };
}

/** A v2 or v3 leaf row's record facts, its id from the leaf's key (its first event's id). */
const recordFactsOf = (r: LeafRow): CommittedRecordFacts => ({
  id: BigInt(r.key) >> EVENT_ORDINAL_BITS,
  occurredAtMicros: BigInt(r.occurred_at_us),
  batchId: r.batch_id,
  requestId: r.request_id,
  actor: r.actor,
  actorKind: r.actor_kind,
  clientAddr: r.client_addr,
  credentialId: r.credential_id,
  role: r.role,
  purpose: r.purpose,
  breakGlass: r.break_glass,
  grantId: r.grant_id,
});

export function committedRecord(r: LeafRow): CommittedAuditRecord {
  if (r.version !== 2) throw new LeafRowError(`leaf ${r.key} is not a record`);
  const n = r.actions.length;
  if (r.type_names.length !== n || r.fields.length !== n || r.record_ids.length !== n || r.details.length !== n) {
    throw new LeafRowError(`record of leaf ${r.key}: its event arrays differ in length`);
  }
  return {
    ...recordFactsOf(r),
    patientId: r.patient_id,
    events: r.actions.map((action, i) => ({
      action,
      typeName: r.type_names[i]!,
      field: r.fields[i] ?? null,
      recordId: r.record_ids[i] ?? null,
      detail: r.details[i] ?? null,
    })),
  };
}

export function committedRecordV3(r: LeafRow): CommittedAuditRecordV3 {
  if (r.version !== 3 || !r.patient_ids) throw new LeafRowError(`leaf ${r.key} is not a record of several patients`);
  const l = r.actions.length;
  if (r.type_names.length !== l || r.fields.length !== l || r.details.length !== l || r.record_ids.length !== l * r.patient_ids.length) {
    throw new LeafRowError(`record of leaf ${r.key}: its shape or record ids differ in length`);
  }
  return {
    ...recordFactsOf(r),
    patientIds: r.patient_ids,
    shape: r.actions.map((action, i) => ({ action, typeName: r.type_names[i]!, field: r.fields[i] ?? null, detail: r.details[i] ?? null })),
    recordIds: r.record_ids,
  };
}

/** The canonical bytes the leaf's hash is over: v1 for a frozen event, v2 for a record, v3 for a record of several patients. */
export const leafBytes = (r: LeafRow): Buffer =>
  r.version === 1 ? canonicalBytes(committedEvent(r)) : r.version === 3 ? canonicalRecordV3Bytes(committedRecordV3(r)) : canonicalRecordBytes(committedRecord(r));

/**
 * The leaf columns (LEAF_COLUMNS, and `tx` as text) of a v1 event aliased `e` and of a record
 * of phigate.audit_records aliased `r`, for the readers that go to the tables themselves (verify, prove) rather than
 * through the gateway's definer functions.
 */
export const V1_LEAF_SELECT = `e.id AS key, 1 AS version, e.tx::text AS tx, (extract(epoch FROM e.occurred_at) * 1000000)::bigint AS occurred_at_us,
  e.batch_id, e.request_id, e.actor, e.actor_kind, e.client_addr, e.credential_id, e.role, e.purpose, e.break_glass, e.grant_id,
  e.patient_id, ARRAY[e.action] AS actions, ARRAY[e.type_name] AS type_names, ARRAY[e.field] AS fields,
  ARRAY[e.record_id] AS record_ids, ARRAY[e.detail] AS details, NULL::uuid[] AS patient_ids`;
export const RECORD_LEAF_SELECT = `r.id << 16 AS key, 2 AS version, r.tx::text AS tx, (extract(epoch FROM r.occurred_at) * 1000000)::bigint AS occurred_at_us,
  r.batch_id, r.request_id, r.actor, r.actor_kind, r.client_addr, r.credential_id, r.role, r.purpose, r.break_glass, r.grant_id,
  r.patient_id, r.actions, r.type_names, r.fields, r.record_ids, r.details, NULL::uuid[] AS patient_ids`;
/** The same of a record of several patients (phigate.audit_records_v3, 061) aliased `r`. */
export const V3_LEAF_SELECT = `r.id << 16 AS key, 3 AS version, r.tx::text AS tx, (extract(epoch FROM r.occurred_at) * 1000000)::bigint AS occurred_at_us,
  r.batch_id, r.request_id, r.actor, r.actor_kind, r.client_addr, r.credential_id, r.role, r.purpose, r.break_glass, r.grant_id,
  NULL::uuid AS patient_id, r.actions, r.type_names, r.fields, r.record_ids, r.details, r.patient_ids`;
