import {
  CANONICAL_RECORD_V3_VERSION,
  CANONICAL_RECORD_VERSION,
  CANONICAL_VERSION,
  canonicalBytes,
  canonicalRecordBytes,
  canonicalRecordV3Bytes,
  MAX_RECORD_EVENTS,
  type CommittedAuditEvent,
  type CommittedAuditRecord,
  type CommittedAuditRecordV3,
  type CommittedRecordFacts,
  type RecordEvent,
  type ShapeEvent,
} from './canonical.ts';

/**
 * Reads canonical bytes (v1, v2 or v3) back into what they encode, so that whoever holds a proof can
 * see which event or record it is about. Null unless the bytes are exactly what the encoder would
 * make of that value: a decoder that accepted more than the encoder makes would let two byte
 * strings stand for one leaf.
 */
export type DecodedLeaf =
  | { readonly version: 1; readonly event: CommittedAuditEvent }
  | { readonly version: 2; readonly record: CommittedAuditRecord }
  | { readonly version: 3; readonly record: CommittedAuditRecordV3 };

type Value = bigint | boolean | string | null;

function values(bytes: Buffer, version: string): Value[] | null {
  const tag = Buffer.from(version, 'ascii');
  if (bytes.length < 1 + tag.length || bytes[0] !== tag.length || !bytes.subarray(1, 1 + tag.length).equals(tag)) return null;
  let at = 1 + tag.length;
  const out: Value[] = [];
  try {
    while (at < bytes.length) {
      const type = bytes.readUInt8(at++);
      if (type === 0x00) {
        out.push(null);
      } else if (type === 0x01) {
        const length = bytes.readUInt32BE(at);
        if (at + 4 + length > bytes.length) return null;
        out.push(bytes.toString('utf8', at + 4, at + 4 + length));
        at += 4 + length;
      } else if (type === 0x02) {
        out.push(bytes.readUInt8(at++) === 1);
      } else if (type === 0x03) {
        out.push(bytes.readBigInt64BE(at));
        at += 8;
      } else {
        return null;
      }
    }
  } catch {
    return null;
  }
  return out;
}

const str = (v: unknown): v is string => typeof v === 'string';
const opt = (v: unknown): v is string | null => v === null || typeof v === 'string';

/** Version 1 only: one event of the frozen layout. */
export function decodeCanonical(bytes: Buffer): CommittedAuditEvent | null {
  const v = values(bytes, CANONICAL_VERSION);
  if (v === null || v.length !== 18) return null;
  const [id, occurredAt, requestId, actor, actorKind, role, purpose, breakGlass, clientAddr, action, typeName, field, patientId, recordId, detail, grantId, credentialId, batchId] = v;
  if (typeof id !== 'bigint' || typeof occurredAt !== 'bigint' || typeof breakGlass !== 'boolean') return null;
  if (!str(requestId) || !str(actor) || !str(actorKind) || !str(purpose) || !str(action) || !str(typeName)) return null;
  if (!opt(role) || !opt(clientAddr) || !opt(field) || !opt(patientId) || !opt(recordId) || !opt(detail) || !opt(grantId) || !opt(credentialId) || !opt(batchId)) {
    return null;
  }
  const event: CommittedAuditEvent = {
    id,
    occurredAtMicros: occurredAt,
    requestId,
    actor,
    actorKind,
    role,
    purpose,
    breakGlass,
    clientAddr,
    action,
    typeName,
    field,
    patientId,
    recordId,
    detail,
    grantId,
    credentialId,
    batchId,
  };
  return canonicalBytes(event).equals(bytes) ? event : null;
}

const HEADER = 14;

/** The facts a v2 and a v3 record begin with (values 0-11), each of its kind; null otherwise. */
function recordFacts(v: readonly Value[]): CommittedRecordFacts | null {
  const [id, occurredAt, batchId, requestId, actor, actorKind, clientAddr, credentialId, role, purpose, breakGlass, grantId] = v;
  if (typeof id !== 'bigint' || typeof occurredAt !== 'bigint' || typeof breakGlass !== 'boolean') return null;
  if (!str(requestId) || !str(actor) || !str(actorKind) || !str(purpose)) return null;
  if (!opt(batchId) || !opt(clientAddr) || !opt(credentialId) || !opt(role) || !opt(grantId)) return null;
  return { id, occurredAtMicros: occurredAt, batchId, requestId, actor, actorKind, clientAddr, credentialId, role, purpose, breakGlass, grantId };
}

/** Version 2 only: one record and its events. */
export function decodeCanonicalRecord(bytes: Buffer): CommittedAuditRecord | null {
  const v = values(bytes, CANONICAL_RECORD_VERSION);
  if (v === null || v.length < HEADER) return null;
  const facts = recordFacts(v);
  const patientId = v[12];
  const count = v[13];
  if (facts === null || typeof count !== 'bigint' || !opt(patientId)) return null;
  if (count < 1n || count > BigInt(MAX_RECORD_EVENTS) || v.length !== HEADER + Number(count) * 5) return null;
  const events: RecordEvent[] = [];
  for (let at = HEADER; at < v.length; at += 5) {
    const [action, typeName, field, recordId, detail] = v.slice(at, at + 5);
    if (!str(action) || !str(typeName) || !opt(field) || !opt(recordId) || !opt(detail)) return null;
    events.push({ action, typeName, field, recordId, detail });
  }
  const record: CommittedAuditRecord = { ...facts, patientId, events };
  return canonicalRecordBytes(record).equals(bytes) ? record : null;
}

const V3_HEADER = 13;

/** Version 3 only: one record of several patients and its shape. */
export function decodeCanonicalRecordV3(bytes: Buffer): CommittedAuditRecordV3 | null {
  const v = values(bytes, CANONICAL_RECORD_V3_VERSION);
  if (v === null || v.length < V3_HEADER + 1) return null;
  const facts = recordFacts(v);
  const patients = v[12];
  if (facts === null || typeof patients !== 'bigint') return null;
  if (patients < 2n || patients > BigInt(MAX_RECORD_EVENTS)) return null;
  const p = Number(patients);
  const shapeAt = V3_HEADER + p;
  const length = v[shapeAt];
  if (typeof length !== 'bigint' || length < 1n || patients * length > BigInt(MAX_RECORD_EVENTS)) return null;
  const l = Number(length);
  if (v.length !== shapeAt + 1 + l * 4 + p * l) return null;
  const patientIds = v.slice(V3_HEADER, shapeAt);
  if (!patientIds.every(str)) return null;
  const shape: ShapeEvent[] = [];
  for (let at = shapeAt + 1; at < shapeAt + 1 + l * 4; at += 4) {
    const [action, typeName, field, detail] = v.slice(at, at + 4);
    if (!str(action) || !str(typeName) || !opt(field) || !opt(detail)) return null;
    shape.push({ action, typeName, field, detail });
  }
  const recordIds = v.slice(shapeAt + 1 + l * 4);
  if (!recordIds.every(opt)) return null;
  const record: CommittedAuditRecordV3 = { ...facts, patientIds: patientIds as string[], shape, recordIds: recordIds as (string | null)[] };
  return canonicalRecordV3Bytes(record).equals(bytes) ? record : null;
}

/** Any version; null for anything the encoders do not make. */
export function decodeLeaf(bytes: Buffer): DecodedLeaf | null {
  const event = decodeCanonical(bytes);
  if (event !== null) return { version: 1, event };
  const record = decodeCanonicalRecord(bytes);
  if (record !== null) return { version: 2, record };
  const v3 = decodeCanonicalRecordV3(bytes);
  return v3 === null ? null : { version: 3, record: v3 };
}
