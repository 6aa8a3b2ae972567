import { describe, expect, it } from 'vitest';
import { encountersByPatientIds } from '../../../src/db/patients.ts';
import type { RequestTransaction } from '../../../src/db/transaction.ts';
import { PhigateError } from '../../../src/errors.ts';
import { readPhi, type PhiField } from '../../../src/records/read-phi.ts';
import { CLINIC } from '../policy/fixtures.ts';
import { readScope } from './read-scope.ts';

// What the encounters statement asks PostgreSQL for: captured, no database needed.
async function encounterSql(columns?: Parameters<typeof encountersByPatientIds>[3]): Promise<string> {
  let text = '';
  const tx = { query: async (sql: string) => ((text = sql), { rows: [] }) } as unknown as RequestTransaction;
  await encountersByPatientIds(tx, ['00000000-0000-4000-8000-000000000001'], { first: 10, after: null, byDate: true }, columns);
  return text;
}

describe('encountersByPatientIds', () => {
  it('selects every PHI column unless told otherwise', async () => {
    const sql = await encounterSql();
    for (const column of ['e.kind', 'e.kind_legacy', 'e.reason', 'e.diagnosis_codes', 'e.notes']) expect(sql).toContain(column);
  });

  it('leaves out the PHI columns it is not given, whatever their order', async () => {
    const sql = await encounterSql(['notes', 'kind']);
    expect(sql).toContain('e.kind_legacy,');
    expect(sql).toContain("encode(array_send(ARRAY[e.kind, e.notes]), 'base64') AS phi");
    expect(sql).not.toContain('e.reason');
    expect(sql).not.toContain('e.diagnosis_codes');
    expect(await encounterSql(['kind', 'notes'])).toBe(sql);
    expect(await encounterSql([])).not.toMatch(/e\.(kind|reason|diagnosis_codes|notes)\b|array_send|encode/);
  });
});

describe('readPhi of a column the read left out', () => {
  const setup = (roles: readonly string[]) => readScope(roles, 100);
  const notes: PhiField = { typeName: 'Encounter', field: 'notes', name: 'Encounter.notes', table: 'encounters', column: 'notes' };
  const row = { clinicId: CLINIC, onCareTeam: true, grant: null, rowId: 'encounter-1', patientId: 'patient-1', key: { joined: null, held: null } };

  it('is refused as denied, and audited so, when the policy denies the field', async () => {
    const scope = await setup(['registrar']);
    expect(() => readPhi(scope, notes, row, undefined)).toThrow(expect.objectContaining({ code: 'FIELD_DENIED' }));
    expect(scope.audit.events.map((e) => e.action)).toEqual(['denied']);
  });

  it('fails, never passing for an empty value, when the policy would show it', async () => {
    const scope = await setup(['physician']);
    let error: unknown;
    try {
      readPhi(scope, notes, row, undefined);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(PhigateError);
    expect(error).toMatchObject({ code: 'INTERNAL', reason: 'column_not_fetched' });
    // Nothing shown; the failure is on the record as a refusal of that field.
    expect(scope.audit.events.map((e) => [e.action, e.field, e.detail])).toEqual([['refused', 'notes', 'internal:column_not_fetched']]);
    expect(scope.cipher.stats.decrypts).toBe(0);
    // An empty column that was fetched is shown as empty, as before.
    expect(readPhi(scope, notes, row, null)).toBeNull();
    expect(scope.audit.events.map((e) => e.action)).toEqual(['refused', 'read']);
  });
});
