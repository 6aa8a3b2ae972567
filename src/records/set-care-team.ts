import { replaceCareTeam } from '../db/patients.ts';
import { PhigateError } from '../errors.ts';
import { knownRoles, purposeFor } from '../policy/decide.ts';
import { loadPatientForWrite } from './load-patient.ts';
import type { RequestScope } from './scope.ts';
import * as v from './validate.ts';
import { rethrowRefusal } from './write-helpers.ts';

export async function setCareTeam(scope: RequestScope, rawPatientId: string, rawSubjects: readonly string[]): Promise<string> {
  const patient = await loadPatientForWrite(scope, rawPatientId, 'patientId');
  const subjects = v.subjects('subjects', rawSubjects);
  const role = knownRoles(scope.policy, scope.principal).find(
    (r) => r.operations.has('setCareTeam') && (!r.mfaRequired || scope.principal.mfa),
  );
  if (!role) throw new PhigateError('FORBIDDEN', 'You may not change care teams.');
  await replaceCareTeam(scope.tx, patient.id, patient.clinic_id, subjects).catch(rethrowRefusal);
  scope.audit.add({
    action: 'update',
    typeName: 'Patient',
    field: 'careTeam',
    patientId: patient.id,
    recordId: null,
    role: role.name,
    purpose: purposeFor(scope.policy, scope.principal, role.name),
    breakGlass: false,
  });
  return patient.id;
}
