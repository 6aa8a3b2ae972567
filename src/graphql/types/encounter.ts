import type { EncounterRow } from '../../db/patients.ts';
import { builder } from '../builder.ts';
import { PHI_EXTENSION, resolveEncounterDate, resolveEncounterKind, resolveEncounterPhi } from '../phi-field.ts';

export const Encounter = builder.objectRef<EncounterRow>('Encounter').implement({
  fields: (t) => ({
    id: t.exposeID('id'),
    patientId: t.exposeID('patient_id'),
    occurredAt: t.string({ nullable: true, extensions: PHI_EXTENSION, resolve: (e, _a, ctx) => resolveEncounterDate(ctx, e) }),
    kind: t.string({ nullable: true, extensions: PHI_EXTENSION, resolve: (e, _a, ctx) => resolveEncounterKind(ctx, e) }),
    reason: t.string({ nullable: true, extensions: PHI_EXTENSION, resolve: (e, _a, ctx) => resolveEncounterPhi(ctx, e, 'reason') }),
    diagnosisCodes: t.stringList({
      nullable: true,
      extensions: PHI_EXTENSION,
      resolve: async (e, _a, ctx) => {
        const json = await resolveEncounterPhi(ctx, e, 'diagnosisCodes');
        return json === null ? null : (JSON.parse(json) as string[]);
      },
    }),
    notes: t.string({ nullable: true, extensions: PHI_EXTENSION, resolve: (e, _a, ctx) => resolveEncounterPhi(ctx, e, 'notes') }),
  }),
});
