import { PATIENT_COLUMNS, ENCOUNTER_COLUMNS, type EncounterRow, type PatientRow } from '../db/patients.ts';
import type { RowFacts } from '../policy/decide.ts';
import { readPhi } from '../records/read-phi.ts';
import type { GraphQLContext } from './context.ts';

/** Marks a field as PHI in the schema; start-up checks the marks against src/policy/phi-fields.ts. */
export const PHI_EXTENSION = { phigatePhi: true } as const;

const factsOf = (row: PatientRow | EncounterRow): RowFacts => ({
  clinicId: row.clinic_id,
  onCareTeam: row.on_care_team,
  grant: row.grant_id !== null && row.grant_role !== null ? { id: row.grant_id, role: row.grant_role } : null,
});

export function resolvePatientPhi(ctx: GraphQLContext, row: PatientRow, field: keyof typeof PATIENT_COLUMNS): string | null | Promise<string | null> {
  const column = PATIENT_COLUMNS[field];
  return readPhi(
    ctx,
    { typeName: 'Patient', field, table: 'patients', column, rowId: row.id, patientId: row.id, row: factsOf(row) },
    row[column],
  );
}

export function resolveEncounterPhi(ctx: GraphQLContext, row: EncounterRow, field: keyof typeof ENCOUNTER_COLUMNS): string | null | Promise<string | null> {
  const column = ENCOUNTER_COLUMNS[field];
  return readPhi(
    ctx,
    { typeName: 'Encounter', field, table: 'encounters', column, rowId: row.id, patientId: row.patient_id, row: factsOf(row) },
    row[column],
  );
}
