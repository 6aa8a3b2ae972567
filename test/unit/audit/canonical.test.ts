import { describe, expect, it } from 'vitest';
import { CANONICAL_VERSION, canonicalBytes, type CommittedAuditEvent } from '../../../src/audit/canonical.ts';

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
