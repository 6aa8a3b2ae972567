/**
 * The mutations a policy may grant. A name outside this list is refused by the loader, so a
 * misspelt operation cannot pass unnoticed as a grant that never applies.
 */
export const OPERATIONS = [
  'createPatient',
  'updatePatient',
  'addEncounter',
  'setCareTeam',
  'breakGlass',
  'reviewBreakGlass',
  'createApiKey',
  'rotateApiKey',
  'revokeApiKey',
] as const;
