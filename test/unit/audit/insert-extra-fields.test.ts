import { describe, expect, it } from 'vitest';
import type { AuditEvent, AuditRequest } from '../../../src/audit/event.ts';
import { auditInsert } from '../../../src/audit/insert.ts';

// An event object may carry more than AuditEvent (readPhi's did, its AAD, until the cipher took
// the AAD as arguments): what is written must be the contract's audit fields only, whatever else it carries.
describe('auditInsert and the fields an event object carries beyond AuditEvent', () => {
  it('writes the same statement for an event with AAD fields as for the bare event', () => {
    const request: AuditRequest = { requestId: 'req-1', actor: 'dr-a', actorKind: 'user', clientAddr: '192.0.2.1' };
    const bare: AuditEvent = {
      action: 'read',
      typeName: 'Encounter',
      field: 'notes',
      patientId: '7f9c1e4a-0000-4000-8000-00000000000a',
      recordId: '7f9c1e4a-0000-4000-8000-00000000000b',
      role: 'clinician',
      purpose: 'treatment',
      breakGlass: false,
      grantId: null,
    };
    const asAad = { ...bare, table: 'encounters-marker', column: 'notes-column-marker', rowId: 'row-id-marker', ciphertext: Buffer.from('ciphertext-marker') };
    const batch = '0f0e0d0c-0000-4000-8000-000000000001';
    const withAad = auditInsert(batch, [{ request, events: [asAad] }]);
    expect(withAad).toEqual(auditInsert(batch, [{ request, events: [bare] }]));
    expect(JSON.stringify(withAad.values)).not.toMatch(/marker/);
  });
});
