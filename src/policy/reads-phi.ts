import type { RolePolicy } from './types.ts';

/**
 * Whether a role can learn anything about a patient: seeing that a row exists is already PHI
 * (a name on a clinic's list), so a row scope counts even when every field is denied.
 */
export const readsPhi = (role: RolePolicy): boolean =>
  role.rows !== 'none' || [...role.fields.values()].some((effect) => effect !== 'deny');
