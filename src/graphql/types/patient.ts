import type { PatientRow } from '../../db/patients.ts';
import { PHI_FIELDS } from '../../policy/phi-fields.ts';
import { builder } from '../builder.ts';
import { encounterWindow } from '../encounter-window.ts';
import { encounterColumnsFor, PHI_EXTENSION, resolvePatientPhi } from '../phi-field.ts';
import { Encounter } from './encounter.ts';

export const Patient = builder.objectRef<PatientRow>('Patient').implement({
  fields: (t) => {
    const phi = (field: Parameters<typeof resolvePatientPhi>[2]) =>
      t.string({ nullable: true, extensions: PHI_EXTENSION, resolve: (p, _a, ctx) => resolvePatientPhi(ctx, p, field) });
    return {
      id: t.exposeID('id'),
      clinicId: t.exposeID('clinic_id'),
      // The PHI catalogue's patient fields (src/policy/phi-fields.ts), all plain strings.
      ...Object.fromEntries(PHI_FIELDS.Patient.map((field) => [field, phi(field)])),
      encounters: t.field({
        type: [Encounter],
        nullable: true,
        description:
          'Newest first (by id for a principal that may not see every visit date), a window of at most `first`: the gateway reads no more than that, and the query limits price the field by it.',
        args: {
          first: t.arg.int({ description: "How many, 1 to the gateway's bound (PHIGATE_MAX_ENCOUNTERS, default 10); that bound when left out." }),
          after: t.arg.string({ description: 'The id of the last encounter of the previous page: the next page holds those after it, in the same order.' }),
        },
        resolve: (p, args, ctx) => ctx.loaders.encountersOf(encounterColumnsFor(ctx), encounterWindow(ctx, args), p),
      }),
    };
  },
});

interface PatientPage {
  readonly rows: readonly PatientRow[];
  readonly hasNextPage: boolean;
}

const PatientEdge = builder.objectRef<PatientRow>('PatientEdge').implement({
  fields: (t) => ({
    cursor: t.string({ resolve: (p) => encodeCursor(p.id) }),
    node: t.field({ type: Patient, resolve: (p) => p }),
  }),
});

const PageInfo = builder.objectRef<PatientPage>('PageInfo').implement({
  fields: (t) => ({
    hasNextPage: t.exposeBoolean('hasNextPage'),
    endCursor: t.string({ nullable: true, resolve: (page) => (page.rows.length ? encodeCursor(page.rows.at(-1)!.id) : null) }),
  }),
});

export const PatientConnection = builder.objectRef<PatientPage>('PatientConnection').implement({
  fields: (t) => ({
    edges: t.field({ type: [PatientEdge], resolve: (page) => page.rows }),
    pageInfo: t.field({ type: PageInfo, resolve: (page) => page }),
  }),
});

export type { PatientPage };

// Opaque to clients; carries only a row id, which row security checks again on use. The id must
// be a well-formed UUID: anything looser reaches PostgreSQL's uuid cast and aborts the request's
// transaction (INTERNAL) instead of answering BAD_USER_INPUT.
export const encodeCursor = (id: string): string => Buffer.from(`patient:${id}`).toString('base64url');
export const decodeCursor = (cursor: string): string | null => {
  const m = /^patient:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  return m ? m[1]! : null;
};
