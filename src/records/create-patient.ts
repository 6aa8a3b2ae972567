import { randomUUID } from 'node:crypto';
import { insertPatient } from '../db/patients.ts';
import { PhigateError } from '../errors.ts';
import { encryptPatient } from './encrypt-patient.ts';
import { mayWrite } from './may-write.ts';
import { checkPatientValues, type PatientValues } from './patient-values.ts';
import type { RequestScope } from './scope.ts';
import { auditWrites, mayWriteIdentifiers, rethrowIdentifierConflict } from './write-helpers.ts';

export interface CreatePatientInput extends PatientValues {
  readonly clinicId: string;
  readonly mrn: string;
}

export async function createPatient(scope: RequestScope, input: CreatePatientInput): Promise<string> {
  const { clinicId } = input;
  if (!scope.principal.clinics.includes(clinicId)) throw new PhigateError('FORBIDDEN', 'You may not create patients in that clinic.');
  const { clinicId: _clinic, ...given } = input;
  const values = checkPatientValues(given);
  const fields = Object.keys(values).filter((f) => values[f as keyof typeof values] !== null);
  const grants = await mayWrite(scope, { patientId: null, row: { clinicId, onCareTeam: false } }, 'createPatient', 'Patient', fields);
  mayWriteIdentifiers(scope, fields);
  // Only a clinic that exists (and, through the request context, valid clinic claims) gets a data key created for it.
  if (!(await scope.tx.query('SELECT 1 FROM phigate.clinics WHERE id = $1', [clinicId])).rowCount) throw new PhigateError('FORBIDDEN', 'You may not create patients in that clinic.');
  const id = randomUUID();
  const { key, record } = await scope.keyring.firstPatientKey(clinicId, id);
  try {
    const columns = await encryptPatient(scope, clinicId, id, values, key);
    await insertPatient(scope.tx, id, clinicId, record, columns).catch((e: unknown) => rethrowIdentifierConflict(scope, 'createPatient', null, e));
  } finally {
    key.key.fill(0);
  }
  auditWrites(scope, 'create', 'Patient', id, null, grants);
  return id;
}
