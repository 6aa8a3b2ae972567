import type { Principal } from '../auth/principal.ts';
import type { SecurityContext } from '../db/transaction.ts';
import { usableRoles } from '../policy/decide.ts';
import type { PolicySet } from '../policy/types.ts';

/**
 * What row security is told: only roles the policy knows AND whose MFA requirement is met, so
 * a token without MFA sees no rows even if a resolver forgot to check. A partner's actor is its
 * key id, which row security checks is live (schema/migrations/011_api_keys.sql); the audit
 * rows name the partner.
 */
export function securityContextFor(principal: Principal, policy: PolicySet, requestId: string): SecurityContext {
  const roles = usableRoles(policy, principal);
  return {
    actor: principal.kind === 'partner' ? principal.keyId : principal.subject,
    actorKind: principal.kind,
    roles: roles.map((r) => r.name),
    clinics: principal.clinics,
    requestId,
    purpose: principal.kind === 'partner' ? principal.purpose : (roles[0]?.purpose ?? 'unspecified'),
  };
}
