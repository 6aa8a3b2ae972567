import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decodeCanonical, decodeCanonicalRecord, decodeCanonicalRecordV3, decodeLeaf } from '../../../src/audit/canonical-decode.ts';
import {
  CANONICAL_RECORD_V3_VERSION,
  CANONICAL_RECORD_VERSION,
  CANONICAL_VERSION,
  canonicalBytes,
  canonicalRecordBytes,
  canonicalRecordV3Bytes,
  recordV3Events,
  type CommittedAuditEvent,
  type CommittedAuditRecord,
  type CommittedAuditRecordV3,
  type RecordEvent,
} from '../../../src/audit/canonical.ts';

const event: CommittedAuditEvent = {
  id: 42n,
  occurredAtMicros: 1_796_500_000_123_456n,
  requestId: 'req-1',
  actor: 'dr-north-1',
  actorKind: 'user',
  role: 'physician',
  purpose: 'treatment',
  breakGlass: false,
  clientAddr: '127.0.0.1',
  action: 'read',
  typeName: 'Patient',
  field: 'ssn',
  patientId: '0b6f7a3e-2c1d-4e5f-8a9b-0c1d2e3f4a5b',
  recordId: null,
  detail: null,
  grantId: null,
  credentialId: null,
  batchId: '1c7a8b4f-3d2e-4f60-9b0c-1d2e3f4a5b6c',
};

describe('canonical bytes of an audit event (v1)', () => {
  it('are stable: the same event gives these exact bytes, which start with the version tag', () => {
    const bytes = canonicalBytes(event);
    expect(bytes.subarray(1, 1 + CANONICAL_VERSION.length).toString('ascii')).toBe('phigate.audit_event.v1');
    expect(bytes[0]).toBe(CANONICAL_VERSION.length);
    // Pinned: a change here breaks every hash already in a log, so it must be a new version.
    expect(bytes.toString('hex')).toMatchInlineSnapshot(`"16706869676174652e61756469745f6576656e742e763103000000000000002a03000661e84058aa4001000000057265712d31010000000a64722d6e6f7274682d31010000000475736572010000000970687973696369616e010000000974726561746d656e74020001000000093132372e302e302e31010000000472656164010000000750617469656e74010000000373736e010000002430623666376133652d326331642d346535662d386139622d30633164326533663461356200000000010000002431633761386234662d336432652d346636302d396230632d316432653366346135623663"`);
  });

  it('differ whenever any one column differs', () => {
    const base = canonicalBytes(event).toString('hex');
    const variants: Partial<CommittedAuditEvent>[] = [
      { id: 43n },
      { occurredAtMicros: event.occurredAtMicros + 1n },
      { requestId: 'req-2' },
      { actor: 'dr-north-2' },
      { actorKind: 'partner' },
      { role: null },
      { purpose: 'payment' },
      { breakGlass: true },
      { clientAddr: null },
      { action: 'masked' },
      { typeName: 'Encounter' },
      { field: 'mrn' },
      { patientId: null },
      { recordId: event.patientId },
      { detail: 'hit' },
      { grantId: event.batchId },
      { credentialId: 'k_1' },
      { batchId: null },
    ];
    const seen = new Set([base]);
    for (const v of variants) {
      const hex = canonicalBytes({ ...event, ...v }).toString('hex');
      expect(seen.has(hex), JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? String(x) : x))).toBe(false);
      seen.add(hex);
    }
  });

  it('tell null from the empty string, and do not let text move between neighbouring columns', () => {
    expect(canonicalBytes({ ...event, detail: null }).equals(canonicalBytes({ ...event, detail: '' }))).toBe(false);
    expect(canonicalBytes({ ...event, actor: 'ab', actorKind: 'c' }).equals(canonicalBytes({ ...event, actor: 'a', actorKind: 'bc' }))).toBe(false);
  });

  it('write uuids in one case, as PostgreSQL prints them', () => {
    expect(canonicalBytes({ ...event, patientId: event.patientId!.toUpperCase() }).equals(canonicalBytes(event))).toBe(true);
  });
});

const record: CommittedAuditRecord = {
  id: 7n,
  occurredAtMicros: 1_796_500_000_123_456n,
  batchId: '1c7a8b4f-3d2e-4f60-9b0c-1d2e3f4a5b6c',
  requestId: 'req-1',
  actor: 'dr-north-1',
  actorKind: 'user',
  clientAddr: '127.0.0.1',
  credentialId: null,
  role: 'physician',
  purpose: 'treatment',
  breakGlass: false,
  grantId: null,
  patientId: '0b6f7a3e-2c1d-4e5f-8a9b-0c1d2e3f4a5b',
  events: [
    { action: 'read', typeName: 'Patient', field: 'ssn', recordId: null, detail: null },
    { action: 'masked', typeName: 'Patient', field: 'mrn', recordId: null, detail: null },
    { action: 'read', typeName: 'Encounter', field: 'notes', recordId: '2d8b9c5a-4e3f-4a71-8c1d-2e3f4a5b6c7d', detail: 'hit' },
  ],
};

describe('canonical bytes of an audit record (v2)', () => {
  it('are stable, start with their own tag, and decode back to the record', () => {
    const bytes = canonicalRecordBytes(record);
    expect(bytes[0]).toBe(CANONICAL_RECORD_VERSION.length);
    expect(bytes.subarray(1, 1 + bytes[0]!).toString('ascii')).toBe('phigate.audit_record.v2');
    // Pinned: a change here breaks every hash already in a log, so it must be a new version.
    expect(createHash('sha256').update(bytes).digest('hex')).toMatchInlineSnapshot(`"0cd4ebec234f97d7f7b496496d8d2fcaf57d697db9d3230e223bbd3b68869b98"`);
    expect(decodeCanonicalRecord(bytes)).toEqual(record);
    expect(decodeLeaf(bytes)).toEqual({ version: 2, record });
    expect(decodeLeaf(canonicalBytes(event))).toEqual({ version: 1, event });
    expect(decodeCanonical(bytes)).toBeNull();
    expect(decodeCanonicalRecord(canonicalBytes(event))).toBeNull();
  });

  it('differ whenever any one column or any one event fact differs, and with the events order and count', () => {
    const base = canonicalRecordBytes(record).toString('hex');
    const ev = (i: number, change: Partial<RecordEvent>): RecordEvent[] => record.events.map((e, j) => (j === i ? { ...e, ...change } : e));
    const variants: Partial<CommittedAuditRecord>[] = [
      { id: 8n },
      { occurredAtMicros: record.occurredAtMicros + 1n },
      { batchId: null },
      { requestId: 'req-2' },
      { actor: 'dr-north-2' },
      { actorKind: 'partner' },
      { clientAddr: null },
      { credentialId: 'k_1' },
      { role: null },
      { purpose: 'payment' },
      { breakGlass: true },
      { grantId: record.batchId },
      { patientId: null },
      { events: ev(1, { action: 'read' }) },
      { events: ev(0, { typeName: 'Encounter' }) },
      { events: ev(0, { field: null }) },
      { events: ev(2, { recordId: null }) },
      { events: ev(2, { detail: null }) },
      { events: [record.events[1]!, record.events[0]!, record.events[2]!] },
      { events: record.events.slice(0, 2) },
      { events: [...record.events, record.events[0]!] },
    ];
    const seen = new Set([base]);
    for (const v of variants) {
      const hex = canonicalRecordBytes({ ...record, ...v }).toString('hex');
      expect(seen.has(hex), JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? String(x) : x))).toBe(false);
      seen.add(hex);
    }
  });

  it('do not let a value move between the record and its events, nor between events', () => {
    // Two events whose text shifts across the boundary between them.
    const a = { ...record, events: [{ ...record.events[0]!, detail: 'ab' }, { ...record.events[1]!, action: 'c' }] };
    const b = { ...record, events: [{ ...record.events[0]!, detail: 'a' }, { ...record.events[1]!, action: 'bc' }] };
    expect(canonicalRecordBytes(a).equals(canonicalRecordBytes(b))).toBe(false);
    expect(canonicalRecordBytes({ ...record, events: [{ ...record.events[0]!, detail: '' }] }).equals(canonicalRecordBytes({ ...record, events: [record.events[0]!] }))).toBe(false);
  });

  it('are refused for a record without events, and decoding refuses bytes the encoder does not make', () => {
    expect(() => canonicalRecordBytes({ ...record, events: [] })).toThrow(RangeError);
    const bytes = canonicalRecordBytes(record);
    expect(decodeCanonicalRecord(bytes.subarray(0, bytes.length - 1))).toBeNull();
    expect(decodeCanonicalRecord(Buffer.concat([bytes, Buffer.from([0x00])]))).toBeNull();
    // A count that says two events where three follow.
    const tag = 1 + CANONICAL_RECORD_VERSION.length;
    const countAt = bytes.indexOf(Buffer.from([0x03, 0, 0, 0, 0, 0, 0, 0, 3]), tag + 18);
    expect(countAt).toBeGreaterThan(tag);
    const wrong = Buffer.from(bytes);
    wrong[countAt + 8] = 2;
    expect(decodeCanonicalRecord(wrong)).toBeNull();
    // Uppercase uuids are not what the encoder writes.
    const upper = Buffer.from(bytes.toString('latin1').replace(record.patientId!, record.patientId!.toUpperCase()), 'latin1');
    expect(decodeCanonicalRecord(upper)).toBeNull();
  });
});

const { patientId: _one, events: _events, ...shared } = record;
const v3: CommittedAuditRecordV3 = {
  ...shared,
  patientIds: ['0b6f7a3e-2c1d-4e5f-8a9b-0c1d2e3f4a5b', '3e9c0d6b-5f4a-4b82-9d2e-3f4a5b6c7d8e'],
  shape: [
    { action: 'read', typeName: 'Patient', field: 'ssn', detail: null },
    { action: 'read', typeName: 'Encounter', field: 'kind', detail: 'hit' },
  ],
  recordIds: [null, '2d8b9c5a-4e3f-4a71-8c1d-2e3f4a5b6c7d', null, '4fad0e7c-6a5b-4c93-ae3f-4a5b6c7d8e9f'],
};

describe('canonical bytes of an audit record of several patients (v3)', () => {
  it('are stable, start with their own tag, and decode back to the record, whose events are the shape for each patient', () => {
    const bytes = canonicalRecordV3Bytes(v3);
    expect(bytes.subarray(1, 1 + bytes[0]!).toString('ascii')).toBe(CANONICAL_RECORD_V3_VERSION);
    expect(CANONICAL_RECORD_V3_VERSION).toBe('phigate.audit_record.v3');
    // Pinned: a change here breaks every hash already in a log, so it must be a new version.
    expect(createHash('sha256').update(bytes).digest('hex')).toMatchInlineSnapshot(`"21efa985d904f364fb3997237599479967dccad61a98b20c0e31c8c9e644ce1b"`);
    expect(decodeCanonicalRecordV3(bytes)).toEqual(v3);
    expect(decodeLeaf(bytes)).toEqual({ version: 3, record: v3 });
    expect(decodeCanonicalRecord(bytes)).toBeNull();
    expect(decodeCanonicalRecordV3(canonicalRecordBytes(record))).toBeNull();
    expect(recordV3Events(v3).map((e) => [e.patientId, e.field, e.recordId])).toEqual([
      [v3.patientIds[0], 'ssn', null],
      [v3.patientIds[0], 'kind', v3.recordIds[1]],
      [v3.patientIds[1], 'ssn', null],
      [v3.patientIds[1], 'kind', v3.recordIds[3]],
    ]);
  });

  it('differ whenever a patient, a shape fact or a record id differs, or moves', () => {
    const variants: Partial<CommittedAuditRecordV3>[] = [
      { id: 8n },
      { patientIds: [v3.patientIds[1]!, v3.patientIds[0]!] },
      { shape: [v3.shape[1]!, v3.shape[0]!] },
      { shape: [v3.shape[0]!, { ...v3.shape[1]!, detail: null }] },
      { recordIds: [v3.recordIds[1]!, null, null, v3.recordIds[3]!] },
      { grantId: record.batchId },
      // The same events as one patient of four shape events: a different record.
      { patientIds: [v3.patientIds[0]!, v3.patientIds[0]!] },
    ];
    const seen = new Set([canonicalRecordV3Bytes(v3).toString('hex')]);
    for (const v of variants) {
      const hex = canonicalRecordV3Bytes({ ...v3, ...v }).toString('hex');
      expect(seen.has(hex), JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? String(x) : x))).toBe(false);
      seen.add(hex);
    }
  });

  it('are refused for fewer than two patients or record ids that are not one per event, and decoding refuses what the encoder does not make', () => {
    expect(() => canonicalRecordV3Bytes({ ...v3, patientIds: [v3.patientIds[0]!], recordIds: v3.recordIds.slice(0, 2) })).toThrow(RangeError);
    expect(() => canonicalRecordV3Bytes({ ...v3, recordIds: v3.recordIds.slice(0, 3) })).toThrow(RangeError);
    expect(() => canonicalRecordV3Bytes({ ...v3, shape: [] , recordIds: [] })).toThrow(RangeError);
    const bytes = canonicalRecordV3Bytes(v3);
    expect(decodeCanonicalRecordV3(bytes.subarray(0, bytes.length - 1))).toBeNull();
    expect(decodeCanonicalRecordV3(Buffer.concat([bytes, Buffer.from([0x00])]))).toBeNull();
    const upper = Buffer.from(bytes.toString('latin1').replace(v3.patientIds[1]!, v3.patientIds[1]!.toUpperCase()), 'latin1');
    expect(decodeCanonicalRecordV3(upper)).toBeNull();
  });
});
