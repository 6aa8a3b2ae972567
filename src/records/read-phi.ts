import { PhigateError } from '../errors.ts';
import { decideField, purposeFor, rolesForRow, type RowFacts } from '../policy/decide.ts';
import { MASKERS } from '../policy/mask.ts';
import { inSpan } from '../telemetry/tracing.ts';
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

/**
 * The one path by which a PHI value leaves the database: decide, count it against the principal's
 * PHI limits, and only then decrypt; mask when the policy says so; record an audit event either
 * way. A denied field, or one past a limit, is never decrypted.
 * Audit events are buffered and written in the request's transaction before the response leaves.
 */
export async function readPhi(scope: RequestScope, ref: PhiRef, ciphertext: Buffer | null): Promise<string | null> {
  const field = { 'phigate.field': `${ref.typeName}.${ref.field}` };
  const decision = inSpan('phigate.policy', field, () => decideField(scope.policy, scope.principal, ref.row, ref.typeName, ref.field));
  // A refusal is recorded in the capacity the attempt was made in, so an auditor can tell a
  // nurse reaching for notes from a stranger doing so.
  const role = decision.role ?? rolesForRow(scope.policy, scope.principal, ref.row)[0]?.name ?? null;
  const event = {
    typeName: ref.typeName,
    field: ref.field,
    patientId: ref.patientId,
    recordId: ref.rowId === ref.patientId ? null : ref.rowId,
    role,
    purpose: purposeFor(scope.policy, scope.principal, role),
    breakGlass: false,
  };
  if (decision.effect === 'deny') {
    scope.audit.add({ ...event, action: 'denied' });
    throw new PhigateError('FIELD_DENIED', `You may not see ${ref.typeName}.${ref.field}.`);
  }
  const capped = scope.budget.take(ref.patientId);
  if (capped !== null) {
    scope.audit.add({ ...event, action: 'limited' });
    const per = capped === 'phi_minute_cap' ? 'minute' : 'request';
    // No HTTP status: the rest of the answer stands, as it does around a denied field.
    throw new PhigateError('RATE_LIMITED', `Your limit of PHI per ${per} is reached; ${ref.typeName}.${ref.field} is withheld.`, { reason: capped, http: null });
  }
  let value: string | null = null;
  if (ciphertext !== null) {
    const aad = { table: ref.table, column: ref.column, rowId: ref.rowId };
    const plain = await inSpan('phigate.decrypt', field, () => scope.cipher.decrypt(ref.row.clinicId, aad, ciphertext));
    if (decision.effect === 'mask') {
      const mask = MASKERS[`${ref.typeName}.${ref.field}`];
      // The policy loader refuses `mask` without a masker; this guards against a bypassed loader.
      if (!mask) throw new PhigateError('INTERNAL', 'The field cannot be masked.', { reason: 'no_masker' });
      value = mask(plain);
    } else {
      value = plain;
    }
  }
  scope.audit.add({ ...event, action: decision.effect === 'mask' ? 'masked' : 'read' });
  return value;
}
