/**
 * The PHI fields of the GraphQL schema: every one of them is stored encrypted, resolved only
 * after a policy decision, and audited. The GraphQL layer declares its fields from this list and
 * start-up checks that the printed schema and this list agree, so a PHI field cannot be added
 * without a policy rule for every role.
 */
export const PHI_FIELDS = {
  Patient: ['mrn', 'ssn', 'givenName', 'familyName', 'birthDate', 'phone', 'email', 'address'],
  Encounter: ['occurredAt', 'kind', 'reason', 'diagnosisCodes', 'notes'],
} as const;

export type PhiType = keyof typeof PHI_FIELDS;
export type PhiField<T extends PhiType = PhiType> = (typeof PHI_FIELDS)[T][number];
export type PhiFieldCatalog = Readonly<Record<string, readonly string[]>>;
