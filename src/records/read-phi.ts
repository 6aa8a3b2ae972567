import { PhigateError } from '../errors.ts';
import { decideField, purposeFor, rolesForRow, type RowFacts } from '../policy/decide.ts';
import { MASKERS } from '../policy/mask.ts';
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
 * The one path by which a PHI value leaves the database: decide, and only then decrypt; mask
 * when the policy says so; record an audit event either way. A denied field is never decrypted.
 * Audit events are buffered and written in the request's transaction before the response leaves.
 */
export async function readPhi(scope: RequestScope, ref: PhiRef, ciphertext: Buffer | null): Promise<string | null> {
  const decision = decideField(scope.policy, scope.principal, ref.row, ref.typeName, ref.field);
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
  let value: string | null = null;
  if (ciphertext !== null) {
    const plain = await scope.cipher.decrypt(ref.row.clinicId, { table: ref.table, column: ref.column, rowId: ref.rowId }, ciphertext);
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
