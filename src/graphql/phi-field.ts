import { PATIENT_COLUMNS, ENCOUNTER_COLUMNS, type EncounterRow, type PatientRow } from '../db/patients.ts';
import { readPhi, readPlainPhi, type PhiRef } from '../records/read-phi.ts';
import type { GraphQLContext } from './context.ts';

/** Marks a field as PHI in the schema; start-up checks the marks against src/policy/phi-fields.ts. */
export const PHI_EXTENSION = { phigatePhi: true } as const;

export function resolvePatientPhi(ctx: GraphQLContext, row: PatientRow, field: keyof typeof PATIENT_COLUMNS): string | null | Promise<string | null> {
  const column = PATIENT_COLUMNS[field];
  return readPhi(
    ctx,
    { typeName: 'Patient', field, table: 'patients', column, rowId: row.id, patientId: row.id, row: { clinicId: row.clinic_id, onCareTeam: row.on_care_team } },
    row[column],
  );
}

const encounterRef = (row: EncounterRow, field: string, column: string): PhiRef => ({
  typeName: 'Encounter',
  field,
  table: 'encounters',
  column,
  rowId: row.id,
  patientId: row.patient_id,
  row: { clinicId: row.clinic_id, onCareTeam: row.on_care_team },
});

export function resolveEncounterPhi(ctx: GraphQLContext, row: EncounterRow, field: keyof typeof ENCOUNTER_COLUMNS): string | null | Promise<string | null> {
  const column = ENCOUNTER_COLUMNS[field];
  return readPhi(ctx, encounterRef(row, field, column), row[column]);
}

/** Ciphertext, or for an encounter written before kinds were encrypted, its plaintext column. */
export function resolveEncounterKind(ctx: GraphQLContext, row: EncounterRow): string | null | Promise<string | null> {
  return row.kind === null ? readPlainPhi(ctx, encounterRef(row, 'kind', 'kind_legacy'), row.kind_legacy) : resolveEncounterPhi(ctx, row, 'kind');
}

export function resolveEncounterDate(ctx: GraphQLContext, row: EncounterRow): string | null {
  return readPlainPhi(ctx, encounterRef(row, 'occurredAt', 'occurred_at'), row.occurred_at.toISOString());
}
