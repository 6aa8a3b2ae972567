import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { AuditEvent, AuditRequest } from '../../../src/audit/event.ts';
import { FEW_SHAPES, auditInsert, auditStatementName, chargedAuditInsert, isUuid } from '../../../src/audit/insert.ts';
import { uuidOf, uuidsOf as uuids } from '../../support/binary-uuids.ts';

const request: AuditRequest = { requestId: 'req-1', actor: 'reg-north', actorKind: 'user', clientAddr: null };
const P1 = '0b6f7a3e-2c1d-4e5f-8a9b-0c1d2e3f4a5b';
const P2 = '1c7a8b4f-3d2e-4f60-9b0c-1d2e3f4a5b6c';
const E1 = '2d8b9c50-4e3f-4071-8c1d-2e3f4a5b6c7d';
const BATCH = '0f0e0d0c-0000-4000-8000-000000000001';
const ev = (patientId: string | null, field: string, extra: Partial<AuditEvent> = {}): AuditEvent => ({
  action: 'read', typeName: 'Patient', field, patientId, recordId: null, role: 'registrar', purpose: 'operations', breakGlass: false, ...extra,
});
const values = (events: AuditEvent[]) => auditInsert(BATCH, [{ request, events }]).values!;
const NIL = '00000000-0000-0000-0000-000000000000';

// The batch's statement is built without keys for the common case (src/audit/insert.ts): these
// are the cases where that shortcut could go wrong.
describe('auditInsert, record and shape bookkeeping', () => {
  it('keeps one record per (patient, group) when events of two groups of one patient interleave', () => {
    const v = values([ev(P1, 'ssn'), ev(P1, 'notes', { role: null, action: 'denied' }), ev(P1, 'mrn'), ev(P2, 'ssn'), ev(P1, 'phone', { role: null, action: 'denied' })]);
    // Records in the order of their first event: P1 as registrar, P1 with no role, P2.
    expect([v[14], v[15], uuids(v[17])]).toEqual(['{1,1,1}', '{1,2,1}', [P1, P1, P2]]);
    expect(v[12]).toBe(String.raw`{"{\"ssn\",\"mrn\"}","{\"notes\",\"phone\"}","{\"ssn\"}"}`);
    // Each record's first event in the flat record ids: 2 events, then 2, then 1.
    expect([v[18], v[19]]).toEqual(['{1,3,5}', 5]);
  });

  it('finds a shape seen before another of the same length came between: its patients share one v3 record', () => {
    const v = values([ev(P1, 'ssn'), ev(P2, 'mrn'), ev(E1, 'ssn')]);
    // P2 alone in its shape: a v2 record of shape 2; P1 and E1: one v3 record of shape 1.
    expect([v[16], v[24], uuids(v[27]), v[28]]).toEqual(['{2}', '{1}', [P1, E1], '{2}']);
    expect(v[12]).toBe(String.raw`{"{\"ssn\"}","{\"mrn\"}"}`);
  });

  it('tells shapes apart by action and detail, not by field alone', () => {
    const R = randomUUID();
    const v = values([ev(P1, 'ssn'), ev(P2, 'ssn', { action: 'masked' }), ev(E1, 'ssn', { detail: 'hit' }), ev(R, 'ssn', { detail: null })]);
    expect([v[16], v[24], uuids(v[27])]).toEqual(['{2,3}', '{1}', [P1, R]]);
  });

  it('writes the patients of one group and shape as one v3 record, their record ids patient by patient, and batches of one patient per record as before', () => {
    const page = [ev(P1, 'ssn'), ev(P2, 'ssn'), ev(P1, 'kind', { recordId: E1 }), ev(P2, 'kind', { recordId: null }), ev(null, 'patients', { action: 'search' })];
    const statement = auditInsert(BATCH, [{ request, events: page }]);
    expect(auditStatementName(statement)).toBe('phigate_audit_insert_v3');
    const v = statement.values!;
    // v2: the search about no patient (events 5); v3: P1's two events then P2's (events 1-4).
    expect([v[14], v[16], uuids(v[17]), v[18]]).toEqual(['{1}', '{2}', [null], '{5}']);
    expect([v[22], v[23], v[24], v[25], v[26], uuids(v[27]), v[28], v[19]]).toEqual(['{1}', '{1}', '{1}', '{1}', '{1}', [P1, P2], '{2}', 5]);
    expect(uuids(v[20])).toEqual([NIL, E1, NIL, NIL, NIL]);
    expect(statement.text).toContain('audit_batch_written_v3');
    const single = auditInsert(BATCH, [{ request, events: [ev(P1, 'ssn'), ev(P1, 'mrn')] }]);
    expect(auditStatementName(single)).toBe('phigate_audit_insert');
    expect(single.values).toHaveLength(22);
    expect(single.text).not.toContain('audit_records_v3');
  });

  it('checks every distinct record id, also after a repeated one', () => {
    const rows = (bad: string) => [ev(P1, 'kind', { recordId: E1 }), ev(P1, 'reason', { recordId: E1 }), ev(P1, 'notes', { recordId: bad })];
    expect(uuids(values(rows(E1.toUpperCase()))[20])).toEqual([E1, E1, E1]);
    expect(() => values(rows(`${E1}}`))).toThrow('not a uuid');
    expect(() => values(rows(`${E1.slice(0, 35)}}`))).toThrow('not a uuid');
  });

  it('stands for a NULL record id with the nil uuid, or with a uuid no event carries when one carries the nil uuid', () => {
    const nulls = values([ev(P1, 'ssn'), ev(P1, 'kind', { recordId: E1 }), ev(P2, 'ssn')]);
    expect([uuids(nulls[20]), nulls[21]]).toEqual([[NIL, E1, NIL], Buffer.alloc(16)]);
    const nil = values([ev(P1, 'ssn'), ev(P1, 'kind', { recordId: NIL }), ev(P2, 'ssn')]);
    const sentinel = uuidOf(nil[21] as Buffer);
    expect(isUuid(sentinel) && sentinel !== NIL).toBe(true);
    expect(uuids(nil[20])).toEqual([sentinel, NIL, sentinel]);
  });

  it('scans up to FEW_SHAPES shapes per record and hashes more, each statement under a name of its own', () => {
    const withShapes = (n: number) => auditInsert(BATCH, [{ request, events: Array.from({ length: n }, (_, i) => ev(randomUUID(), `f${i}`)) }]);
    const [few, many] = [withShapes(FEW_SHAPES), withShapes(FEW_SHAPES + 1)];
    expect(few.text).toMatch(/CROSS JOIN LATERAL/);
    expect(many.text).toMatch(/JOIN s USING \(shape\)/);
    const charges = { text: '', values: [['user'], ['reg-north'], [1], [1], [10], [10]] };
    const names = [few, many, chargedAuditInsert(few, charges, 1), chargedAuditInsert(many, charges, 1)].map(auditStatementName);
    expect(new Set(names).size).toBe(4);
    expect(() => auditStatementName({ text: 'SELECT 1' })).toThrow();
  });

  it('isUuid accepts exactly 8-4-4-4-12 hex digits', () => {
    for (const good of [P1, P1.toUpperCase(), '00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff']) expect(isUuid(good)).toBe(true);
    for (const bad of ['', P1.slice(1), `${P1}0`, P1.replace(/-/g, ''), P1.replace('-', 'a') + '-', `g${P1.slice(1)}`, `${P1.slice(0, 8)}_${P1.slice(9)}`,
      P1.replace('a', '/'), P1.replace('a', ':'), P1.replace('a', '@'), P1.replace('a', '`'), P1.replace('a', 'G'), P1.replace('a', '{')]) {
      expect(isUuid(bad), bad).toBe(false);
    }
  });
});
