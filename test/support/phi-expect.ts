import { expect } from 'vitest';
import { loadPolicy } from '../../src/policy/load.ts';
import { PHI_FIELDS } from '../../src/policy/phi-fields.ts';
import type { Effect, PolicySet } from '../../src/policy/types.ts';
import type { SeedPatient } from '../../src/seed/dataset.ts';
import { POLICY_FILE, type GqlResponse, type TestGateway } from './gateway.ts';

/**
 * Shared expectations for tests that read PHI over GraphQL: what the policy FILE says each role
 * sees (computed here from the parsed file, not with the gateway's own decision code), the
 * stored column of each PHI field, decryption counting and leak checks on response text.
 */

export type PatientPhiField = (typeof PHI_FIELDS.Patient)[number];
export type EncounterPhiField = (typeof PHI_FIELDS.Encounter)[number];
export type PhiTypeName = 'Patient' | 'Encounter';

export const PATIENT_PHI: readonly PatientPhiField[] = PHI_FIELDS.Patient;
export const ENCOUNTER_PHI: readonly EncounterPhiField[] = PHI_FIELDS.Encounter;

/**
 * `table.column` keys of FieldCipherStats.decryptsByColumn, written out independently of src/db.
 * Encounter.occurredAt has none: it is stored in plaintext (README, "Visit dates and kinds").
 */
export const COLUMN: Readonly<Record<string, string>> = {
  'Patient.mrn': 'patients.mrn',
  'Patient.ssn': 'patients.ssn',
  'Patient.givenName': 'patients.given_name',
  'Patient.familyName': 'patients.family_name',
  'Patient.birthDate': 'patients.birth_date',
  'Patient.phone': 'patients.phone',
  'Patient.email': 'patients.email',
  'Patient.address': 'patients.address',
  'Encounter.kind': 'encounters.kind',
  'Encounter.reason': 'encounters.reason',
  'Encounter.diagnosisCodes': 'encounters.diagnosis_codes',
  'Encounter.notes': 'encounters.notes',
};
export const ALL_COLUMNS = Object.values(COLUMN);

/** Every PHI field of Patient and of its encounters, plus the non-PHI fields that must still stand. */
export const PATIENT_SELECTION = `id clinicId ${PATIENT_PHI.join(' ')}
  encounters { id patientId ${ENCOUNTER_PHI.join(' ')} }`;

export const loadDefaultPolicy = (): Promise<PolicySet> => loadPolicy(POLICY_FILE, PHI_FIELDS);

const RANK: Record<Effect, number> = { deny: 0, mask: 1, allow: 2 };

export interface Expected {
  readonly effect: Effect;
  /** Roles (held, covering the row) that give this effect; empty when denied. */
  readonly grantingRoles: readonly string[];
}

/**
 * What the policy file says a principal with `roles` sees of `Type.field` on a row of its clinic:
 * the most generous effect among the held roles whose row scope covers the row.
 */
export function expectedEffect(policy: PolicySet, roles: readonly string[], onCareTeam: boolean, type: PhiTypeName, field: string): Expected {
  let best: Effect = 'deny';
  let granting: string[] = [];
  for (const name of roles) {
    const role = policy.roles.get(name);
    if (!role) continue;
    const covers = role.rows === 'clinic' || (role.rows === 'care_team' && onCareTeam);
    if (!covers) continue;
    const effect = role.fields.get(`${type}.${field}`);
    if (effect === undefined) throw new Error(`policy has no effect for ${name} ${type}.${field}`);
    if (RANK[effect] > RANK[best]) {
      best = effect;
      granting = [name];
    } else if (effect === best && effect !== 'deny') {
      granting.push(name);
    }
  }
  return { effect: best, grantingRoles: best === 'deny' ? [] : granting };
}

export const maskSsn = (ssn: string): string => `***-**-${ssn.replace(/\D/g, '').slice(-4)}`;

// ---- decryption counting ----------------------------------------------------------------------

export type DecryptSnapshot = ReadonlyMap<string, number>;

export const snapshotDecrypts = (gw: TestGateway): DecryptSnapshot => new Map(gw.cipher.stats.decryptsByColumn);

/** How many decryptions each column had between two snapshots (every known column, 0 when none). */
export function decryptDelta(before: DecryptSnapshot, after: DecryptSnapshot): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of new Set([...ALL_COLUMNS, ...before.keys(), ...after.keys()])) out[c] = (after.get(c) ?? 0) - (before.get(c) ?? 0);
  return out;
}

export const zeroDelta = (): Record<string, number> => Object.fromEntries(ALL_COLUMNS.map((c) => [c, 0]));

// ---- leak checks -------------------------------------------------------------------------------

type GqlError = NonNullable<GqlResponse['body']['errors']>[number];

/** No stack trace, SQL text or internals in any error of a response. */
export function expectCleanErrors(r: GqlResponse): void {
  for (const e of r.body.errors ?? []) {
    const text = JSON.stringify(e);
    expect(text).not.toMatch(/\bat [^ ]+ \(|\.ts:\d+|\.js:\d+|node_modules|stack/i);
    expect(text).not.toMatch(/\b(SELECT|INSERT|UPDATE|DELETE)\b|\bFROM phigate\b|phigate\.\w+|relation "|violates|SQLSTATE/i);
    expect(Object.keys(e.extensions ?? {}).filter((k) => !['code', 'reason', 'http'].includes(k))).toEqual([]);
    expect(typeof e.extensions?.code).toBe('string');
  }
}

/** Every PHI string of the seeded data set (and SSN digit forms) that could leak. */
export function seededSecrets(patients: readonly SeedPatient[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const p of patients) {
    for (const f of PATIENT_PHI) out.set(p[f], `${p.id} Patient.${f}`);
    out.set(p.ssn.replace(/\D/g, ''), `${p.id} Patient.ssn (digits)`);
    for (const e of p.encounters) {
      out.set(e.reason, `${e.id} Encounter.reason`);
      out.set(e.notes, `${e.id} Encounter.notes`);
      for (const c of e.diagnosisCodes) out.set(c, `${e.id} Encounter.diagnosisCodes`);
    }
  }
  return out;
}

/** Error bodies never carry a seeded PHI value, whether or not the same request returned it as data. */
export function expectNoPhiInErrors(r: GqlResponse, patients: readonly SeedPatient[]): void {
  const errors = JSON.stringify(r.body.errors ?? []);
  for (const [secret, what] of seededSecrets(patients)) {
    if (errors.includes(secret)) throw new Error(`error body carries ${what}`);
  }
}

/** `text` contains none of `secrets` except those in `returned` (values the caller may see). */
export function expectAbsentExcept(text: string, secrets: Iterable<string>, returned: ReadonlySet<string> = new Set()): void {
  for (const s of secrets) {
    if (returned.has(s)) continue;
    if (text.includes(s)) throw new Error(`response carries a value it must not: ${JSON.stringify(s.slice(0, 3))}...`);
  }
}

export const errorAt = (r: GqlResponse, path: readonly (string | number)[]): GqlError[] =>
  (r.body.errors ?? []).filter((e) => JSON.stringify(e.path ?? null) === JSON.stringify(path));
