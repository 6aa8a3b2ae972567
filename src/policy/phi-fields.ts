/**
 * The PHI fields, declared once. Every other list is derived from this one: the policy
 * catalogue (PHI_FIELDS, checked against every role of the policy file), the GraphQL fields
 * marked PHI (start-up checks the built schema against PHI_FIELDS), the patient mutation inputs,
 * the SQL columns read and written (src/db/patients.ts), the patient values a write validates
 * (src/records/patient-values.ts), the log redaction list (src/log.ts), and the columns the seed
 * writes (src/seed/write.ts `SEED_PHI`, which the bench's seeding and plaintext copy use too).
 * test/unit/phi-catalogue.test.ts and test/integration/phi-catalogue.test.ts fail when a copy drifts,
 * and when src/ or bench/ spells the list out again (quoted on one line, as an array literal over
 * several lines, or as an SQL column list outside src/db/patients.ts).
 *
 * Each entry: the GraphQL type and field (the policy's `Type.field`), the table and column that
 * hold it, whether the column holds ciphertext (bound by AAD to table, column, row and key
 * version) or plaintext under row security alone, and the name mutation inputs take it by (null:
 * no mutation writes it). Every PHI field name and column name is redacted in logs.
 */
export const PHI_CATALOGUE = [
  { type: 'Patient', field: 'mrn', table: 'patients', column: 'mrn', encrypted: true, input: 'mrn' },
  { type: 'Patient', field: 'ssn', table: 'patients', column: 'ssn', encrypted: true, input: 'ssn' },
  { type: 'Patient', field: 'givenName', table: 'patients', column: 'given_name', encrypted: true, input: 'givenName' },
  { type: 'Patient', field: 'familyName', table: 'patients', column: 'family_name', encrypted: true, input: 'familyName' },
  { type: 'Patient', field: 'birthDate', table: 'patients', column: 'birth_date', encrypted: true, input: 'birthDate' },
  { type: 'Patient', field: 'phone', table: 'patients', column: 'phone', encrypted: true, input: 'phone' },
  { type: 'Patient', field: 'email', table: 'patients', column: 'email', encrypted: true, input: 'email' },
  { type: 'Patient', field: 'address', table: 'patients', column: 'address', encrypted: true, input: 'address' },
  // Plaintext so the database can order a patient's encounters by time (README, "Visit dates").
  { type: 'Encounter', field: 'occurredAt', table: 'encounters', column: 'occurred_at', encrypted: false, input: 'occurredAt' },
  { type: 'Encounter', field: 'kind', table: 'encounters', column: 'kind', encrypted: true, input: 'kind' },
  { type: 'Encounter', field: 'reason', table: 'encounters', column: 'reason', encrypted: true, input: 'reason' },
  { type: 'Encounter', field: 'diagnosisCodes', table: 'encounters', column: 'diagnosis_codes', encrypted: true, input: 'diagnosisCodes' },
  { type: 'Encounter', field: 'notes', table: 'encounters', column: 'notes', encrypted: true, input: 'notes' },
] as const satisfies readonly PhiFieldSpec[];

export interface PhiFieldSpec {
  readonly type: string;
  readonly field: string;
  readonly table: string;
  readonly column: string;
  readonly encrypted: boolean;
  readonly input: string | null;
}

type Spec = (typeof PHI_CATALOGUE)[number];
export type PhiType = Spec['type'];
export type PhiField<T extends PhiType = PhiType> = Extract<Spec, { type: T }>['field'];
/** field -> column of the encrypted PHI fields of one type. */
export type EncryptedColumns<T extends PhiType> = { readonly [S in Extract<Spec, { type: T; encrypted: true }> as S['field']]: S['column'] };
export type PhiFieldCatalog = Readonly<Record<string, readonly string[]>>;

const ofType = <T extends PhiType>(type: T): Extract<Spec, { type: T }>[] =>
  PHI_CATALOGUE.filter((spec): spec is Extract<Spec, { type: T }> => spec.type === type);

const fieldsOf = <T extends PhiType>(type: T): readonly PhiField<T>[] => Object.freeze(ofType(type).map((spec) => spec.field as PhiField<T>));

/**
 * The policy's catalogue: PHI field names by GraphQL type. The policy loader demands an effect for
 * each of them from every role, so a PHI field cannot be added without a rule for every role.
 */
export const PHI_FIELDS = Object.freeze({ Patient: fieldsOf('Patient'), Encounter: fieldsOf('Encounter') });

/** The column of each encrypted field of `type`: the only column names SQL builds from (src/db/patients.ts). */
export function encryptedColumns<T extends PhiType>(type: T): EncryptedColumns<T> {
  return Object.freeze(Object.fromEntries(ofType(type).filter((s) => s.encrypted).map((s) => [s.field, s.column]))) as EncryptedColumns<T>;
}

/** The names mutation inputs take the PHI fields of `type` by. */
export const inputsOf = (type: PhiType): readonly string[] => ofType(type).flatMap((spec) => (spec.input === null ? [] : [spec.input]));

/** Every name a PHI value could appear under in a log object: field names, input names and column names. */
export const PHI_LOG_KEYS: readonly string[] = Object.freeze([
  ...new Set(PHI_CATALOGUE.flatMap((spec) => [spec.field, spec.column, ...(spec.input === null ? [] : [spec.input])])),
]);
