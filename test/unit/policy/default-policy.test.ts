import { describe, expect, it } from 'vitest';
import { canPerform, mayEverSee, purposeFor, rolesForRow, searchRole } from '../../../src/policy/decide.ts';
import { loadPolicy } from '../../../src/policy/load.ts';
import { OPERATIONS } from '../../../src/policy/operations.ts';
import { PHI_FIELDS } from '../../../src/policy/phi-fields.ts';
import type { Effect, RowScope } from '../../../src/policy/types.ts';
import { CLINIC, DEFAULT_POLICY_FILE, OTHER_CLINIC, decisionOf, partner, principal as user } from './fixtures.ts';

const policy = await loadPolicy(DEFAULT_POLICY_FILE, PHI_FIELDS);

// The contract's table, written out field by field. A PHI field added to the catalog fails the
// coverage test below until someone decides it here.
const A: Effect = 'allow';
const M: Effect = 'mask';
const D: Effect = 'deny';
const FIELDS = ['mrn', 'ssn', 'givenName', 'familyName', 'birthDate', 'phone', 'email', 'address', 'occurredAt', 'kind', 'reason', 'diagnosisCodes', 'notes'] as const;
const EXPECTED: Record<string, { rows: RowScope; purpose: string; fields: readonly Effect[] }> = {
  //                                                                  mrn ssn giv fam bir pho ema add occ kin rea dia not
  physician: { rows: 'care_team', purpose: 'treatment', fields:       [A,  M,  A,  A,  A,  A,  A,  A,  A,  A,  A,  A,  A] },
  nurse: { rows: 'care_team', purpose: 'treatment', fields:           [A,  M,  A,  A,  A,  A,  A,  A,  A,  A,  A,  A,  D] },
  registrar: { rows: 'clinic', purpose: 'healthcare_operations', fields: [A, A, A, A, A,  A,  A,  A,  A,  A,  D,  D,  D] },
  billing: { rows: 'clinic', purpose: 'payment', fields:              [A,  D,  A,  A,  A,  A,  A,  A,  A,  A,  D,  A,  D] },
  compliance: { rows: 'none', purpose: 'healthcare_operations', fields: [D, D, D, D, D,  D,  D,  D,  D,  D,  D,  D,  D] },
  clinic_admin: { rows: 'clinic', purpose: 'healthcare_operations', fields: [D, D, D, D, D, D, D, D, D,  D,  D,  D,  D] },
  // The ceiling of every API key; the key holding every field, with the role's purpose, shows it whole.
  partner: { rows: 'clinic', purpose: 'HOPERAT', fields:             [A,  M,  A,  A,  A,  A,  A,  A,  A,  A,  A,  A,  D] },
};

const ALL_FIELDS = Object.entries(PHI_FIELDS).flatMap(([type, names]) => names.map((name) => `${type}.${name}`));
/** The `partner` role is held by partner principals only; a partner cannot lack MFA (its key is its factor set). */
const principal = (roles: readonly string[], options: { mfa?: boolean } = {}) =>
  roles.includes('partner') ? partner(ALL_FIELDS) : user(roles, options);

const typeOf = (field: string): string =>
  Object.entries(PHI_FIELDS).find(([, names]) => (names as readonly string[]).includes(field))![0];

const ROWS = [
  { name: 'on the care team', row: { clinicId: CLINIC, onCareTeam: true }, covered: ['care_team', 'clinic'] },
  { name: 'of its clinic, off the care team', row: { clinicId: CLINIC, onCareTeam: false }, covered: ['clinic'] },
  { name: 'of another clinic, on the care team', row: { clinicId: OTHER_CLINIC, onCareTeam: true }, covered: [] },
  { name: 'of another clinic, off the care team', row: { clinicId: OTHER_CLINIC, onCareTeam: false }, covered: [] },
];

const matrix = Object.entries(EXPECTED).flatMap(([role, expected]) =>
  ROWS.flatMap(({ name, row, covered }) =>
    FIELDS.map((field, index) => {
      const effect = covered.includes(expected.rows) ? expected.fields[index]! : D;
      return { role, rowName: name, row, type: typeOf(field), field, effect };
    }),
  ),
);

describe('policies/default.yaml', () => {
  it('decides exactly the PHI fields of the catalog', () => {
    expect(FIELDS.map((field) => `${typeOf(field)}.${field}`)).toEqual(
      Object.entries(PHI_FIELDS).flatMap(([type, names]) => names.map((name) => `${type}.${name}`)),
    );
    expect([...policy.roles.keys()].sort()).toEqual(Object.keys(EXPECTED).sort());
  });

  it.each(Object.entries(EXPECTED))('%s: row scope, purpose and MFA', (role, expected) => {
    const rolePolicy = policy.roles.get(role)!;
    expect(rolePolicy.rows).toBe(expected.rows);
    expect(rolePolicy.mfaRequired).toBe(true);
    expect(purposeFor(policy, principal([role]), role)).toBe(expected.purpose);
  });

  it.each(matrix)('$role, patient $rowName: $type.$field is $effect', ({ role, row, type, field, effect }) => {
    const decision = decisionOf(policy, principal([role]), row, type, field);
    expect(decision).toEqual({ effect, role: effect === D ? null : role, viaGrant: false });
  });

  it.each(Object.keys(EXPECTED))('%s sees a row only within its scope', (role) => {
    const scope = EXPECTED[role]!.rows;
    for (const { row, covered } of ROWS) {
      expect(rolesForRow(policy, principal([role]), row).map((r) => r.name)).toEqual(covered.includes(scope) ? [role] : []);
    }
  });

  const OPERATIONS_BY_ROLE: Record<string, readonly string[]> = {
    physician: ['updatePatient', 'addEncounter', 'breakGlass'],
    nurse: ['addEncounter', 'breakGlass'],
    registrar: ['createPatient', 'updatePatient'],
    billing: [],
    compliance: ['reviewBreakGlass', 'readAuditTrail'],
    clinic_admin: ['setCareTeam', 'createApiKey', 'rotateApiKey', 'revokeApiKey'],
    partner: [],
  };
  const operationMatrix = Object.entries(OPERATIONS_BY_ROLE).flatMap(([role, granted]) =>
    OPERATIONS.map((operation) => ({ role, operation, allowed: granted.includes(operation) })),
  );

  it.each(operationMatrix)('$role may call $operation: $allowed (with MFA)', ({ role, operation, allowed }) => {
    expect(canPerform(policy, principal([role]), operation)).toBe(allowed);
  });

  it.each(operationMatrix)('$role may not call $operation without MFA', ({ role, operation }) => {
    expect(canPerform(policy, principal([role], { mfa: false }), operation)).toBe(false);
  });
});

describe('partner keys within the partner role', () => {
  const row = { clinicId: CLINIC, onCareTeam: false };

  it("see the intersection of the role's fields and the key's", () => {
    const key = partner(['Patient.mrn', 'Patient.ssn', 'Encounter.notes']);
    expect(decisionOf(policy, key, row, 'Patient', 'mrn')).toEqual({ effect: 'allow', role: 'partner', viaGrant: false });
    expect(decisionOf(policy, key, row, 'Patient', 'ssn')).toEqual({ effect: 'mask', role: 'partner', viaGrant: false });
    // In the key, but the role denies it.
    expect(decisionOf(policy, key, row, 'Encounter', 'notes')).toEqual({ effect: 'deny', role: null, viaGrant: false });
    // Allowed by the role, but not in the key.
    expect(decisionOf(policy, key, row, 'Patient', 'givenName')).toEqual({ effect: 'deny', role: null, viaGrant: false });
    expect(decisionOf(policy, key, { clinicId: OTHER_CLINIC, onCareTeam: false }, 'Patient', 'mrn')).toEqual({ effect: 'deny', role: null, viaGrant: false });
  });

  // A search confirms the identifier it was given: a key finds patients by an identifier only when
  // it may read that identifier in full, as for a user's role.
  it("search by an identifier only when the key names it and the role shows it whole", () => {
    expect(searchRole(policy, partner(['Patient.mrn']), 'Patient.mrn')?.name).toBe('partner');
    expect(searchRole(policy, partner(['Patient.givenName']), 'Patient.mrn')).toBeNull();
    expect(searchRole(policy, partner([]), 'Patient.mrn')).toBeNull();
    // In the key, but the role masks it.
    expect(searchRole(policy, partner(['Patient.ssn', 'Patient.mrn']), 'Patient.ssn')).toBeNull();
  });

  it("may ever see only the fields in both the key and the role", () => {
    const key = partner(['Patient.mrn', 'Encounter.notes']);
    expect(mayEverSee(policy, key, 'Patient.mrn')).toBe(true);
    expect(mayEverSee(policy, key, 'Patient.givenName')).toBe(false);
    expect(mayEverSee(policy, key, 'Encounter.notes')).toBe(false);
  });

  it("audit the key's purpose of use, not the role's", () => {
    expect(purposeFor(policy, partner(['Patient.mrn'], { purpose: 'PUBHLTH' }), 'partner')).toBe('PUBHLTH');
  });

  it('a user whose token claims the partner role holds nothing by it', () => {
    expect(rolesForRow(policy, user(['partner']), row)).toEqual([]);
    expect(decisionOf(policy, user(['partner']), row, 'Patient', 'mrn')).toEqual({ effect: 'deny', role: null, viaGrant: false });
  });
});
