import { PhigateError } from '../errors.ts';
import { decideWrite, EMERGENCY_PURPOSE, grantRoleForRow, onlyThroughGrant, purposeFor, writeRolesForRow, type RowFacts } from '../policy/decide.ts';
import type { RolePolicy } from '../policy/types.ts';
import type { RequestScope } from './scope.ts';
import { recordAfterRollback } from './write-helpers.ts';

export interface WriteGrant {
  readonly field: string;
  readonly role: string;
  readonly purpose: string;
}

/** The write's patient and its row facts (with the live grant, when row security shows one). */
export interface WriteTarget {
  /** null for a patient not created yet, which no grant can cover. */
  readonly patientId: string | null;
  readonly row: RowFacts;
}

/**
 * The first role in which the principal may do `operation` on the target. None: FORBIDDEN; and when
 * the principal sees the patient only through a break-glass grant, which gives read access only,
 * the attempt is a break-glass event under that grant, recorded outside the request's transaction
 * (which then rolls back whole) before the refusal is thrown.
 */
export async function writeRole(scope: RequestScope, target: WriteTarget, operation: string): Promise<RolePolicy> {
  const { policy, principal } = scope;
  const [role] = writeRolesForRow(policy, principal, target.row, operation);
  if (role !== undefined) return role;
  if (!onlyThroughGrant(policy, principal, target.row)) throw new PhigateError('FORBIDDEN', 'You may not make this change.');
  await recordAfterRollback(scope, [
    {
      action: 'refused',
      typeName: 'Mutation',
      field: operation,
      patientId: target.patientId,
      recordId: null,
      role: grantRoleForRow(policy, principal, target.row)!.name,
      purpose: EMERGENCY_PURPOSE,
      breakGlass: true,
      detail: 'break_glass_read_only',
      grantId: target.row.grant!.id,
    },
  ]);
  throw new PhigateError('FORBIDDEN', 'Emergency access is read-only: changing this patient needs your usual access to them.', { reason: 'break_glass_read_only' });
}

/**
 * A principal may write a PHI field only in a role that may do the operation on this row and
 * reads that field in full there: nobody writes what they could not see, a masked field cannot be
 * overwritten blind, and no role lends its fields to another role's operation.
 */
export async function mayWrite(scope: RequestScope, target: WriteTarget, operation: string, typeName: string, fields: readonly string[]): Promise<WriteGrant[]> {
  await writeRole(scope, target, operation);
  return fields.map((field) => {
    const d = decideWrite(scope.policy, scope.principal, target.row, operation, `${typeName}.${field}`);
    if (d.effect !== 'allow' || d.role === null) throw new PhigateError('FORBIDDEN', `You may not write ${typeName}.${field}.`);
    return { field, role: d.role, purpose: purposeFor(scope.policy, scope.principal, d.role) };
  });
}
