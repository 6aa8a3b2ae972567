import type { PatientKey } from '../crypto/envelope.ts';
import { indexVersionsForWrite } from '../db/blind-index-versions.ts';
import { PATIENT_COLUMNS } from '../db/patients.ts';
import { identifierIndex, normaliseMrn, normaliseSsn } from './identifiers.ts';
import type { CheckedValues, PatientField } from './patient-values.ts';
import type { RequestScope } from './scope.ts';

/**
 * Column values for the given patient fields: ciphertext bound to (patients, column, id), plus
 * the blind indexes of mrn and ssn when those change, under the clinic's index version and, while
 * a rotation runs, its next one too. Column names come from PATIENT_COLUMNS only. Sealed under
 * `key` when given (a patient being created, whose key is not stored yet), else under the
 * patient's stored write key.
 */
export async function encryptPatient(scope: RequestScope, clinicId: string, id: string, values: CheckedValues, key?: PatientKey): Promise<Record<string, Buffer | null>> {
  const out: Record<string, Buffer | null> = {};
  for (const [field, value] of Object.entries(values) as [PatientField, string | null][]) {
    const column = PATIENT_COLUMNS[field];
    if (value === null) out[column] = null;
    else if (key !== undefined) out[column] = scope.cipher.sealWith(key, { table: 'patients', column, rowId: id }, value);
    else out[column] = await scope.cipher.encrypt(clinicId, { table: 'patients', column, rowId: id, patientId: id }, value);
  }
  if (!values.mrn && values.ssn === undefined) return out;
  const { version, next } = await indexVersionsForWrite(scope.tx, clinicId);
  if (values.mrn) {
    const mrn = normaliseMrn(values.mrn);
    out.mrn_bidx = await identifierIndex(scope.keyring, 'patients.mrn', clinicId, mrn, version);
    if (next !== null) out.mrn_bidx_next = await identifierIndex(scope.keyring, 'patients.mrn', clinicId, mrn, next);
  }
  if (values.ssn !== undefined) {
    const ssn = values.ssn === null ? null : normaliseSsn(values.ssn);
    out.ssn_bidx = ssn === null ? null : await identifierIndex(scope.keyring, 'patients.ssn', clinicId, ssn, version);
    // Written whenever the SSN is: a cleared SSN must not leave its digest behind in either column.
    out.ssn_bidx_next = ssn === null || next === null ? null : await identifierIndex(scope.keyring, 'patients.ssn', clinicId, ssn, next);
  }
  return out;
}
