import { updatePatientColumns } from '../db/patients.ts';
import { PhigateError } from '../errors.ts';
import { encryptPatient } from './encrypt-patient.ts';
import { loadPatientForWrite, writeTarget } from './load-patient.ts';
import { mayWrite } from './may-write.ts';
import { checkPatientValues, type PatientValues } from './patient-values.ts';
import type { RequestScope } from './scope.ts';
import { auditWrites, mayWriteIdentifiers, rethrowIdentifierConflict } from './write-helpers.ts';

export async function updatePatient(scope: RequestScope, rawId: string, input: PatientValues): Promise<string> {
  const row = await loadPatientForWrite(scope, rawId, 'id');
  const values = checkPatientValues(input);
  const fields = Object.keys(values);
  if (fields.length === 0) throw new PhigateError('BAD_USER_INPUT', 'input must set at least one field.');
  const grants = await mayWrite(scope, writeTarget(row), 'updatePatient', 'Patient', fields);
  mayWriteIdentifiers(scope, fields);
  const columns = await encryptPatient(scope, row.clinic_id, row.id, values);
  const updated = await updatePatientColumns(scope.tx, row.id, columns).catch((e: unknown) => rethrowIdentifierConflict(scope, 'updatePatient', row.id, e));
  if (!updated) throw new PhigateError('FORBIDDEN', 'You may not make this change.');
  auditWrites(scope, 'update', 'Patient', row.id, null, grants);
  return row.id;
}
