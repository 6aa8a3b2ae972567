import type { Principal } from '../auth/principal.ts';
import { readsPhi } from './reads-phi.ts';
import type { Effect, PolicySet, RolePolicy } from './types.ts';

/** A live break-glass grant of the principal on the row's patient, as row security found it. */
export interface RowGrant {
  readonly id: string;
  /** The role the grant was opened in. */
  readonly role: string;
}

/** What the database says about the row being resolved; all of it comes from the row, not the request. */
export interface RowFacts {
  readonly clinicId: string;
  readonly onCareTeam: boolean;
  readonly grant?: RowGrant | null;
}

export interface FieldDecision {
  readonly effect: Effect;
  /** The role that granted the effect, for the audit row; null when every role denied. */
  readonly role: string | null;
  /** The effect is owed to a break-glass grant: no role of the principal's usual scope gave as much. */
  readonly viaGrant: boolean;
}

/** The purpose of use of whatever is shown through a break-glass grant (HL7 PurposeOfUse ETREAT). */
export const EMERGENCY_PURPOSE = 'emergency_treatment';

const PERMISSIVENESS: Readonly<Record<Effect, number>> = { deny: 0, mask: 1, allow: 2 };
const DENIED: FieldDecision = Object.freeze({ effect: 'deny', role: null, viaGrant: false });

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

/** Whether the principal's sign-in meets the role's MFA requirement: the one place this is spelt. */
export const mfaMet = (role: RolePolicy, principal: Principal): boolean => !role.mfaRequired || principal.mfa;

/**
 * The roles the principal can act in now: known to the policy and their MFA requirement met. A
 * role whose MFA is not met grants nothing, neither rows nor fields nor operations nor limits.
 */
export function usableRoles(policy: PolicySet, principal: Principal): readonly RolePolicy[] {
  // A principal is frozen, its claims with it, and a token's is the same object on every request
  // it makes while the verified-token cache holds it: its usable roles are worked out once per
  // policy, not three or four times per request. An unfrozen principal (none is made so today)
  // is worked out every time.
  if (!Object.isFrozen(principal) || !Object.isFrozen(principal.roles)) return knownRoles(policy, principal).filter((role) => mfaMet(role, principal));
  let byPrincipal = usableByPolicy.get(policy);
  if (byPrincipal === undefined) usableByPolicy.set(policy, (byPrincipal = new WeakMap()));
  let roles = byPrincipal.get(principal);
  if (roles === undefined) byPrincipal.set(principal, (roles = Object.freeze(knownRoles(policy, principal).filter((role) => mfaMet(role, principal)))));
  return roles;
}
const usableByPolicy = new WeakMap<PolicySet, WeakMap<Principal, readonly RolePolicy[]>>();

/**
 * The first role matching `wanted` that the principal can act in, and every matching role it
 * holds: some held but none usable means signing in with MFA would help (MFA_REQUIRED), none held
 * means it would not (FORBIDDEN).
 */
export function roleFor(
  policy: PolicySet,
  principal: Principal,
  wanted: (role: RolePolicy) => boolean,
): { role: RolePolicy | null; held: RolePolicy[] } {
  const held = knownRoles(policy, principal).filter(wanted);
  return { role: held.find((role) => mfaMet(role, principal)) ?? null, held };
}

/**
 * The roles whose rules apply to this row by the principal's usual scope. Roles are not pooled
 * across rows: a registrar who is also a physician sees a patient outside their care team only as
 * a registrar.
 */
export function rolesForRow(policy: PolicySet, principal: Principal, row: RowFacts): RolePolicy[] {
  if (!principal.clinics.includes(row.clinicId)) return [];
  return knownRoles(policy, principal).filter(
    (role) => role.rows === 'clinic' || (role.rows === 'care_team' && row.onCareTeam),
  );
}

/**
 * The role a live break-glass grant adds for this row, when it adds one: the role the grant was
 * opened in, while the principal holds it and the policy still lets it break the glass.
 */
export function grantRoleForRow(policy: PolicySet, principal: Principal, row: RowFacts): RolePolicy | null {
  if (!row.grant) return null;
  const role = knownRoles(policy, principal).find((r) => r.name === row.grant!.role);
  if (!role || !role.operations.has('breakGlass')) return null;
  return rolesForRow(policy, principal, row).includes(role) ? null : role;
}

/**
 * The roles in which the principal may do `operation` (a write) on this row: those whose usual
 * scope covers the row, whose MFA is met and to which the policy gives the operation, as row
 * security requires of the same write (schema/migrations/020_row_scopes.sql). A break-glass grant
 * is never one of them: it gives read access only.
 */
export function writeRolesForRow(policy: PolicySet, principal: Principal, row: RowFacts, operation: string): RolePolicy[] {
  return rolesForRow(policy, principal, row).filter((role) => mfaMet(role, principal) && role.operations.has(operation));
}

/** Every event about this row is a break-glass one: the principal sees the row only through a grant. */
export function onlyThroughGrant(policy: PolicySet, principal: Principal, row: RowFacts): boolean {
  return grantRoleForRow(policy, principal, row) !== null && rolesForRow(policy, principal, row).length === 0;
}

/**
 * A field's decision for rows like `row`, with what its audit rows record: the role the read is
 * attributed to (the granting role, or for a refusal the capacity the attempt was made in, so an
 * auditor can tell a nurse reaching for notes from a stranger doing so) and that role's purpose.
 */
export interface FieldVerdict extends FieldDecision {
  readonly recordedRole: string | null;
  readonly purpose: string;
  /** Its audit rows are break-glass ones: the grant showed it, or only the grant shows the row. */
  readonly breakGlass: boolean;
}

/**
 * The verdict on `name` ('Type.field') for rows of `row`'s clinic and care-team standing. Asked
 * once per PHI value, 800 times for a page, with a handful of distinct answers: it depends only
 * on these arguments and both policy and principal are immutable, so it is worked out once per
 * (clinic, care team, field), and for rows under a break-glass grant per grant role as well, and
 * kept for as long as the principal object lives (one request, or a cached token's life). Whether
 * a row has a live grant is the row's fact, read with it each time; only the verdict is kept.
 * Looked up without building a key per value.
 */
export function fieldVerdict(policy: PolicySet, principal: Principal, row: RowFacts, name: string): FieldVerdict {
  const grantRole = row.grant ? row.grant.role : null;
  let verdicts: Map<string, FieldVerdict>;
  if (policy === last.policy && principal === last.principal && row.clinicId === last.clinicId && row.onCareTeam === last.onCareTeam && grantRole === last.grantRole) {
    verdicts = last.verdicts;
  } else {
    const byClinic = grantRole !== null ? grantVerdicts(policy, principal, grantRole) : memoFor(verdictMemo, policy, principal);
    let byStanding = byClinic.get(row.clinicId);
    if (byStanding === undefined) byClinic.set(row.clinicId, (byStanding = [new Map(), new Map()]));
    verdicts = byStanding[row.onCareTeam ? 1 : 0]!;
    last = { policy, principal, clinicId: row.clinicId, onCareTeam: row.onCareTeam, grantRole, verdicts };
  }
  let verdict = verdicts.get(name);
  if (verdict === undefined) {
    verdict = verdictOf(policy, principal, row, name);
    verdicts.set(name, verdict);
  }
  return verdict;
}

/**
 * The verdicts the previous call used: a page's values come row after row of the same clinic,
 * standing and grant role, so nearly every value finds its map here with five comparisons instead
 * of four map lookups (two of them WeakMaps). It holds the last principal and policy strongly,
 * one of each, until a value of another request replaces them.
 */
let last: {
  readonly policy: PolicySet | null;
  readonly principal: Principal | null;
  readonly clinicId: string;
  readonly onCareTeam: boolean;
  readonly grantRole: string | null;
  readonly verdicts: Map<string, FieldVerdict>;
} = { policy: null, principal: null, clinicId: '', onCareTeam: false, grantRole: null, verdicts: new Map() };

function verdictOf(policy: PolicySet, principal: Principal, row: RowFacts, name: string): FieldVerdict {
  const decision = decide(policy, principal, row, name);
  const recordedRole =
    decision.role ?? rolesForRow(policy, principal, row)[0]?.name ?? grantRoleForRow(policy, principal, row)?.name ?? null;
  const breakGlass = decision.viaGrant || onlyThroughGrant(policy, principal, row);
  const purpose = breakGlass ? EMERGENCY_PURPOSE : purposeFor(policy, principal, recordedRole);
  return Object.freeze({ ...decision, recordedRole, purpose, breakGlass });
}

/**
 * Whether `name` ('Type.field') can be shown to the principal in any row: some role it can act in
 * allows or masks the field, and for a partner its key names it. decide() weighs only such roles
 * (a break-glass grant's role among them), so when none does, every value of the field is denied
 * whatever the row, and a reader need not even fetch its ciphertext.
 */
export function mayEverSee(policy: PolicySet, principal: Principal, name: string): boolean {
  const seen = memoFor(seenMemo, policy, principal);
  let may = seen.get(name);
  if (may === undefined) {
    may = usableRoles(policy, principal).some((role) => effectOf(role, principal, name) !== 'deny');
    seen.set(name, may);
  }
  return may;
}

/**
 * Whether `name` ('Type.field') is shown to the principal in every row it can see: each role it can
 * act in allows or masks the field (and for a partner its key names it). A reader that orders or
 * picks rows by a field's value does so only then: where some row's verdict denies the field, the
 * order alone would tell that row's values.
 */
export function mayAlwaysSee(policy: PolicySet, principal: Principal, name: string): boolean {
  const seen = memoFor(alwaysMemo, policy, principal);
  let may = seen.get(name);
  if (may === undefined) {
    const roles = usableRoles(policy, principal);
    may = roles.length > 0 && roles.every((role) => effectOf(role, principal, name) !== 'deny');
    seen.set(name, may);
  }
  return may;
}

type Memo<V> = WeakMap<PolicySet, WeakMap<Principal, Map<string, V>>>;
type ByStanding = [Map<string, FieldVerdict>, Map<string, FieldVerdict>];
/** clinic -> [off the care team, on it] -> 'Type.field' -> verdict */
const verdictMemo: Memo<ByStanding> = new WeakMap();
/** The same for rows under a grant, per role the grant was opened in: grant role -> clinic -> ... */
const grantVerdictMemo: Memo<Map<string, ByStanding>> = new WeakMap();
const purposeMemo: Memo<string> = new WeakMap();
const seenMemo: Memo<boolean> = new WeakMap();
const alwaysMemo: Memo<boolean> = new WeakMap();

function memoFor<V>(memo: Memo<V>, policy: PolicySet, principal: Principal): Map<string, V> {
  let byPrincipal = memo.get(policy);
  if (byPrincipal === undefined) memo.set(policy, (byPrincipal = new WeakMap()));
  let entries = byPrincipal.get(principal);
  if (entries === undefined) byPrincipal.set(principal, (entries = new Map()));
  return entries;
}

/**
 * A row under a grant is decided by the grant's role alone (grantRoleForRow), not by which grant:
 * its id goes into the audit row from the row, so one verdict serves every grant of that role.
 */
function grantVerdicts(policy: PolicySet, principal: Principal, grantRole: string): Map<string, ByStanding> {
  const byRole = memoFor(grantVerdictMemo, policy, principal);
  let byClinic = byRole.get(grantRole);
  if (byClinic === undefined) byRole.set(grantRole, (byClinic = new Map()));
  return byClinic;
}

// A field the policy does not name (not PHI, or a typo in the caller) is denied, not allowed;
// a partner sees the intersection of its role's policy and its key's fields.
const effectOf = (role: RolePolicy, principal: Principal, name: string): Effect =>
  principal.kind === 'partner' && !principal.fields.has(name) ? 'deny' : (role.fields.get(name) ?? 'deny');

/**
 * Whether `operation` may write `name` ('Type.field') on rows like `row`: the most permissive
 * effect among writeRolesForRow, so a grant never counts, and only 'allow' lets the write through.
 */
export function decideWrite(policy: PolicySet, principal: Principal, row: RowFacts, operation: string, name: string): FieldDecision {
  let decision = DENIED;
  for (const role of writeRolesForRow(policy, principal, row, operation)) {
    const effect = effectOf(role, principal, name);
    if (PERMISSIVENESS[effect] > PERMISSIVENESS[decision.effect]) decision = Object.freeze({ effect, role: role.name, viaGrant: false });
  }
  return decision;
}

/**
 * The most permissive effect among the roles that cover the row and whose MFA demand is met, a
 * break-glass grant's role last. Only fieldVerdict asks, once per (clinic, standing, field).
 */
function decide(policy: PolicySet, principal: Principal, row: RowFacts, name: string): FieldDecision {
  let decision = DENIED;
  const granted = grantRoleForRow(policy, principal, row);
  // The usual roles first: a grant is credited only with what they would not have shown anyway.
  for (const role of [...rolesForRow(policy, principal, row), ...(granted ? [granted] : [])]) {
    if (!mfaMet(role, principal)) continue;
    const effect = effectOf(role, principal, name);
    if (PERMISSIVENESS[effect] > PERMISSIVENESS[decision.effect]) decision = Object.freeze({ effect, role: role.name, viaGrant: role === granted });
  }
  return decision;
}

/**
 * The role under which the principal may find patients by an identifier (`Patient.ssn`, ...): one
 * that sees patients and sees the identifier in full, its MFA met, and for a partner only when its
 * key names the identifier (effectOf, as for reading it). A masked view is not enough: a search
 * confirms the whole value, which is what the mask withholds. null: the search is refused.
 */
export function searchRole(policy: PolicySet, principal: Principal, name: string): RolePolicy | null {
  return usableRoles(policy, principal).find((role) => role.rows !== 'none' && effectOf(role, principal, name) === 'allow') ?? null;
}

export function canPerform(policy: PolicySet, principal: Principal, operation: string): boolean {
  return usableRoles(policy, principal).some((role) => role.operations.has(operation));
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
  // Asked for every audit row of a write, and once per verdict; memoised like fieldVerdict.
  const purposes = memoFor(purposeMemo, policy, principal);
  let purpose = purposes.get(role);
  if (purpose === undefined) {
    purpose = knownRoles(policy, principal).find((known) => known.name === role)?.purpose ?? 'unspecified';
    purposes.set(role, purpose);
  }
  return purpose;
}
