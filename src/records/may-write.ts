import { PhigateError } from '../errors.ts';
import { decideField, purposeFor, type RowFacts } from '../policy/decide.ts';
import type { RequestScope } from './scope.ts';

export interface WriteGrant {
  readonly field: string;
  readonly role: string;
  readonly purpose: string;
}

/**
 * A principal may write a PHI field only where the policy lets it read that field in full on
 * this row: nobody writes what they could not see, and a masked field cannot be overwritten blind.
 */
export function mayWrite(scope: RequestScope, row: RowFacts, typeName: string, fields: readonly string[]): WriteGrant[] {
  return fields.map((field) => {
    const d = decideField(scope.policy, scope.principal, row, typeName, field);
    if (d.effect !== 'allow' || d.role === null) {
      throw new PhigateError('FORBIDDEN', `You may not write ${typeName}.${field}.`);
    }
    return { field, role: d.role, purpose: purposeFor(scope.policy, scope.principal, d.role) };
  });
}
