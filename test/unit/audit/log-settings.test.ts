import { describe, expect, it } from 'vitest';
import { committedEvent, committedRecord, type LeafRow } from '../../../src/audit/log/rows.ts';
import { canonicalBytes, canonicalRecordBytes } from '../../../src/audit/canonical.ts';
import { checkpointLine, leafLine, parseSinkLine } from '../../../src/audit/sink/lines.ts';
import { loadConfig } from '../../../src/config.ts';

// The audit log's settings, each wrong value named, and the sink's line format.

describe('audit log settings', () => {
  it('has defaults that need no setting', () => {
    const c = loadConfig({}, '/srv').auditLog;
    expect(c).toEqual({
      origin: 'phigate.local/audit',
      sealMs: 1000,
      sealBatch: 10_000,
      checkpointSeconds: 10,
      checkpointEvents: 10_000,
      signer: { kind: 'file', file: '/srv/.phigate/audit-signing-key.pem' },
      sinkDir: null,
      sinkMaxBytes: 64 * 1024 * 1024,
      sinkStdout: false,
    });
    expect(loadConfig({ PHIGATE_AUDIT_SINK_DIR: 'sink', PHIGATE_AUDIT_SINK_STDOUT: 'on' }, '/srv').auditLog).toMatchObject({ sinkDir: '/srv/sink', sinkStdout: true });
  });

  it.each([
    ['PHIGATE_AUDIT_LOG_ORIGIN', 'a+b'],
    ['PHIGATE_AUDIT_SEAL_MS', '0'],
    ['PHIGATE_AUDIT_SEAL_BATCH', 'many'],
    ['PHIGATE_AUDIT_CHECKPOINT_SECONDS', '0'],
    ['PHIGATE_AUDIT_CHECKPOINT_EVENTS', '-1'],
    ['PHIGATE_AUDIT_SINK_MAX_BYTES', '10'],
    ['PHIGATE_AUDIT_SINK_STDOUT', 'yes'],
    ['PHIGATE_AUDIT_SIGNING_KEY_FILE', ' '],
  ])('names %s when it is %j', (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(new RegExp(`^${name}: `));
  });
});

describe('sink lines', () => {
  const row: LeafRow = {
    key: '9007199254740993',
    version: 1,
    occurred_at_us: '1796513327000001',
    request_id: 'r-1',
    actor: 'dr-a',
    actor_kind: 'user',
    role: 'physician',
    purpose: 'treatment',
    break_glass: false,
    client_addr: '10.0.0.1',
    actions: ['read'],
    type_names: ['Patient'],
    fields: ['ssn'],
    patient_id: '0b6f7a3e-2c1d-4e5f-8a9b-0c1d2e3f4a5b',
    record_ids: [null],
    details: [null],
    grant_id: null,
    credential_id: null,
    batch_id: null,
  };
  // Record 5's leaf: its first event is 5 << 16.
  const record: LeafRow = {
    ...row,
    key: String(5n << 16n),
    version: 2,
    actions: ['read', 'masked'],
    type_names: ['Patient', 'Patient'],
    fields: ['ssn', 'mrn'],
    record_ids: [null, null],
    details: [null, 'hit'],
  };

  it('carries the leaf, the id without loss, the canonical bytes and the time to the microsecond', () => {
    const text = leafLine(7, row);
    expect(text.endsWith('\n')).toBe(true);
    const line = parseSinkLine(text.trimEnd())!;
    expect(line).toMatchObject({ audit: 'event', leaf: 7, id: '9007199254740993' });
    if (line.audit !== 'event') throw new Error('not an event line');
    expect(Buffer.from(line.canonical, 'base64').equals(canonicalBytes(committedEvent(row)))).toBe(true);
    expect(line.event.occurredAt).toBe('2026-12-05T23:28:47.000001Z');
    expect(parseSinkLine(checkpointLine(3, 'note\n').trimEnd())).toEqual({ audit: 'checkpoint', size: 3, note: 'note\n' });
    expect(parseSinkLine('{"audit":"event","leaf":')).toBeNull();
    expect(parseSinkLine('{"level":30,"msg":"phigate listening"}')).toBeNull();
  });

  it('carries a record with its events, each with its id, and the canonical v2 bytes of the record', () => {
    const line = parseSinkLine(leafLine(8, record).trimEnd())!;
    expect(line).toMatchObject({ audit: 'record', leaf: 8, id: '327680' });
    if (line.audit !== 'record') throw new Error('not a record line');
    expect(Buffer.from(line.canonical, 'base64').equals(canonicalRecordBytes(committedRecord(record)))).toBe(true);
    expect(line.record).toMatchObject({
      id: '5',
      occurredAt: '2026-12-05T23:28:47.000001Z',
      actor: 'dr-a',
      events: [
        { id: '327680', action: 'read', typeName: 'Patient', field: 'ssn', recordId: null, detail: null },
        { id: '327681', action: 'masked', typeName: 'Patient', field: 'mrn', recordId: null, detail: 'hit' },
      ],
    });
    expect(() => leafLine(8, { ...record, details: [null] })).toThrow(/arrays differ/);
  });
});
