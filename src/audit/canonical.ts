/**
 * The bytes that stand for one leaf of the Merkle log, for it to hash: the same committed row
 * always gives the same bytes, and two different rows never do. Versioned, so that encodings sit
 * beside each other in one log.
 *
 * Both versions: the length (one byte) and ASCII bytes of the version tag, then a fixed sequence
 * of values, each as one type byte and its value:
 *   0x00                      null
 *   0x01 u32be length, bytes  text (UTF-8, as stored), uuid (lowercase, hyphenated) and inet text
 *   0x02 u8                   boolean (0 or 1)
 *   0x03 i64be                integer: ids, counts; occurred_at as microseconds since the Unix epoch (UTC)
 * Ids and time are the database's (identity and clock_timestamp()), so bytes can only be made
 * from a committed row, never before it is written.
 *
 * Version 1 (`phigate.audit_event.v1`), one event of the frozen phigate.audit_events_v1: every
 * column in the order of CANONICAL_COLUMNS.
 *
 * Version 2 (`phigate.audit_record.v2`), one row of phigate.audit_records (migration 028): the
 * record's columns in the order of RECORD_COLUMNS, then the number of its events, then for each
 * event in ordinal order the values of EVENT_FACTS. Event i of record r has id (r << 16) + i, so
 * the record id and the ordinal name every event without repeating its id. The record's `tx`
 * is left out, as v1 leaves it out: it is the sealer's ordering key, not a fact of the events,
 * and the leaf's place in the signed tree already binds the order (verify checks it apart).
 *
 * Version 3 (`phigate.audit_record.v3`), one row of phigate.audit_records_v3 (migration 061), a
 * request's patients that share a group and a shape: the record's columns in the order of
 * RECORD_COLUMNS but patient_id, then the number P of its patients and each patient's id, then
 * the length L of its shape and, for each of the shape's events, the values of SHAPE_FACTS, then
 * its P x L record ids. Event i (from 0) is shape event i % L about patient i / L, record id i,
 * with id (r << 16) + i.
 */
export const CANONICAL_VERSION = 'phigate.audit_event.v1';
export const CANONICAL_RECORD_VERSION = 'phigate.audit_record.v2';
export const CANONICAL_RECORD_V3_VERSION = 'phigate.audit_record.v3';

/** Bits of an event id that hold its ordinal inside its record (028_audit_records.sql). */
export const EVENT_ORDINAL_BITS = 16n;
export const MAX_RECORD_EVENTS = 65_536;

export interface CommittedAuditEvent {
  readonly id: bigint;
  /** `occurred_at` in microseconds since the epoch: PostgreSQL's precision, which a Date would lose. */
  readonly occurredAtMicros: bigint;
  readonly requestId: string;
  readonly actor: string;
  readonly actorKind: string;
  readonly role: string | null;
  readonly purpose: string;
  readonly breakGlass: boolean;
  readonly clientAddr: string | null;
  readonly action: string;
  readonly typeName: string;
  readonly field: string | null;
  readonly patientId: string | null;
  readonly recordId: string | null;
  readonly detail: string | null;
  readonly grantId: string | null;
  readonly credentialId: string | null;
  readonly batchId: string | null;
}

/** The facts that differ between the events of one record: element i of its arrays. */
export interface RecordEvent {
  readonly action: string;
  readonly typeName: string;
  readonly field: string | null;
  readonly recordId: string | null;
  readonly detail: string | null;
}

export interface CommittedAuditRecord {
  /** The record's id; its events' ids are (id << 16) + ordinal. */
  readonly id: bigint;
  readonly occurredAtMicros: bigint;
  readonly batchId: string | null;
  readonly requestId: string;
  readonly actor: string;
  readonly actorKind: string;
  readonly clientAddr: string | null;
  readonly credentialId: string | null;
  readonly role: string | null;
  readonly purpose: string;
  readonly breakGlass: boolean;
  readonly grantId: string | null;
  readonly patientId: string | null;
  readonly events: readonly RecordEvent[];
}

/** The facts of one event of a v3 record's shape, the same for each of its patients. */
export interface ShapeEvent {
  readonly action: string;
  readonly typeName: string;
  readonly field: string | null;
  readonly detail: string | null;
}

/** A record of several patients sharing one shape (061): event i is shape[i % L] about patientIds[i / L]. */
/** What a v2 and a v3 record both hold: the record's id and time, then its request's and group's facts. */
export type CommittedRecordFacts = Omit<CommittedAuditRecord, 'patientId' | 'events'>;

export interface CommittedAuditRecordV3 extends CommittedRecordFacts {
  readonly patientIds: readonly string[];
  readonly shape: readonly ShapeEvent[];
  /** One per event, P x L. */
  readonly recordIds: readonly (string | null)[];
}

/** The events of a v3 record in ordinal order, each with its patient. */
export function recordV3Events(r: CommittedAuditRecordV3): (RecordEvent & { readonly patientId: string })[] {
  const out: (RecordEvent & { readonly patientId: string })[] = [];
  const l = r.shape.length;
  for (let i = 0; i < r.recordIds.length; i++) {
    const s = r.shape[i % l]!;
    out.push({ action: s.action, typeName: s.typeName, field: s.field, detail: s.detail, recordId: r.recordIds[i] ?? null, patientId: r.patientIds[Math.floor(i / l)]! });
  }
  return out;
}

export type Part = { readonly int: bigint } | { readonly bool: boolean } | string | null;

export const CANONICAL_COLUMNS = [
  'id',
  'occurred_at',
  'request_id',
  'actor',
  'actor_kind',
  'role',
  'purpose',
  'break_glass',
  'client_addr',
  'action',
  'type_name',
  'field',
  'patient_id',
  'record_id',
  'detail',
  'grant_id',
  'credential_id',
  'batch_id',
] as const;

export const RECORD_COLUMNS = [
  'id',
  'occurred_at',
  'batch_id',
  'request_id',
  'actor',
  'actor_kind',
  'client_addr',
  'credential_id',
  'role',
  'purpose',
  'break_glass',
  'grant_id',
  'patient_id',
] as const;

export const EVENT_FACTS = ['action', 'type_name', 'field', 'record_id', 'detail'] as const;
export const SHAPE_FACTS = ['action', 'type_name', 'field', 'detail'] as const;

const uuid = (id: string | null): string | null => (id === null ? null : id.toLowerCase());

function eventParts(e: CommittedAuditEvent): Part[] {
  return [
    { int: e.id },
    { int: e.occurredAtMicros },
    e.requestId,
    e.actor,
    e.actorKind,
    e.role,
    e.purpose,
    { bool: e.breakGlass },
    e.clientAddr,
    e.action,
    e.typeName,
    e.field,
    uuid(e.patientId),
    uuid(e.recordId),
    e.detail,
    uuid(e.grantId),
    e.credentialId,
    uuid(e.batchId),
  ];
}

// What a v2 and a v3 record both begin with: the record's own facts, then the request's and the group's.
function recordFactParts(r: CommittedRecordFacts): Part[] {
  return [
    { int: r.id },
    { int: r.occurredAtMicros },
    uuid(r.batchId),
    r.requestId,
    r.actor,
    r.actorKind,
    r.clientAddr,
    r.credentialId,
    r.role,
    r.purpose,
    { bool: r.breakGlass },
    uuid(r.grantId),
  ];
}

function recordParts(r: CommittedAuditRecord): Part[] {
  const out: Part[] = [
    ...recordFactParts(r),
    uuid(r.patientId),
    { int: BigInt(r.events.length) },
  ];
  for (const e of r.events) out.push(e.action, e.typeName, e.field, uuid(e.recordId), e.detail);
  return out;
}

function recordV3Parts(r: CommittedAuditRecordV3): Part[] {
  const out: Part[] = [
    ...recordFactParts(r),
    { int: BigInt(r.patientIds.length) },
  ];
  for (const p of r.patientIds) out.push(uuid(p));
  out.push({ int: BigInt(r.shape.length) });
  for (const e of r.shape) out.push(e.action, e.typeName, e.field, e.detail);
  for (const id of r.recordIds) out.push(uuid(id));
  return out;
}

const sizeOf = (p: Part): number => (p === null ? 1 : typeof p === 'string' ? 5 + Buffer.byteLength(p, 'utf8') : 'int' in p ? 9 : 2);

function encode(version: string, all: readonly Part[]): Buffer {
  const tag = Buffer.from(version, 'ascii');
  const out = Buffer.alloc(1 + tag.length + all.reduce((n, p) => n + sizeOf(p), 0));
  let at = out.writeUInt8(tag.length, 0);
  at += tag.copy(out, at);
  for (const p of all) {
    if (p === null) {
      at = out.writeUInt8(0x00, at);
    } else if (typeof p === 'string') {
      at = out.writeUInt8(0x01, at);
      const length = out.write(p, at + 4, 'utf8');
      at = out.writeUInt32BE(length, at) + length;
    } else if ('int' in p) {
      at = out.writeUInt8(0x03, at);
      at = out.writeBigInt64BE(p.int, at);
    } else {
      at = out.writeUInt8(0x02, at);
      at = out.writeUInt8(p.bool ? 1 : 0, at);
    }
  }
  return out;
}

export function canonicalBytes(event: CommittedAuditEvent): Buffer {
  return encode(CANONICAL_VERSION, eventParts(event));
}

/** Version 2: one record, all its events. A record has 1 to 65,536 events (028's CHECK). */
export function canonicalRecordBytes(record: CommittedAuditRecord): Buffer {
  if (record.events.length < 1 || record.events.length > MAX_RECORD_EVENTS) {
    throw new RangeError(`an audit record holds 1 to ${MAX_RECORD_EVENTS} events, not ${record.events.length}`);
  }
  return encode(CANONICAL_RECORD_VERSION, recordParts(record));
}

/**
 * Version 3: one record of 2 or more patients sharing a shape of 1 or more events, 65,536 events
 * at most (061's CHECK), a record id for each.
 */
export function canonicalRecordV3Bytes(record: CommittedAuditRecordV3): Buffer {
  const events = record.patientIds.length * record.shape.length;
  if (record.patientIds.length < 2 || record.shape.length < 1 || events > MAX_RECORD_EVENTS || record.recordIds.length !== events) {
    throw new RangeError(`a v3 audit record holds 2 or more patients of one shape, 1 to ${MAX_RECORD_EVENTS} events with a record id each`);
  }
  return encode(CANONICAL_RECORD_V3_VERSION, recordV3Parts(record));
}

/** The id of the first event of a record: the key of its leaf in the log. */
export const firstEventId = (recordId: bigint): bigint => recordId << EVENT_ORDINAL_BITS;
