import { encounterById } from '../../db/patients.ts';
import { PhigateError } from '../../errors.ts';
import { addEncounter } from '../../records/add-encounter.ts';
import { createPatient } from '../../records/create-patient.ts';
import { setCareTeam } from '../../records/set-care-team.ts';
import { updatePatient } from '../../records/update-patient.ts';
import { inputsOf } from '../../policy/phi-fields.ts';
import { builder } from '../builder.ts';
import type { GraphQLContext } from '../context.ts';
import { Encounter } from './encounter.ts';
import { Patient } from './patient.ts';

// The PHI fields a patient input may carry, from the PHI catalogue (src/policy/phi-fields.ts);
// create and update differ only in whether mrn is required.
type Types = typeof builder extends PothosSchemaTypes.SchemaBuilder<infer T> ? T : never;
const INPUT_DESCRIPTIONS: Readonly<Record<string, string>> = { birthDate: 'YYYY-MM-DD' };
const patientInputFields = (t: PothosSchemaTypes.InputFieldBuilder<Types, 'InputObject'>) =>
  Object.fromEntries(
    inputsOf('Patient')
      .filter((name) => name !== 'mrn')
      .map((name) => [name, INPUT_DESCRIPTIONS[name] === undefined ? t.string() : t.string({ description: INPUT_DESCRIPTIONS[name] })]),
  );

const CreatePatientInput = builder.inputType('CreatePatientInput', {
  fields: (t) => ({ clinicId: t.id({ required: true }), mrn: t.string({ required: true }), ...patientInputFields(t) }),
});

const UpdatePatientInput = builder.inputType('UpdatePatientInput', {
  description: 'Only the fields given change; null clears a field (except mrn).',
  fields: (t) => ({ mrn: t.string(), ...patientInputFields(t) }),
});

const AddEncounterInput = builder.inputType('AddEncounterInput', {
  fields: (t) => ({
    occurredAt: t.string({ required: true, description: 'ISO 8601 date-time with a time zone' }),
    kind: t.string({ required: true }),
    reason: t.string(),
    diagnosisCodes: t.stringList({ description: 'ICD-10 codes' }),
    notes: t.string(),
  }),
});

// A mutation answers with the record as the caller may read it, through the same PHI path as a query.
async function reread(ctx: GraphQLContext, id: string) {
  ctx.loaders.patient.clear(id);
  const row = await ctx.loaders.patient.load(id);
  if (!row) throw new PhigateError('FORBIDDEN', 'The change was made but you may not read the result.');
  return row;
}

builder.mutationFields((t) => ({
  createPatient: t.field({
    type: Patient,
    authScopes: { operation: 'createPatient' },
    args: { input: t.arg({ type: CreatePatientInput, required: true }) },
    resolve: async (_r, { input }, ctx) => reread(ctx, await createPatient(ctx, { ...input, clinicId: String(input.clinicId) })),
  }),
  updatePatient: t.field({
    type: Patient,
    authScopes: { operation: 'updatePatient' },
    args: { id: t.arg.id({ required: true }), input: t.arg({ type: UpdatePatientInput, required: true }) },
    resolve: async (_r, { id, input }, ctx) => reread(ctx, await updatePatient(ctx, String(id), input)),
  }),
  addEncounter: t.field({
    type: Encounter,
    authScopes: { operation: 'addEncounter' },
    args: { patientId: t.arg.id({ required: true }), input: t.arg({ type: AddEncounterInput, required: true }) },
    resolve: async (_r, { patientId, input }, ctx) => {
      const row = await encounterById(ctx.tx, await addEncounter(ctx, String(patientId), input));
      if (!row) throw new PhigateError('FORBIDDEN', 'The change was made but you may not read the result.');
      return row;
    },
  }),
  setCareTeam: t.field({
    type: Patient,
    authScopes: { operation: 'setCareTeam' },
    args: { patientId: t.arg.id({ required: true }), subjects: t.arg.stringList({ required: true }) },
    resolve: async (_r, { patientId, subjects }, ctx) => reread(ctx, await setCareTeam(ctx, String(patientId), subjects)),
  }),
}));
