import type { Attributes } from '@opentelemetry/api';
import type { AuditAction } from '../audit/event.ts';
import { PhigateError } from '../errors.ts';
import { decideField, purposeFor, rolesForRow, type RowFacts } from '../policy/decide.ts';
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

function record(scope: RequestScope, ref: PhiRef, role: string | null, action: AuditAction): void {
  scope.audit.add({
    action,
    typeName: ref.typeName,
    field: ref.field,
    patientId: ref.patientId,
    recordId: ref.rowId === ref.patientId ? null : ref.rowId,
    role,
    purpose: purposeFor(scope.policy, scope.principal, role),
    breakGlass: false,
  });
}

function shown(scope: RequestScope, ref: PhiRef, role: string | null, effect: 'allow' | 'mask', plain: string): string {
  let value = plain;
  if (effect === 'mask') {
    const mask = MASKERS[`${ref.typeName}.${ref.field}`];
    // The policy loader refuses `mask` without a masker; this guards against a bypassed loader.
    if (!mask) throw new PhigateError('INTERNAL', 'The field cannot be masked.', { reason: 'no_masker' });
    value = mask(plain);
  }
  record(scope, ref, role, effect === 'mask' ? 'masked' : 'read');
  return value;
}

// An empty field is shown as empty: audited like a value, since it too says something about the patient.
function empty(scope: RequestScope, ref: PhiRef, role: string | null, effect: 'allow' | 'mask'): null {
  record(scope, ref, role, effect === 'mask' ? 'masked' : 'read');
  return null;
}

/**
 * Decide, then count against the principal's PHI limits: the refusals of both are audited and
 * thrown here, so that nothing past this point is shown that was not allowed and counted.
 */
function admit(scope: RequestScope, ref: PhiRef): { role: string | null; effect: 'allow' | 'mask' } {
  const decision = tracing()
    ? inSpan('phigate.policy', attributesOf(ref), () => decideField(scope.policy, scope.principal, ref.row, ref.typeName, ref.field))
    : decideField(scope.policy, scope.principal, ref.row, ref.typeName, ref.field);
  // A refusal is recorded in the capacity the attempt was made in, so an auditor can tell a
  // nurse reaching for notes from a stranger doing so.
  const role = decision.role ?? rolesForRow(scope.policy, scope.principal, ref.row)[0]?.name ?? null;
  if (decision.effect === 'deny') {
    record(scope, ref, role, 'denied');
    throw new PhigateError('FIELD_DENIED', `You may not see ${ref.typeName}.${ref.field}.`);
  }
  const capped = scope.budget.take(ref.patientId);
  if (capped !== null) {
    record(scope, ref, role, 'limited');
    const per = capped === 'phi_minute_cap' ? 'minute' : 'request';
    // No HTTP status: the rest of the answer stands, as it does around a denied field.
    throw new PhigateError('RATE_LIMITED', `Your limit of PHI per ${per} is reached; ${ref.typeName}.${ref.field} is withheld.`, { reason: capped, http: null });
  }
  return { role, effect: decision.effect };
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
  const { role, effect } = admit(scope, ref);
  if (ciphertext === null) return empty(scope, ref, role, effect);
  const aad = { table: ref.table, column: ref.column, rowId: ref.rowId };
  const plain = tracing()
    ? inSpan('phigate.decrypt', attributesOf(ref), () => scope.cipher.decrypt(ref.row.clinicId, aad, ciphertext))
    : scope.cipher.decrypt(ref.row.clinicId, aad, ciphertext);
  return plain instanceof Promise ? plain.then((p) => shown(scope, ref, role, effect, p)) : shown(scope, ref, role, effect, plain);
}

/**
 * A PHI value the database holds in plaintext (an encounter's date, which it must order by; a kind
 * written before kinds were encrypted): the same decision, limits and audit as readPhi, with
 * nothing to decrypt.
 */
export function readPlainPhi(scope: RequestScope, ref: PhiRef, value: string | null): string | null {
  const { role, effect } = admit(scope, ref);
  if (value === null) return empty(scope, ref, role, effect);
  return shown(scope, ref, role, effect, value);
}
