import { patientsByIds, type PatientRow } from '../db/patients.ts';
import { PhigateError } from '../errors.ts';
import type { WriteTarget } from './may-write.ts';
import * as v from './validate.ts';
import type { RequestScope } from './scope.ts';

/**
 * The patient a mutation acts on. Hidden and missing look the same, so a caller learns nothing
 * about rows outside its reach.
 */
export async function loadPatientForWrite(scope: RequestScope, rawId: string, argName: string): Promise<PatientRow> {
  const id = v.id(argName, rawId);
  const [row] = await patientsByIds(scope.tx, [id]);
  if (!row) throw new PhigateError('FORBIDDEN', 'No patient with that id is available to you for this change.');
  return row;
}

/** What the write decision needs of the patient row: its clinic, care-team standing and live grant, made as the row was loaded. */
export const writeTarget = (row: PatientRow): WriteTarget => ({ patientId: row.id, row: row.facts });
