import type { Attributes } from '@opentelemetry/api';
import type { AuditAction } from '../audit/event.ts';
import { PhigateError } from '../errors.ts';
import { decideField, grantRoleForRow, onlyThroughGrant, purposeFor, rolesForRow, type FieldDecision, type RowFacts } from '../policy/decide.ts';
import { MASKERS } from '../policy/mask.ts';
import { inSpan, tracing } from '../telemetry/tracing.ts';
import type { RequestScope } from './scope.ts';

export interface PhiRef {
  readonly typeName: 'Patient' | 'Encounter';
  readonly field: string;
  readonly table: 'patients' | 'encounters';
  readonly column: string;
  readonly rowId: string;
  readonly patientId: string;
  readonly row: RowFacts;
}

// Span attributes of each PHI field, made once: readPhi runs for every value of a page.
const fieldAttributes = new Map<string, Attributes>();
function attributesOf(ref: PhiRef): Attributes {
  const name = `${ref.typeName}.${ref.field}`;
  let attributes = fieldAttributes.get(name);
  if (attributes === undefined) fieldAttributes.set(name, (attributes = { 'phigate.field': name }));
  return attributes;
}

/** The purpose of use of whatever is shown through a break-glass grant (HL7 PurposeOfUse ETREAT). */
export const EMERGENCY_PURPOSE = 'emergency_treatment';

function record(scope: RequestScope, ref: PhiRef, decision: FieldDecision, role: string | null, action: AuditAction): void {
  // Under a grant: what the grant showed, and anything about a row only the grant shows.
  const breakGlass = decision.viaGrant || onlyThroughGrant(scope.policy, scope.principal, ref.row);
  scope.audit.add({
    action,
    typeName: ref.typeName,
    field: ref.field,
    patientId: ref.patientId,
    recordId: ref.rowId === ref.patientId ? null : ref.rowId,
    role,
    purpose: breakGlass ? EMERGENCY_PURPOSE : purposeFor(scope.policy, scope.principal, role),
    breakGlass,
    grantId: breakGlass ? (ref.row.grant?.id ?? null) : null,
  });
}

function shown(scope: RequestScope, ref: PhiRef, decision: FieldDecision, role: string | null, effect: 'allow' | 'mask', plain: string): string {
  let value = plain;
  if (effect === 'mask') {
    const mask = MASKERS[`${ref.typeName}.${ref.field}`];
    // The policy loader refuses `mask` without a masker; this guards against a bypassed loader.
    if (!mask) throw new PhigateError('INTERNAL', 'The field cannot be masked.', { reason: 'no_masker' });
    value = mask(plain);
  }
  record(scope, ref, decision, role, effect === 'mask' ? 'masked' : 'read');
  return value;
}

/**
 * The one path by which a PHI value leaves the database: decide, count it against the principal's
 * PHI limits, and only then decrypt; mask when the policy says so; record an audit event either
 * way. A denied field, or one past a limit, is never decrypted.
 * Audit events are buffered and written in the request's transaction before the response leaves.
 * Synchronous when the data key is cached, as it is in steady state: a page of 800 values then
 * costs no promise per value, and no closure either unless tracing is on.
 */
export function readPhi(scope: RequestScope, ref: PhiRef, ciphertext: Buffer | null): string | null | Promise<string | null> {
  const decision = tracing()
    ? inSpan('phigate.policy', attributesOf(ref), () => decideField(scope.policy, scope.principal, ref.row, ref.typeName, ref.field))
    : decideField(scope.policy, scope.principal, ref.row, ref.typeName, ref.field);
  // A refusal is recorded in the capacity the attempt was made in, so an auditor can tell a
  // nurse reaching for notes from a stranger doing so.
  const role =
    decision.role ?? rolesForRow(scope.policy, scope.principal, ref.row)[0]?.name ?? grantRoleForRow(scope.policy, scope.principal, ref.row)?.name ?? null;
  if (decision.effect === 'deny') {
    record(scope, ref, decision, role, 'denied');
    throw new PhigateError('FIELD_DENIED', `You may not see ${ref.typeName}.${ref.field}.`);
  }
  const capped = scope.budget.take(ref.patientId);
  if (capped !== null) {
    record(scope, ref, decision, role, 'limited');
    const per = capped === 'phi_minute_cap' ? 'minute' : 'request';
    // No HTTP status: the rest of the answer stands, as it does around a denied field.
    throw new PhigateError('RATE_LIMITED', `Your limit of PHI per ${per} is reached; ${ref.typeName}.${ref.field} is withheld.`, { reason: capped, http: null });
  }
  const effect = decision.effect;
  if (ciphertext === null) {
    record(scope, ref, decision, role, effect === 'mask' ? 'masked' : 'read');
    return null;
  }
  const aad = { table: ref.table, column: ref.column, rowId: ref.rowId };
  const plain = tracing()
    ? inSpan('phigate.decrypt', attributesOf(ref), () => scope.cipher.decrypt(ref.row.clinicId, aad, ciphertext))
    : scope.cipher.decrypt(ref.row.clinicId, aad, ciphertext);
  return plain instanceof Promise ? plain.then((p) => shown(scope, ref, decision, role, effect, p)) : shown(scope, ref, decision, role, effect, plain);
}
