import { describe, expect, it } from 'vitest';
import { canonicalBytes, canonicalRecordBytes, type CommittedAuditEvent, type CommittedAuditRecord } from '../../../src/audit/canonical.ts';
import { describeLeaf } from '../../../src/audit/verify/prove.ts';

// What check-proof says about the entry a proof holds: which event or record, in ids and codes
// only; and with --event, whether that event is inside the entry at all.

const PATIENT = '0b6f7a3e-2c1d-4e5f-8a9b-0c1d2e3f4a5b';
const record: CommittedAuditRecord = {
  id: 5n,
  occurredAtMicros: 1_796_500_000_123_456n,
  batchId: null,
  requestId: 'req-9',
  actor: 'dr-north-1',
  actorKind: 'user',
  clientAddr: null,
  credentialId: null,
  role: 'physician',
  purpose: 'treatment',
  breakGlass: true,
  grantId: null,
  patientId: PATIENT,
  events: [
    { action: 'read', typeName: 'Patient', field: 'ssn', recordId: null, detail: null },
    { action: 'denied', typeName: 'Encounter', field: 'notes', recordId: null, detail: null },
  ],
};
const event: CommittedAuditEvent = {
  id: 42n,
  occurredAtMicros: 1_796_500_000_123_456n,
  requestId: 'req-1',
  actor: 'dr-north-1',
  actorKind: 'user',
  role: 'nurse',
  purpose: 'treatment',
  breakGlass: false,
  clientAddr: null,
  action: 'read',
  typeName: 'Patient',
  field: 'mrn',
  patientId: PATIENT,
  recordId: null,
  detail: null,
  grantId: null,
  credentialId: null,
  batchId: null,
};

describe('describeLeaf', () => {
  const bytes = canonicalRecordBytes(record);
  // Record 5's events are 5 << 16 = 327680 and 327681.

  it('names a record with its events, or the one event asked for inside it', () => {
    expect(describeLeaf(bytes)).toEqual({
      ok: true,
      text: `record 5 (events 327680 to 327681): 2 events about patient ${PATIENT} by user dr-north-1 (physician), purpose treatment, break-glass, at 2026-12-05T19:46:40.123Z, request req-9`,
    });
    expect(describeLeaf(bytes, 327681n)).toEqual({
      ok: true,
      text: `event 327681: denied Encounter.notes patient ${PATIENT} by user dr-north-1 (physician), purpose treatment, break-glass, at 2026-12-05T19:46:40.123Z, request req-9, in record 5 (events 327680 to 327681)`,
    });
  });

  it('refuses an event outside the record: before its first, past its last, of another record', () => {
    for (const id of [327679n, 327682n, 6n << 16n, 5n]) {
      expect(describeLeaf(bytes, id), String(id)).toEqual({ ok: false, problem: `event ${id} is not in the entry the proof is about (record 5, events 327680 to 327681)` });
    }
  });

  it('names a v1 event, and refuses another id for it', () => {
    const v1 = canonicalBytes(event);
    expect(describeLeaf(v1, 42n)).toMatchObject({ ok: true, text: expect.stringMatching(/^event 42: read Patient\.mrn patient .* by user dr-north-1 \(nurse\), purpose treatment, at /) });
    expect(describeLeaf(v1)).toEqual(describeLeaf(v1, 42n));
    expect(describeLeaf(v1, 43n)).toEqual({ ok: false, problem: 'event 43 is not the entry the proof is about (event 42)' });
  });

  it('refuses bytes that are neither version', () => {
    expect(describeLeaf(Buffer.from('not an audit entry'))).toMatchObject({ ok: false });
  });
});
