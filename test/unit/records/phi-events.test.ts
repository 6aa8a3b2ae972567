import { describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../../src/audit/event.ts';
import { auditInsert } from '../../../src/audit/insert.ts';
import type { PhiRowFacts } from '../../../src/db/patients.ts';
import { fieldVerdict } from '../../../src/policy/decide.ts';
import { readPhi, type PhiField } from '../../../src/records/read-phi.ts';
import type { RequestScope } from '../../../src/records/scope.ts';
import { CLINIC } from '../policy/fixtures.ts';
import { readScope } from './read-scope.ts';

// A PHI value's audit event is held until its read's audit batch commits: it shares what every
// value of its field and verdict has in common, and reads as the contract's event all the same.
describe('the audit events of PHI values', () => {
  const setup = (roles: readonly string[]) => readScope(roles, 1000);
  const field = (typeName: 'Patient' | 'Encounter', name: string, column: string): PhiField => ({
    typeName,
    field: name,
    name: `${typeName}.${name}`,
    table: typeName === 'Patient' ? 'patients' : 'encounters',
    column,
  });
  const FIELDS = [field('Patient', 'mrn', 'mrn'), field('Patient', 'ssn', 'ssn'), field('Patient', 'givenName', 'given_name'), field('Encounter', 'notes', 'notes')];
  const rowOf = (i: number, opts: { grant?: { id: string; role: string } | null; onCareTeam?: boolean; encounter?: boolean } = {}): PhiRowFacts => {
    const patientId = `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
    return {
      clinicId: CLINIC,
      onCareTeam: opts.onCareTeam ?? true,
      grant: opts.grant ?? null,
      rowId: opts.encounter ? `10000000-0000-4000-8000-${String(i).padStart(12, '0')}` : patientId,
      patientId,
      key: { joined: null, held: null },
    };
  };
  // The event as the contract spells it, worked out from the verdict alone.
  const expected = (scope: RequestScope, f: PhiField, row: PhiRowFacts): AuditEvent => {
    const verdict = fieldVerdict(scope.policy, scope.principal, row, f.name);
    return {
      action: verdict.effect === 'deny' ? 'denied' : verdict.effect === 'mask' ? 'masked' : 'read',
      typeName: f.typeName,
      field: f.field,
      patientId: row.patientId,
      recordId: row.rowId === row.patientId ? null : row.rowId,
      role: verdict.recordedRole,
      purpose: verdict.purpose,
      breakGlass: verdict.breakGlass,
      grantId: verdict.breakGlass ? (row.grant?.id ?? null) : null,
    };
  };
  const contract = (e: AuditEvent): AuditEvent => ({
    action: e.action,
    typeName: e.typeName,
    field: e.field,
    patientId: e.patientId,
    recordId: e.recordId,
    role: e.role,
    purpose: e.purpose,
    breakGlass: e.breakGlass,
    grantId: e.grantId ?? null,
  });
  const readAll = (scope: RequestScope, rows: readonly PhiRowFacts[]) => {
    for (const row of rows) {
      for (const f of FIELDS) {
        if ((f.typeName === 'Encounter') !== (row.rowId !== row.patientId)) continue;
        try {
          // An empty value: shown (as empty) and audited like any other, with nothing to decrypt.
          readPhi(scope, f, row, null);
        } catch (e) {
          expect(e).toMatchObject({ code: 'FIELD_DENIED' });
        }
      }
    }
  };

  it('carry the contract’s facts of their field, verdict, patient and record, for every role, shown, masked or denied', async () => {
    for (const roles of [['physician'], ['nurse'], ['registrar'], ['billing']]) {
      const scope = await setup(roles);
      const rows = [rowOf(1), rowOf(2, { encounter: true }), rowOf(3, { onCareTeam: false }), rowOf(4, { encounter: true, onCareTeam: false }), rowOf(5)];
      readAll(scope, rows);
      const want: AuditEvent[] = [];
      for (const row of rows) for (const f of FIELDS) if ((f.typeName === 'Encounter') === (row.rowId !== row.patientId)) want.push(expected(scope, f, row));
      expect(scope.audit.events.map(contract), roles.join()).toEqual(want);
      expect(new Set(want.map((e) => e.action)).size, roles.join()).toBeGreaterThan(1);
    }
  });

  it('hold the facts they share once: events of one field and verdict differ only in patient and record', async () => {
    const scope = await setup(['physician']);
    readAll(scope, [rowOf(1), rowOf(2), rowOf(3)]);
    const mrn = scope.audit.events.filter((e) => e.field === 'mrn');
    expect(mrn.map((e) => e.patientId)).toEqual([rowOf(1).patientId, rowOf(2).patientId, rowOf(3).patientId]);
    for (const e of scope.audit.events) expect(Object.keys(e).length).toBeLessThanOrEqual(3);
    const shared = (e: AuditEvent) => (e as unknown as { kind: object }).kind;
    expect(shared(mrn[1]!)).toBe(shared(mrn[0]!));
    expect(shared(mrn[2]!)).toBe(shared(mrn[0]!));
    expect(shared(scope.audit.events.find((e) => e.field === 'ssn')!)).not.toBe(shared(mrn[0]!));
  });

  it('name each row’s own break-glass grant', async () => {
    const scope = await setup(['physician']);
    const rows = [rowOf(1, { onCareTeam: false, grant: { id: 'a0000000-0000-4000-8000-000000000001', role: 'physician' } }), rowOf(2, { onCareTeam: false, grant: { id: 'a0000000-0000-4000-8000-000000000002', role: 'physician' } })];
    readAll(scope, rows);
    const events = scope.audit.events.filter((e) => e.field === 'mrn');
    expect(events.map((e) => [e.breakGlass, e.grantId])).toEqual([
      [true, 'a0000000-0000-4000-8000-000000000001'],
      [true, 'a0000000-0000-4000-8000-000000000002'],
    ]);
    expect(scope.audit.events.map(contract)).toEqual(rows.flatMap((row) => FIELDS.filter((f) => f.typeName === 'Patient').map((f) => expected(scope, f, row))));
  });

  it('write the same audit statement as the contract’s plain events', async () => {
    const scope = await setup(['nurse']);
    readAll(scope, [rowOf(1), rowOf(2, { encounter: true }), rowOf(3, { onCareTeam: false })]);
    const request = scope.audit.request;
    const batch = '20000000-0000-4000-8000-000000000001';
    expect(auditInsert(batch, [{ request, events: scope.audit.events }])).toEqual(auditInsert(batch, [{ request, events: scope.audit.events.map(contract) }]));
  });
});
