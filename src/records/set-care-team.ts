import type { AuditEvent } from '../audit/event.ts';
import { careTeamOf, replaceCareTeam } from '../db/patients.ts';
import { PhigateError } from '../errors.ts';
import { purposeFor } from '../policy/decide.ts';
import { loadPatientForWrite, writeTarget } from './load-patient.ts';
import { writeRole } from './may-write.ts';
import type { RequestScope } from './scope.ts';
import * as v from './validate.ts';
import { recordAfterRollback, rethrowRefusal } from './write-helpers.ts';

export async function setCareTeam(scope: RequestScope, rawPatientId: string, rawSubjects: readonly string[]): Promise<string> {
  const patient = await loadPatientForWrite(scope, rawPatientId, 'patientId');
  const subjects = v.subjects('subjects', rawSubjects);
  const role = await writeRole(scope, writeTarget(patient), 'setCareTeam');
  // Separation of duties: whoever changes a care team does not thereby give itself the patient's
  // record; another admin adds it. Staying on a team it is already on is no new access.
  if (subjects.includes(scope.principal.subject) && !(await careTeamOf(scope.tx, patient.id)).includes(scope.principal.subject)) {
    await recordAfterRollback(scope, [{ ...event(scope, role.name, patient.id, 'refused'), detail: 'self_care_team' }]);
    throw new PhigateError('FORBIDDEN', 'You may not add yourself to a care team; another administrator must.', { reason: 'separation_of_duties' });
  }
  await replaceCareTeam(scope.tx, patient.id, patient.clinic_id, subjects).catch(rethrowRefusal);
  scope.audit.add(event(scope, role.name, patient.id, 'update'));
  return patient.id;
}

const event = (scope: RequestScope, role: string, patientId: string, action: 'update' | 'refused'): AuditEvent => ({
  action,
  typeName: 'Patient',
  field: 'careTeam',
  patientId,
  recordId: null,
  role,
  purpose: purposeFor(scope.policy, scope.principal, role),
  breakGlass: false,
});
