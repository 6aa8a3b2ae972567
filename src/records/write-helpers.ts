import type { AuditEvent } from '../audit/event.ts';
import { PhigateError } from '../errors.ts';
import { purposeFor, searchRole } from '../policy/decide.ts';
import type { WriteGrant } from './may-write.ts';
import type { RequestScope } from './scope.ts';

const UNIQUE_VIOLATION = '23505';

// The unique indexes of schema/migrations (002, 010, 019) that keep an identifier to one patient of a clinic.
const IDENTIFIER_INDEXES: Readonly<Record<string, 'mrn' | 'ssn'>> = {
  patients_clinic_mrn: 'mrn',
  patients_clinic_ssn: 'ssn',
  patients_clinic_mrn_next: 'mrn',
  patients_clinic_ssn_next: 'ssn',
};
const IDENTIFIERS = ['mrn', 'ssn'] as const;

/**
 * Writing an identifier tests it against every patient of the clinic (it must be unique there), so
 * the answer says whether somebody else holds it. Only a role that may search the whole clinic by
 * that identifier may write it: for anyone else the answer would be an existence oracle over
 * patients they cannot see (a physician setting an MRN that belongs to a patient off its care team).
 */
export function mayWriteIdentifiers(scope: RequestScope, fields: readonly string[]): void {
  for (const kind of IDENTIFIERS) {
    if (fields.includes(kind) && searchRole(scope.policy, scope.principal, `Patient.${kind}`)?.rows !== 'clinic') {
      throw new PhigateError('FORBIDDEN', `You may not write Patient.${kind}.`);
    }
  }
}

/**
 * An identifier another patient of the clinic holds: the answer says so, which makes the write a
 * search, so it is audited as one. The write is rolled back, so the row goes through the recorder,
 * and without it the answer is AUDIT_UNAVAILABLE, not the disclosure.
 */
export async function rethrowIdentifierConflict(scope: RequestScope, operation: 'createPatient' | 'updatePatient', patientId: string | null, err: unknown): Promise<never> {
  const e = err as { code?: string; constraint?: string };
  const kind = e.code === UNIQUE_VIOLATION ? IDENTIFIER_INDEXES[e.constraint ?? ''] : undefined;
  if (kind === undefined) return rethrowRefusal(err);
  const role = searchRole(scope.policy, scope.principal, `Patient.${kind}`)?.name ?? null;
  await recordAfterRollback(scope, [
    {
      action: 'search',
      typeName: 'Mutation',
      field: operation,
      patientId,
      recordId: null,
      role,
      purpose: purposeFor(scope.policy, scope.principal, role),
      breakGlass: false,
      detail: `${kind}:conflict`,
    },
  ]);
  throw new PhigateError('BAD_USER_INPUT', `A patient with this ${kind} already exists in the clinic.`);
}

/**
 * Records events of a write that is refused and so rolls back whole. The request's transaction ends
 * first: the recorder's connection must never be a second one held by this request, or requests
 * holding every connection of a full pool would each wait for another.
 */
export async function recordAfterRollback(scope: RequestScope, events: readonly AuditEvent[]): Promise<void> {
  await scope.tx.rollback();
  await scope.recorder.record(scope.auditRequest, events);
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
