import { expect } from 'vitest';
import type { SeedPatient } from '../../src/seed/dataset.ts';
import type { GqlResponse, TestGateway } from './gateway.ts';

/**
 * Small expectations shared by the GraphQL integration tests of isolation, mutations and lookups:
 * error codes of a response, refusals that do not echo the refused value, and which seeded
 * patients a staff member may see according to the contract (computed from the seed manifest,
 * not from the gateway's own code).
 */

export const codesOf = (r: GqlResponse): string[] => (r.body.errors ?? []).map((e) => String(e.extensions?.code));

/**
 * The response is a refusal with exactly `code`, no data at `field` (or no data at all), and no
 * error message repeats `value` (it may be PHI) or carries SQL.
 */
export function expectRefused(r: GqlResponse, code: string, field: string, value?: string): void {
  expect(codesOf(r), r.text).toEqual([code]);
  expect(r.body.data?.[field] ?? null).toBeNull();
  const message = r.body.errors![0]!.message;
  if (value !== undefined && value.trim().length >= 2) expect(message).not.toContain(value.trim());
  expect(r.text).not.toMatch(/\bSELECT\b|\bINSERT\b|\bUPDATE phigate|phigate\.\w+|SQLSTATE|violates/);
}

/** A BAD_USER_INPUT whose message names `name` and does not echo `value`. */
export function expectBadInput(r: GqlResponse, field: string, name: string, value?: string): void {
  expectRefused(r, 'BAD_USER_INPUT', field, value);
  expect(r.body.errors![0]!.message).toContain(name);
}

/**
 * Seeded patients that a staff member sees under the contract's row scopes: registrar, billing and
 * clinic_admin every patient of their clinics; physician and nurse those of their clinics on whose
 * care team they are.
 */
export function visibleTo(gw: TestGateway, sub: string, clinics?: readonly string[]): SeedPatient[] {
  const s = gw.staff(sub);
  const inClinic = (p: SeedPatient) => (clinics ?? s.clinics).includes(p.clinicId);
  const clinicWide = s.roles.some((r) => ['registrar', 'billing', 'clinic_admin'].includes(r));
  const careTeam = s.roles.some((r) => ['physician', 'nurse'].includes(r));
  return gw.data.patients.filter((p) => inClinic(p) && (clinicWide || (careTeam && p.careTeam.includes(sub))));
}

/** Each digit and hyphen of `s` as its fullwidth form (U+FF10.., U+FF0D), as some keyboards type them. */
export const fullwidth = (s: string): string =>
  [...s].map((ch) => (/[0-9]/.test(ch) ? String.fromCharCode(0xff10 + Number(ch)) : ch === '-' ? '\uff0d' : ch)).join('');

/** Each ASCII digit of `s` as an Arabic-Indic digit (U+0660..): a lookalike that must not match. */
export const arabicIndic = (s: string): string => s.replace(/[0-9]/g, (d) => String.fromCharCode(0x0660 + Number(d)));

export const sorted = (xs: Iterable<string>): string[] => [...xs].sort();
