import type { Principal } from '../auth/principal.ts';
import { readsPhi } from './reads-phi.ts';
import type { Effect, PolicySet, RolePolicy } from './types.ts';

/** What the database says about the row being resolved; both come from the row, not the request. */
export interface RowFacts {
  readonly clinicId: string;
  readonly onCareTeam: boolean;
}

export interface FieldDecision {
  readonly effect: Effect;
  /** The role that granted the effect, for the audit row; null when every role denied. */
  readonly role: string | null;
}

const PERMISSIVENESS: Readonly<Record<Effect, number>> = { deny: 0, mask: 1, allow: 2 };
const DENIED: FieldDecision = Object.freeze({ effect: 'deny', role: null });

const mfaSatisfied = (role: RolePolicy, principal: Principal): boolean => !role.mfaRequired || principal.mfa;

/**
 * The principal's roles that the policy defines, in the policy's order rather than the token's,
 * so that the role named in an audit row does not depend on how the issuer ordered the claim.
 * Roles the policy does not know are ignored: a claim alone never grants anything.
 */
export function knownRoles(policy: PolicySet, principal: Principal): RolePolicy[] {
  return [...policy.roles.values()].filter((role) => principal.roles.includes(role.name));
}

/**
 * The roles whose rules apply to this row. Roles are not pooled across rows: a registrar who is
 * also a physician sees a patient outside their care team only as a registrar.
 */
export function rolesForRow(policy: PolicySet, principal: Principal, row: RowFacts): RolePolicy[] {
  if (!principal.clinics.includes(row.clinicId)) return [];
  return knownRoles(policy, principal).filter(
    (role) => role.rows === 'clinic' || (role.rows === 'care_team' && row.onCareTeam),
  );
}

/** The most permissive effect among the roles that cover the row and whose MFA demand is met. */
export function decideField(
  policy: PolicySet,
  principal: Principal,
  row: RowFacts,
  type: string,
  field: string,
): FieldDecision {
  let decision = DENIED;
  for (const role of rolesForRow(policy, principal, row)) {
    if (!mfaSatisfied(role, principal)) continue;
    // A field the policy does not name (not PHI, or a typo in the caller) is denied, not allowed.
    const effect = role.fields.get(`${type}.${field}`) ?? 'deny';
    if (PERMISSIVENESS[effect] > PERMISSIVENESS[decision.effect]) decision = { effect, role: role.name };
  }
  return decision;
}

export function canPerform(policy: PolicySet, principal: Principal, operation: string): boolean {
  return knownRoles(policy, principal).some(
    (role) => role.operations.has(operation) && mfaSatisfied(role, principal),
  );
}

/**
 * Whether a refusal should say MFA_REQUIRED rather than FORBIDDEN: signing in again with MFA
 * would unlock at least one role, and no role that reads PHI works without it. Telling a
 * principal that MFA would help when it would not only sends them round in circles.
 */
export function mfaBlocks(policy: PolicySet, principal: Principal): boolean {
  if (principal.mfa) return false;
  const roles = knownRoles(policy, principal);
  return roles.some((role) => role.mfaRequired) && roles.filter(readsPhi).every((role) => role.mfaRequired);
}

/** The purpose of use for the audit row; 'unspecified' when the role is not one the principal holds. */
export function purposeFor(policy: PolicySet, principal: Principal, role: string | null): string {
  const held = role === null ? undefined : knownRoles(policy, principal).find((known) => known.name === role);
  return held?.purpose ?? 'unspecified';
}
