/**
 * The bytes that stand for one committed audit event, for the Merkle log to hash (a leaf each):
 * the same event always gives the same bytes, and two different events never do. Versioned, so
 * that a later encoding can sit beside this one in the same log.
 *
 * Version 1: the length (one byte) and ASCII bytes of the tag `phigate.audit_event.v1`, then every column of phigate.audit_events in
 * the fixed order of CANONICAL_COLUMNS, each as one type byte and its value:
 *   0x00                      null
 *   0x01 u32be length, bytes  text (UTF-8, as stored), uuid (lowercase, hyphenated) and inet text
 *   0x02 u8                   boolean (0 or 1)
 *   0x03 i64be                integer: the id; occurred_at as microseconds since the Unix epoch (UTC)
 * Ids and time are the database's (identity and clock_timestamp()), so bytes can only be made
 * from a committed row, never before it is written.
 */
export const CANONICAL_VERSION = 'phigate.audit_event.v1';

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

type Part = { readonly int: bigint } | { readonly bool: boolean } | string | null;

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

const uuid = (id: string | null): string | null => (id === null ? null : id.toLowerCase());

function parts(e: CommittedAuditEvent): Part[] {
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

const sizeOf = (p: Part): number => (p === null ? 1 : typeof p === 'string' ? 5 + Buffer.byteLength(p, 'utf8') : 'int' in p ? 9 : 2);

export function canonicalBytes(event: CommittedAuditEvent): Buffer {
  const all = parts(event);
  const tag = Buffer.from(CANONICAL_VERSION, 'ascii');
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
