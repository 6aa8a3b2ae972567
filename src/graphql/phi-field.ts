import { PATIENT_COLUMNS, ENCOUNTER_COLUMNS, ENCOUNTER_PHI_COLUMNS, type EncounterPhiColumn, type EncounterRow, type PatientRow } from '../db/patients.ts';
import { mayEverSee, type RowFacts } from '../policy/decide.ts';
import { PHI_CATALOGUE } from '../policy/phi-fields.ts';
import { readPhi, readPlainPhi, type PhiRef } from '../records/read-phi.ts';
import type { GraphQLContext } from './context.ts';

/** Marks a field as PHI in the schema; start-up checks the marks against src/policy/phi-fields.ts. */
export const PHI_EXTENSION = { phigatePhi: true } as const;

// The policy's name of each field ('Type.field'), made once rather than once per value.
const namesOf = <F extends string>(typeName: string, columns: Record<F, string>) =>
  Object.fromEntries(Object.keys(columns).map((field) => [field, `${typeName}.${field}`])) as Record<F, string>;
const PATIENT_NAMES = namesOf('Patient', PATIENT_COLUMNS);
const ENCOUNTER_NAMES = namesOf('Encounter', ENCOUNTER_COLUMNS);

// A row's facts, made once per row rather than once per value: a page asks for them 8 times per
// patient, and each copy was two objects more for the collector.
const rowFacts = new WeakMap<PatientRow | EncounterRow, RowFacts>();
function factsOf(row: PatientRow | EncounterRow): RowFacts {
  let facts = rowFacts.get(row);
  if (facts === undefined) {
    facts = {
      clinicId: row.clinic_id,
      onCareTeam: row.on_care_team,
      grant: row.grant_id !== null && row.grant_role !== null ? { id: row.grant_id, role: row.grant_role } : null,
    };
    rowFacts.set(row, facts);
  }
  return facts;
}

export function resolvePatientPhi(ctx: GraphQLContext, row: PatientRow, field: keyof typeof PATIENT_COLUMNS): string | null | Promise<string | null> {
  const column = PATIENT_COLUMNS[field];
  return readPhi(
    ctx,
    { typeName: 'Patient', field, name: PATIENT_NAMES[field], table: 'patients', column, rowId: row.id, patientId: row.id, row: factsOf(row) },
    row[column],
  );
}

const encounterRef = (row: EncounterRow, field: string, name: string, column: string): PhiRef => ({
  typeName: 'Encounter',
  field,
  name,
  table: 'encounters',
  column,
  rowId: row.id,
  patientId: row.patient_id,
  row: factsOf(row),
});

export function resolveEncounterPhi(ctx: GraphQLContext, row: EncounterRow, field: keyof typeof ENCOUNTER_COLUMNS): string | null | Promise<string | null> {
  const column = ENCOUNTER_COLUMNS[field];
  return readPhi(ctx, encounterRef(row, field, ENCOUNTER_NAMES[field], column), row[column]);
}

// The policy's name of the field each encounter PHI column holds.
const ENCOUNTER_FIELD_OF = Object.fromEntries(
  PHI_CATALOGUE.filter((spec) => spec.type === 'Encounter').map((spec) => [spec.column, `Encounter.${spec.field}`]),
) as Record<EncounterPhiColumn, string>;

/**
 * The encounter PHI columns worth fetching for this request: those of fields its principal can
 * be shown in some row. The others would be denied before decryption whatever the row.
 */
export function encounterColumnsFor(ctx: GraphQLContext): EncounterPhiColumn[] {
  return ENCOUNTER_PHI_COLUMNS.filter((column) => mayEverSee(ctx.policy, ctx.principal, ENCOUNTER_FIELD_OF[column]));
}

/** Ciphertext, or for an encounter written before kinds were encrypted, its plaintext column. */
export function resolveEncounterKind(ctx: GraphQLContext, row: EncounterRow): string | null | Promise<string | null> {
  return row.kind === null ? readPlainPhi(ctx, encounterRef(row, 'kind', 'Encounter.kind', 'kind_legacy'), row.kind_legacy) : resolveEncounterPhi(ctx, row, 'kind');
}

export function resolveEncounterDate(ctx: GraphQLContext, row: EncounterRow): string | null {
  return readPlainPhi(ctx, encounterRef(row, 'occurredAt', 'Encounter.occurredAt', 'occurred_at'), row.occurred_at.toISOString());
}
