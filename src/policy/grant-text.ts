import type { Principal } from '../auth/principal.ts';
import { purposeFor, roleFor } from './decide.ts';
import type { PolicySet } from './types.ts';

/** The facts of a break-glass grant its texts' rule looks at, all from the grant's row. */
export interface GrantTextFacts {
  /** The clinician who opened it. */
  readonly actor: string;
  /** The grant's clinic: its patient's (schema/migrations/034_break_glass_clinic.sql), never null (069). */
  readonly clinicId: string;
}

/** Whether a grant's reason and review comment are shown, and the role and purpose its audit rows carry. */
export interface GrantTextVerdict {
  readonly allowed: boolean;
  readonly role: string | null;
  readonly purpose: string;
}

/**
 * Who is shown a break-glass grant's reason and review comment (PHI, policies/default.yaml,
 * "breakGlass"): the clinician who opened the grant, acting in a role that may break the glass,
 * and the reviewers (a role with reviewBreakGlass, MFA met) of the grant's clinic. Nobody else,
 * whatever else they may read: the value is then never decrypted. Pure: row security has already
 * chosen the grants the request sees; this decides again on the row's own facts.
 */
export function grantTextVerdict(policy: PolicySet, principal: Principal, grant: GrantTextFacts): GrantTextVerdict {
  if (principal.kind === 'user' && principal.subject === grant.actor) {
    const { role } = roleFor(policy, principal, (r) => r.operations.has('breakGlass'));
    if (role) return { allowed: true, role: role.name, purpose: purposeFor(policy, principal, role.name) };
  }
  if (principal.clinics.includes(grant.clinicId)) {
    const { role } = roleFor(policy, principal, (r) => r.operations.has('reviewBreakGlass'));
    if (role) return { allowed: true, role: role.name, purpose: purposeFor(policy, principal, role.name) };
  }
  return { allowed: false, role: null, purpose: purposeFor(policy, principal, null) };
}
