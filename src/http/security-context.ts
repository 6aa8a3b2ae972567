import type { Principal } from '../auth/principal.ts';
import type { SecurityContext } from '../db/transaction.ts';
import { knownRoles } from '../policy/decide.ts';
import type { PolicySet } from '../policy/types.ts';

/**
 * What row security is told: only roles the policy knows AND whose MFA requirement is met, so
 * a token without MFA sees no rows even if a resolver forgot to check.
 */
export function securityContextFor(principal: Principal, policy: PolicySet, requestId: string): SecurityContext {
  const roles = knownRoles(policy, principal).filter((r) => !r.mfaRequired || principal.mfa);
  return {
    actor: principal.subject,
    actorKind: principal.kind,
    roles: roles.map((r) => r.name),
    clinics: principal.clinics,
    requestId,
    purpose: roles[0]?.purpose ?? 'unspecified',
  };
}
