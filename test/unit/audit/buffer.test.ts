import { describe, expect, it } from 'vitest';
import { createAuditBuffer } from '../../../src/audit/buffer.ts';
import type { AuditEvent } from '../../../src/audit/event.ts';
import { uuidsOf } from '../../support/binary-uuids.ts';

const request = { requestId: 'req-1', actor: 'reg-north', actorKind: 'user' as const, clientAddr: null };
const P1 = '0b6f7a3e-2c1d-4e5f-8a9b-0c1d2e3f4a5b';
const P2 = '1c7a8b4f-3d2e-4f60-9b0c-1d2e3f4a5b6c';
const read = (patientId: string, field: string, recordId: string | null = null): AuditEvent => ({
  action: 'read', typeName: 'Patient', field, patientId, recordId, role: 'registrar', purpose: 'operations', breakGlass: false,
});

describe('the audit buffer', () => {
  it('seals into one statement: a record per (patient, role, purpose, break-glass, grant), its events in order, each fact sent once', () => {
    const buffer = createAuditBuffer(request);
    buffer.add(read(P1, 'ssn'));
    buffer.add(read(P1, 'mrn'));
    buffer.add(read(P2, 'ssn'));
    buffer.add({ ...read(P2, 'notes', P1), action: 'denied', typeName: 'Encounter', role: null });
    const statement = buffer.seal()!;
    const [batchId, requestIds, , , , credentials, roles, , breakGlass, , actions, types, fields, , requests, groups, shapes, patients, starts, expected, records, sentinel] =
      statement.values!;
    expect(batchId).toMatch(/^[0-9a-f-]{36}$/);
    expect(requestIds).toBe('{"req-1"}');
    expect(credentials).toBe('{NULL}');
    // Two (role, purpose, break-glass, grant) groups: the registrar's reads, and the denial with no role.
    expect([roles, breakGlass]).toEqual(['{"registrar",NULL}', '{false,false}']);
    // Three records: P1's two reads together, P2's read, P2's denial (another role, so another record).
    expect([requests, groups, shapes]).toEqual(['{1,1,1}', '{1,1,2}', '{1,2,3}']);
    expect(uuidsOf(patients)).toEqual([P1, P2, P2]);
    // Every event's record id in one flat array, the nil uuid standing for NULL; each record's from its first event.
    expect([uuidsOf(records), starts, sentinel]).toEqual([['00000000-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000000', P1], '{1,3,4}', Buffer.alloc(16)]);
    expect([actions, types, fields]).toEqual([
      String.raw`{"{\"read\",\"read\"}","{\"read\"}","{\"denied\"}"}`,
      String.raw`{"{\"Patient\",\"Patient\"}","{\"Patient\"}","{\"Encounter\"}"}`,
      String.raw`{"{\"ssn\",\"mrn\"}","{\"ssn\"}","{\"notes\"}"}`,
    ]);
    expect(expected).toBe(4);
  });

  it('refuses to put an id that is not a uuid into the statement', () => {
    const buffer = createAuditBuffer(request);
    buffer.add(read(`${P1}},{${P2}`, 'ssn'));
    expect(() => buffer.seal()).toThrow('not a uuid');
  });

  it('refuses events after it was sealed, and has nothing to write when empty', () => {
    const buffer = createAuditBuffer(request);
    expect(buffer.seal()).toBeNull();
    expect(() => buffer.add(read(P1, 'ssn'))).toThrow();
  });
});
