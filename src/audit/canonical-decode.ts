import { CANONICAL_VERSION, canonicalBytes, type CommittedAuditEvent } from './canonical.ts';

/**
 * Reads canonical v1 bytes back into the event they encode, so that whoever holds a proof can see
 * which event it is about. Null unless the bytes are exactly what canonicalBytes would make of
 * that event: a decoder that accepted more than the encoder makes would let two byte strings
 * stand for one event.
 */
export function decodeCanonical(bytes: Buffer): CommittedAuditEvent | null {
  const tag = Buffer.from(CANONICAL_VERSION, 'ascii');
  if (bytes.length < 1 + tag.length || bytes[0] !== tag.length || !bytes.subarray(1, 1 + tag.length).equals(tag)) return null;
  let at = 1 + tag.length;
  const values: (bigint | boolean | string | null)[] = [];
  try {
    while (at < bytes.length) {
      const type = bytes.readUInt8(at++);
      if (type === 0x00) {
        values.push(null);
      } else if (type === 0x01) {
        const length = bytes.readUInt32BE(at);
        if (at + 4 + length > bytes.length) return null;
        values.push(bytes.toString('utf8', at + 4, at + 4 + length));
        at += 4 + length;
      } else if (type === 0x02) {
        values.push(bytes.readUInt8(at++) === 1);
      } else if (type === 0x03) {
        values.push(bytes.readBigInt64BE(at));
        at += 8;
      } else {
        return null;
      }
    }
  } catch {
    return null;
  }
  if (values.length !== 18) return null;
  const [id, occurredAt, requestId, actor, actorKind, role, purpose, breakGlass, clientAddr, action, typeName, field, patientId, recordId, detail, grantId, credentialId, batchId] = values;
  const str = (v: unknown): v is string => typeof v === 'string';
  const opt = (v: unknown): v is string | null => v === null || typeof v === 'string';
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
