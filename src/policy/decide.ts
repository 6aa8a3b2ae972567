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

/** The role of API keys: held by partner principals alone, whatever a user's token claims. */
export const PARTNER_ROLE = 'partner';

const holds = (principal: Principal, role: string): boolean =>
  principal.kind === 'partner' ? role === PARTNER_ROLE : role !== PARTNER_ROLE && principal.roles.includes(role);

/**
 * The principal's roles that the policy defines, in the policy's order rather than the token's,
 * so that the role named in an audit row does not depend on how the issuer ordered the claim.
 * Roles the policy does not know are ignored: a claim alone never grants anything.
 */
export function knownRoles(policy: PolicySet, principal: Principal): RolePolicy[] {
  return [...policy.roles.values()].filter((role) => holds(principal, role.name));
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
  // Asked once per PHI value, 800 times for a page, with a handful of distinct answers. The
  // answer depends only on these arguments and both policy and principal are immutable, so it
  // is kept for as long as the principal object lives (one request, or a cached token's life).
  const decisions = memoFor(decisionMemo, policy, principal);
  const key = `${row.clinicId}\u0000${row.onCareTeam ? 1 : 0}\u0000${type}.${field}`;
  let decision = decisions.get(key);
  if (decision === undefined) {
    decision = decide(policy, principal, row, `${type}.${field}`);
    decisions.set(key, decision);
  }
  return decision;
}

type Memo<V> = WeakMap<PolicySet, WeakMap<Principal, Map<string, V>>>;
const decisionMemo: Memo<FieldDecision> = new WeakMap();
const purposeMemo: Memo<string> = new WeakMap();

function memoFor<V>(memo: Memo<V>, policy: PolicySet, principal: Principal): Map<string, V> {
  let byPrincipal = memo.get(policy);
  if (byPrincipal === undefined) memo.set(policy, (byPrincipal = new WeakMap()));
  let entries = byPrincipal.get(principal);
  if (entries === undefined) byPrincipal.set(principal, (entries = new Map()));
  return entries;
}

function decide(policy: PolicySet, principal: Principal, row: RowFacts, name: string): FieldDecision {
  let decision = DENIED;
  for (const role of rolesForRow(policy, principal, row)) {
    if (!mfaSatisfied(role, principal)) continue;
    // A field the policy does not name (not PHI, or a typo in the caller) is denied, not allowed;
    // a partner sees the intersection of its role's policy and its key's fields.
    const effect = principal.kind === 'partner' && !principal.fields.has(name) ? 'deny' : (role.fields.get(name) ?? 'deny');
    if (PERMISSIVENESS[effect] > PERMISSIVENESS[decision.effect]) decision = Object.freeze({ effect, role: role.name });
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

/**
 * The purpose of use for the audit row; 'unspecified' when the role is not one the principal holds.
 * A partner's is its key's, whatever the role's default.
 */
export function purposeFor(policy: PolicySet, principal: Principal, role: string | null): string {
  if (principal.kind === 'partner') return principal.purpose;
  if (role === null) return 'unspecified';
  // Asked for every audit row; memoised like decideField.
  const purposes = memoFor(purposeMemo, policy, principal);
  let purpose = purposes.get(role);
  if (purpose === undefined) {
    purpose = knownRoles(policy, principal).find((known) => known.name === role)?.purpose ?? 'unspecified';
    purposes.set(role, purpose);
  }
  return purpose;
}
