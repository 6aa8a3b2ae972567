import { PATIENT_COLUMNS, ENCOUNTER_COLUMNS, ENCOUNTER_PHI_COLUMNS, ERASED_TIME, type EncounterPhiColumn, type EncounterRow, type PatientRow } from '../db/patients.ts';
import { isoOfTimestamptz } from '../db/type-parsers.ts';
import { mayEverSee } from '../policy/decide.ts';
import { PHI_CATALOGUE } from '../policy/phi-fields.ts';
import { ERASED, readPhi, readPlainPhi, type PhiField } from '../records/read-phi.ts';
import type { GraphQLContext } from './context.ts';

/** Marks a field as PHI in the schema; start-up checks the marks against src/policy/phi-fields.ts. */
export const PHI_EXTENSION = { phigatePhi: true } as const;

// Each PHI field described once, rather than a reference made per value.
const fieldsOf = <F extends string>(typeName: PhiField['typeName'], table: PhiField['table'], columns: Record<F, string>) =>
  Object.fromEntries(
    Object.entries<string>(columns).map(([field, column]) => [field, { typeName, field, name: `${typeName}.${field}`, table, column }]),
  ) as Record<F, PhiField>;
const PATIENT_FIELDS = fieldsOf('Patient', 'patients', PATIENT_COLUMNS);
const ENCOUNTER_FIELDS = fieldsOf('Encounter', 'encounters', ENCOUNTER_COLUMNS);
// The plaintext columns read as PHI: an encounter's date, and its kind from before kinds were encrypted.
const ENCOUNTER_DATE: PhiField = { typeName: 'Encounter', field: 'occurredAt', name: 'Encounter.occurredAt', table: 'encounters', column: 'occurred_at' };
const LEGACY_KIND: PhiField = { typeName: 'Encounter', field: 'kind', name: 'Encounter.kind', table: 'encounters', column: 'kind_legacy' };

export function resolvePatientPhi(ctx: GraphQLContext, row: PatientRow, field: keyof typeof PATIENT_COLUMNS): string | null | Promise<string | null> {
  const phi = PATIENT_FIELDS[field];
  return readPhi(ctx, phi, row.facts, row[phi.column as keyof PatientRow] as Buffer | null | undefined);
}

export function resolveEncounterPhi(ctx: GraphQLContext, row: EncounterRow, field: keyof typeof ENCOUNTER_COLUMNS): string | null | Promise<string | null> {
  const phi = ENCOUNTER_FIELDS[field];
  return readPhi(ctx, phi, row.facts, row[phi.column as keyof EncounterRow] as Buffer | null | undefined);
}

// The policy's name of the field each encounter PHI column holds.
const ENCOUNTER_FIELD_OF = Object.fromEntries(
  PHI_CATALOGUE.filter((spec) => spec.type === 'Encounter').map((spec) => [spec.column, `Encounter.${spec.field}`]),
) as Record<EncounterPhiColumn, string>;

// Asked once per patient of a page: worked out once per request (the principal and policy are the request's).
const columnsOfRequest = new WeakMap<GraphQLContext, readonly EncounterPhiColumn[]>();

/**
 * The encounter PHI columns worth fetching for this request: those of fields its principal can
 * be shown in some row. The others would be denied before decryption whatever the row.
 */
export function encounterColumnsFor(ctx: GraphQLContext): readonly EncounterPhiColumn[] {
  let columns = columnsOfRequest.get(ctx);
  if (columns === undefined) {
    columns = ENCOUNTER_PHI_COLUMNS.filter((column) => mayEverSee(ctx.policy, ctx.principal, ENCOUNTER_FIELD_OF[column]));
    columnsOfRequest.set(ctx, columns);
  }
  return columns;
}

/** Ciphertext, or for an encounter written before kinds were encrypted, its plaintext column. */
export function resolveEncounterKind(ctx: GraphQLContext, row: EncounterRow): string | null | Promise<string | null> {
  return row.kind === null ? readPlainPhi(ctx, LEGACY_KIND, row.facts, row.kind_legacy) : resolveEncounterPhi(ctx, row, 'kind');
}

/** The date in the clear, or for a shredded patient's encounter, KEY_UNAVAILABLE `shredded` as its sealed fields. */
export function resolveEncounterDate(ctx: GraphQLContext, row: EncounterRow): string | null {
  return readPlainPhi(ctx, ENCOUNTER_DATE, row.facts, row.occurred_at === ERASED_TIME ? ERASED : isoOfTimestamptz(row.occurred_at));
}
