import type { ClinicDirectory } from '../db/clinics.ts';
import { dbUnavailable } from '../db/failure.ts';
import type { Principal } from './principal.ts';
import { tokenRefused } from './token-refused.ts';

/**
 * Bounds what a token's clinic claim can cost: every clinic named multiplies per-lookup key work
 * (a blind index per clinic key), so a token naming more than `maxClinics` is refused outright,
 * and clinics the database does not know are dropped (they could grant nothing, but would still
 * be tried). An unreadable directory fails closed: the request is refused, not let through unchecked.
 */
export async function withKnownClinics(principal: Principal, opts: { maxClinics: number; directory: ClinicDirectory }): Promise<Principal> {
  if (principal.clinics.length > opts.maxClinics) throw tokenRefused('too_many_clinics');
  if (principal.clinics.length === 0) return principal;
  let existing: ReadonlySet<string>;
  try {
    existing = await opts.directory.existing(principal.clinics);
  } catch (cause) {
    throw dbUnavailable(cause);
  }
  if (principal.clinics.every((c) => existing.has(c))) return principal;
  return Object.freeze({ ...principal, clinics: Object.freeze(principal.clinics.filter((c) => existing.has(c))) });
}
