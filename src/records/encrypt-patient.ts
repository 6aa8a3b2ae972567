import { PATIENT_COLUMNS } from '../db/patients.ts';
import { identifierIndex, normaliseMrn, normaliseSsn } from './identifiers.ts';
import type { CheckedValues, PatientField } from './patient-values.ts';
import type { RequestScope } from './scope.ts';

/**
 * Column values for the given patient fields: ciphertext bound to (patients, column, id), plus
 * the blind indexes of mrn and ssn when those change. Column names come from PATIENT_COLUMNS only.
 */
export async function encryptPatient(scope: RequestScope, clinicId: string, id: string, values: CheckedValues): Promise<Record<string, Buffer | null>> {
  const out: Record<string, Buffer | null> = {};
  for (const [field, value] of Object.entries(values) as [PatientField, string | null][]) {
    const column = PATIENT_COLUMNS[field];
    out[column] = value === null ? null : await scope.cipher.encrypt(clinicId, { table: 'patients', column, rowId: id, patientId: id }, value);
  }
  if (values.mrn) out.mrn_bidx = await identifierIndex(scope.keyring, 'patients.mrn', clinicId, normaliseMrn(values.mrn));
  if (values.ssn !== undefined) {
    out.ssn_bidx = values.ssn === null ? null : await identifierIndex(scope.keyring, 'patients.ssn', clinicId, normaliseSsn(values.ssn));
  }
  return out;
}
