import { PhigateError } from '../errors.ts';
import type { WriteGrant } from './may-write.ts';
import type { RequestScope } from './scope.ts';

const UNIQUE_VIOLATION = '23505';

export function rethrowUniqueMrn(err: unknown): never {
  if ((err as { code?: string }).code === UNIQUE_VIOLATION) {
    throw new PhigateError('BAD_USER_INPUT', 'A patient with this mrn already exists in the clinic.');
  }
  return rethrowRefusal(err);
}

/** One audit row per written field, naming the field, never its value. */
export function auditWrites(
  scope: RequestScope,
  action: 'create' | 'update',
  typeName: string,
  patientId: string,
  recordId: string | null,
  grants: readonly WriteGrant[],
): void {
  for (const g of grants) {
    scope.audit.add({ action, typeName, field: g.field, patientId, recordId, role: g.role, purpose: g.purpose, breakGlass: false });
  }
}

const INSUFFICIENT_PRIVILEGE = '42501';

/** Row security refusing a write is the database agreeing with policy: answer FORBIDDEN, not INTERNAL. */
export function rethrowRefusal(err: unknown): never {
  if ((err as { code?: string }).code === INSUFFICIENT_PRIVILEGE) {
    throw new PhigateError('FORBIDDEN', 'You may not make this change.');
  }
  throw err;
}
