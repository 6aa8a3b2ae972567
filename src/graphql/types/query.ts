import type { GraphQLResolveInfo } from 'graphql';
import { patientPage, patientPageWithEncounters, patientWithEncounters, type PageWalk, type PatientRow } from '../../db/patients.ts';
import { PhigateError } from '../../errors.ts';
import { usableRoles } from '../../policy/decide.ts';
import { searchPatient, type IdentifierKind } from '../../records/search.ts';
import * as v from '../../records/validate.ts';
import { builder } from '../builder.ts';
import type { GraphQLContext } from '../context.ts';
import { encounterWindowAt } from '../encounter-window.ts';
import { encounterColumnsFor } from '../phi-field.ts';
import { isOnlyRootField, selectsPath } from '../selects.ts';
import { decodeCursor, Patient, PatientConnection } from './patient.ts';
import { Viewer } from './viewer.ts';

// A principal one of whose roles reaches all rows of its clinics (a registrar, billing, a partner)
// walks its page through its clinics: the same rows as any walk (src/db/patients.ts, PageWalk),
// from a plan without the care-team branch. Row security decides the rows either way.
const pageWalkFor = (ctx: GraphQLContext): PageWalk => (usableRoles(ctx.policy, ctx.principal).some((role) => role.rows === 'clinic') ? 'clinics' : 'reach');

const ENCOUNTERS_OF_PAGE = ['edges', 'node', 'encounters'];
const ENCOUNTERS = ['encounters'];

// A lookup of one patient (by id or identifier) is one statement, its encounters read in it when
// the selection asks for them (as a page's are); nothing under a patient reads the database again.
// Alone in its operation, that statement is its request's last, so a read's COMMIT goes with it:
// one round trip. Keys, the search quota and audit use pools of their own.

// When the encounters asked for under it differ in window (aliases with other `first` or `after`),
// they are read through the loader, a statement per window, and the patient's statement reads none.
async function byIdentifier(ctx: GraphQLContext, info: GraphQLResolveInfo, kind: IdentifierKind, raw: string) {
  const window = encounterWindowAt(ctx, info, ENCOUNTERS);
  const encounters = window === null ? null : { columns: encounterColumnsFor(ctx), window };
  if (isOnlyRootField(info) && (window !== null || !selectsPath(info, ENCOUNTERS))) ctx.tx.endWithNext();
  const hit = await searchPatient(ctx, kind, raw, encounters);
  if (hit === null) return null;
  if (encounters !== null && hit.encounters !== null) ctx.loaders.primeEncounters(encounters.columns, encounters.window, hit.encounters.rows, hit.encounters.encountersOf);
  ctx.loaders.patient.prime(hit.row.id, hit.row);
  return hit.row;
}

builder.queryFields((t) => ({
  me: t.field({ type: Viewer, resolve: (_r, _a, ctx) => ctx.principal }),

  patient: t.field({
    type: Patient,
    nullable: true,
    description: 'null where the patient does not exist or row security hides it.',
    authScopes: { patientReader: true },
    args: { id: t.arg.id({ required: true }) },
    resolve: async (_r, args, ctx, info) => {
      const id = v.id('id', String(args.id));
      const window = encounterWindowAt(ctx, info, ENCOUNTERS);
      if (isOnlyRootField(info) && (window !== null || !selectsPath(info, ENCOUNTERS))) ctx.tx.endWithNext();
      if (window === null) return ctx.loaders.patient.load(id);
      const columns = encounterColumnsFor(ctx);
      const read = await patientWithEncounters(ctx.tx, id, columns, window);
      const row = read.rows[0] ?? null;
      if (row === null) return null;
      ctx.loaders.primeEncounters(columns, window, read.rows, read.encountersOf);
      ctx.loaders.patient.prime(row.id, row);
      return row;
    },
  }),

  patients: t.field({
    type: PatientConnection,
    authScopes: { patientReader: true },
    args: { first: t.arg.int(), after: t.arg.string() },
    resolve: async (_r, args, ctx, info) => {
      const first = args.first ?? 20;
      if (first < 1 || first > ctx.maxPageSize) throw new PhigateError('BAD_USER_INPUT', `first must be between 1 and ${ctx.maxPageSize}.`);
      const after = args.after == null ? null : decodeCursor(args.after);
      if (args.after != null && after === null) throw new PhigateError('BAD_USER_INPUT', 'after is not a cursor this API issued.');
      // Alone in its operation, the page's statement is its request's last (nothing under a page
      // reads the database again: its encounters come with it), so a read's COMMIT goes with it.
      const window = encounterWindowAt(ctx, info, ENCOUNTERS_OF_PAGE);
      if (isOnlyRootField(info) && (window !== null || !selectsPath(info, ENCOUNTERS_OF_PAGE))) ctx.tx.endWithNext();
      // The page's encounters read in the page's own statement, in hand before its patients'
      // fields resolve: each patient's `encounters` is then a plain value, not a promise.
      let rows: PatientRow[];
      if (window !== null) {
        const columns = encounterColumnsFor(ctx);
        const read = await patientPageWithEncounters(ctx.tx, after, first + 1, columns, window, pageWalkFor(ctx));
        rows = read.rows;
        ctx.loaders.primeEncounters(columns, window, rows.slice(0, first), read.encountersOf);
      } else {
        rows = await patientPage(ctx.tx, after, first + 1, pageWalkFor(ctx));
      }
      const page = rows.slice(0, first);
      for (const r of page) ctx.loaders.patient.prime(r.id, r);
      return { rows: page, hasNextPage: rows.length > first };
    },
  }),

  patientByMrn: t.field({
    type: Patient,
    nullable: true,
    description:
      'Exact match through the blind index; nothing is decrypted to search. Needs a role that sees mrn in full; every search is audited with its outcome and counted against the caller\'s PHI and search limits.',
    args: { mrn: t.arg.string({ required: true }) },
    resolve: (_r, args, ctx, info) => byIdentifier(ctx, info, 'mrn', args.mrn),
  }),

  patientBySsn: t.field({
    type: Patient,
    nullable: true,
    description:
      'Exact match through the blind index; nothing is decrypted to search. Needs a role that sees ssn in full; every search is audited with its outcome and counted against the caller\'s PHI and search limits.',
    args: { ssn: t.arg.string({ required: true }) },
    resolve: (_r, args, ctx, info) => byIdentifier(ctx, info, 'ssn', args.ssn),
  }),
}));
