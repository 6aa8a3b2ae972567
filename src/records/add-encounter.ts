import { randomUUID } from 'node:crypto';
import { ENCOUNTER_COLUMNS, insertEncounter } from '../db/patients.ts';
import { loadPatientForWrite, writeTarget } from './load-patient.ts';
import { mayWrite } from './may-write.ts';
import type { RequestScope } from './scope.ts';
import * as v from './validate.ts';
import { auditWrites, rethrowRefusal } from './write-helpers.ts';

export interface AddEncounterInput {
  readonly occurredAt: string;
  readonly kind: string;
  readonly reason?: string | null;
  readonly diagnosisCodes?: readonly string[] | null;
  readonly notes?: string | null;
}

export async function addEncounter(scope: RequestScope, rawPatientId: string, input: AddEncounterInput): Promise<string> {
  const patient = await loadPatientForWrite(scope, rawPatientId, 'patientId');
  const occurredAt = v.timestamp('occurredAt', input.occurredAt);
  const kind = v.kind('kind', input.kind);
  const plain: Record<'reason' | 'diagnosisCodes' | 'notes', string | null> = {
    reason: input.reason == null ? null : v.text('reason', input.reason, 2000),
    diagnosisCodes: input.diagnosisCodes == null ? null : JSON.stringify(v.diagnosisCodes('diagnosisCodes', input.diagnosisCodes)),
    notes: input.notes == null ? null : v.text('notes', input.notes, 20_000),
  };
  const given = ['occurredAt', 'kind', ...(Object.keys(plain) as (keyof typeof plain)[]).filter((k) => plain[k] !== null)];
  const grants = await mayWrite(scope, writeTarget(patient), 'addEncounter', 'Encounter', given);
  const id = randomUUID();
  const seal = (column: string, value: string) => scope.cipher.encrypt(patient.clinic_id, { table: 'encounters', column, rowId: id, patientId: patient.id }, value);
  const sealOptional = (column: string, value: string | null) => (value === null ? Promise.resolve(null) : seal(column, value));
  await insertEncounter(scope.tx, {
    id,
    patientId: patient.id,
    clinicId: patient.clinic_id,
    occurredAt,
    kind: await seal(ENCOUNTER_COLUMNS.kind, kind),
    reason: await sealOptional(ENCOUNTER_COLUMNS.reason, plain.reason),
    diagnosisCodes: await sealOptional(ENCOUNTER_COLUMNS.diagnosisCodes, plain.diagnosisCodes),
    notes: await sealOptional(ENCOUNTER_COLUMNS.notes, plain.notes),
  }).catch(rethrowRefusal);
  auditWrites(scope, 'create', 'Encounter', patient.id, id, grants);
  return id;
}
