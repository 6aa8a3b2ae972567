import type { Principal } from '../auth/principal.ts';
import { usableRoles } from './decide.ts';
import type { PhiLimits, PolicySet } from './types.ts';

/**
 * The PHI limits that apply to a principal: limit by limit, the largest among its roles whose
 * MFA requirement it meets, since those are the roles whose grants it can actually use. null
 * when no such role reads PHI: then nothing can be disclosed to it at all.
 */
export function effectiveLimits(policy: PolicySet, principal: Principal): PhiLimits | null {
  let effective: PhiLimits | null = null;
  for (const role of usableRoles(policy, principal)) {
    if (role.limits === null) continue;
    effective = effective === null ? role.limits : {
      rowsPerRequest: Math.max(effective.rowsPerRequest, role.limits.rowsPerRequest),
      phiValuesPerRequest: Math.max(effective.phiValuesPerRequest, role.limits.phiValuesPerRequest),
      rowsPerMinute: Math.max(effective.rowsPerMinute, role.limits.rowsPerMinute),
      phiValuesPerMinute: Math.max(effective.phiValuesPerMinute, role.limits.phiValuesPerMinute),
    };
  }
  return effective;
}
