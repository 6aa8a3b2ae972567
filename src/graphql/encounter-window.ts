import { getArgumentValues, isObjectType, type GraphQLResolveInfo } from 'graphql';
import type { EncounterWindow } from '../db/patients.ts';
import { mayAlwaysSee } from '../policy/decide.ts';
import { PhigateError } from '../errors.ts';
import * as v from '../records/validate.ts';
import type { GraphQLContext } from './context.ts';
import { selectedAt } from './selects.ts';

export interface EncounterArgs {
  readonly first?: number | null;
  readonly after?: string | null;
}

/**
 * The window `Patient.encounters(first, after)` asks for: `first` from 1 to the request's bound
 * (PHIGATE_MAX_ENCOUNTERS, also the default, which the query limits price it at), `after` an
 * encounter id. Anything else is BAD_USER_INPUT, before any statement. Newest first only for a
 * principal every row of which shows it the visit dates; any other pages by id.
 */
export function encounterWindow(ctx: Pick<GraphQLContext, 'maxEncounters' | 'policy' | 'principal'>, args: EncounterArgs): EncounterWindow {
  const first = args.first ?? ctx.maxEncounters;
  if (!Number.isInteger(first) || first < 1 || first > ctx.maxEncounters) {
    throw new PhigateError('BAD_USER_INPUT', `encounters: first must be between 1 and ${ctx.maxEncounters}.`);
  }
  const byDate = mayAlwaysSee(ctx.policy, ctx.principal, 'Encounter.occurredAt');
  return { first, after: args.after == null ? null : v.id('encounters: after', args.after), byDate };
}

const sameWindow = (a: EncounterWindow, b: EncounterWindow): boolean => a.first === b.first && a.after === b.after && a.byDate === b.byDate;

/**
 * The one window every `encounters` at `path` below the field being resolved asks for, so that the
 * patient's statement can read them with it; null when they ask for different windows, or one of
 * them a window that is not valid: each then reads its own through the loader, which refuses a bad one.
 */
export function encounterWindowAt(ctx: GraphQLContext, info: GraphQLResolveInfo, path: readonly string[]): EncounterWindow | null {
  const patient = info.schema.getType('Patient');
  const def = isObjectType(patient) ? patient.getFields().encounters : undefined;
  if (def === undefined) return null;
  let window: EncounterWindow | null = null;
  for (const node of selectedAt(info, path)) {
    let asked: EncounterWindow;
    try {
      asked = encounterWindow(ctx, getArgumentValues(def, node, info.variableValues) as EncounterArgs);
    } catch {
      return null;
    }
    if (window !== null && !sameWindow(window, asked)) return null;
    window = asked;
  }
  return window;
}
