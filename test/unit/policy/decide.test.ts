import { describe, expect, it } from 'vitest';
import {
  canPerform,
  decideWrite,
  fieldVerdict,
  knownRoles,
  mayEverSee,
  mfaBlocks,
  purposeFor,
  rolesForRow,
  writeRolesForRow,
} from '../../../src/policy/decide.ts';
import { loadPolicy } from '../../../src/policy/load.ts';
import { PHI_FIELDS } from '../../../src/policy/phi-fields.ts';
import type { Effect, PolicySet, RolePolicy } from '../../../src/policy/types.ts';
import { CLINIC, DEFAULT_POLICY_FILE, OTHER_CLINIC, decisionOf, partner, principal } from './fixtures.ts';

const policy = await loadPolicy(DEFAULT_POLICY_FILE, PHI_FIELDS);

const ON_TEAM = { clinicId: CLINIC, onCareTeam: true };
const OFF_TEAM = { clinicId: CLINIC, onCareTeam: false };
const ELSEWHERE = { clinicId: OTHER_CLINIC, onCareTeam: true };

const names = (roles: readonly RolePolicy[]): string[] => roles.map((role) => role.name);

describe('a principal with several roles', () => {
  const registrarPhysician = principal(['registrar', 'physician']);

  it.each([
    // Off the care team only the registrar's rules apply: identity yes, clinical content no.
    [OFF_TEAM, 'Patient', 'ssn', 'allow', 'registrar'],
    [OFF_TEAM, 'Patient', 'givenName', 'allow', 'registrar'],
    [OFF_TEAM, 'Encounter', 'notes', 'deny', null],
    [OFF_TEAM, 'Encounter', 'reason', 'deny', null],
    [OFF_TEAM, 'Encounter', 'diagnosisCodes', 'deny', null],
    // On the care team the union: the registrar's full SSN beats the physician's mask.
    [ON_TEAM, 'Patient', 'ssn', 'allow', 'registrar'],
    [ON_TEAM, 'Patient', 'givenName', 'allow', 'physician'],
    [ON_TEAM, 'Encounter', 'notes', 'allow', 'physician'],
    [ON_TEAM, 'Encounter', 'reason', 'allow', 'physician'],
    [ELSEWHERE, 'Patient', 'givenName', 'deny', null],
    [ELSEWHERE, 'Encounter', 'notes', 'deny', null],
  ] as const)('registrar + physician, row %o: %s.%s is %s by %s', (row, type, field, effect, role) => {
    expect(decisionOf(policy, registrarPhysician, row, type, field)).toEqual({ effect, role, viaGrant: false });
  });

  it('registrar + physician: the covering roles depend on the row', () => {
    expect(names(rolesForRow(policy, registrarPhysician, ON_TEAM))).toEqual(['physician', 'registrar']);
    expect(names(rolesForRow(policy, registrarPhysician, OFF_TEAM))).toEqual(['registrar']);
    expect(rolesForRow(policy, registrarPhysician, ELSEWHERE)).toEqual([]);
  });

  it.each([
    [ON_TEAM, 'Patient', 'ssn', 'mask', 'nurse'],
    [ON_TEAM, 'Encounter', 'diagnosisCodes', 'allow', 'nurse'],
    [ON_TEAM, 'Encounter', 'notes', 'deny', null],
    [OFF_TEAM, 'Patient', 'ssn', 'deny', null],
    [OFF_TEAM, 'Patient', 'mrn', 'allow', 'billing'],
    [OFF_TEAM, 'Encounter', 'diagnosisCodes', 'allow', 'billing'],
    [OFF_TEAM, 'Encounter', 'reason', 'deny', null],
  ] as const)('nurse + billing, row %o: %s.%s is %s by %s', (row, type, field, effect, role) => {
    expect(decisionOf(policy, principal(['nurse', 'billing']), row, type, field)).toEqual({ effect, role, viaGrant: false });
  });

  it('physician + clinic_admin sees a patient off its care team, but none of its PHI', () => {
    const both = principal(['physician', 'clinic_admin']);
    expect(names(rolesForRow(policy, both, OFF_TEAM))).toEqual(['clinic_admin']);
    for (const [type, fields] of Object.entries(PHI_FIELDS)) {
      for (const field of fields) expect(decisionOf(policy, both, OFF_TEAM, type, field).effect).toBe('deny');
    }
    expect(decisionOf(policy, both, ON_TEAM, 'Encounter', 'notes')).toEqual({ effect: 'allow', role: 'physician', viaGrant: false });
  });

  it('may perform what any of its roles may', () => {
    const both = principal(['nurse', 'clinic_admin']);
    expect(canPerform(policy, both, 'addEncounter')).toBe(true);
    expect(canPerform(policy, both, 'setCareTeam')).toBe(true);
    expect(canPerform(policy, both, 'createPatient')).toBe(false);
  });

  it('gets a row only for clinics in its token, whatever the care team says', () => {
    const elsewhere = principal(['physician', 'registrar'], { clinics: [OTHER_CLINIC] });
    expect(rolesForRow(policy, elsewhere, ON_TEAM)).toEqual([]);
    expect(names(rolesForRow(policy, elsewhere, ELSEWHERE))).toEqual(['physician', 'registrar']);
    expect(rolesForRow(policy, principal(['physician'], { clinics: [] }), ON_TEAM)).toEqual([]);
  });
});

describe('roles the policy does not know', () => {
  it('are ignored', () => {
    const withUnknown = principal(['superuser', 'physician', 'PHYSICIAN']);
    expect(names(knownRoles(policy, withUnknown))).toEqual(['physician']);
    expect(decisionOf(policy, withUnknown, OFF_TEAM, 'Patient', 'givenName')).toEqual({ effect: 'deny', role: null, viaGrant: false });
    expect(canPerform(policy, withUnknown, 'createPatient')).toBe(false);
  });

  it('grant nothing on their own', () => {
    const stranger = principal(['admin', 'root'], { mfa: false });
    expect(knownRoles(policy, stranger)).toEqual([]);
    expect(decisionOf(policy, stranger, ON_TEAM, 'Patient', 'mrn')).toEqual({ effect: 'deny', role: null, viaGrant: false });
    expect(canPerform(policy, stranger, 'setCareTeam')).toBe(false);
    expect(mfaBlocks(policy, stranger)).toBe(false);
    expect(purposeFor(policy, stranger, 'admin')).toBe('unspecified');
  });
});

describe('knownRoles', () => {
  it('follows the policy order and lists each role once, however the token lists them', () => {
    expect(names(knownRoles(policy, principal(['billing', 'nurse', 'billing', 'physician'])))).toEqual([
      'physician',
      'nurse',
      'billing',
    ]);
  });
});

describe('a field the policy does not name', () => {
  it('is denied', () => {
    expect(decisionOf(policy, principal(['physician']), ON_TEAM, 'Patient', 'favouriteColour')).toEqual({ effect: 'deny', role: null, viaGrant: false });
    expect(decisionOf(policy, principal(['physician']), ON_TEAM, 'Invoice', 'amount').effect).toBe('deny');
  });
});

describe('fieldVerdict', () => {
  const registrarPhysician = principal(['registrar', 'physician']);

  it.each([
    [ON_TEAM, 'Patient.givenName', 'allow', 'physician', 'physician', 'treatment'],
    [OFF_TEAM, 'Patient.ssn', 'allow', 'registrar', 'registrar', 'healthcare_operations'],
    // A refusal is recorded in the first role that covers the row: the capacity of the attempt.
    [OFF_TEAM, 'Encounter.notes', 'deny', null, 'registrar', 'healthcare_operations'],
    // A row outside the principal's clinics is covered by no role at all.
    [ELSEWHERE, 'Patient.givenName', 'deny', null, null, 'unspecified'],
  ] as const)('registrar + physician, row %o: %s is %s by %s, recorded as %s for %s', (row, name, effect, role, recordedRole, purpose) => {
    expect(fieldVerdict(policy, registrarPhysician, row, name)).toEqual({ effect, role, viaGrant: false, recordedRole, purpose, breakGlass: false });
  });

  it('keeps one verdict per clinic, care-team standing and field, apart for each principal', () => {
    const first = fieldVerdict(policy, registrarPhysician, ON_TEAM, 'Encounter.notes');
    expect(fieldVerdict(policy, registrarPhysician, { ...ON_TEAM }, 'Encounter.notes')).toBe(first);
    expect(fieldVerdict(policy, registrarPhysician, OFF_TEAM, 'Encounter.notes')).not.toEqual(first);
    expect(fieldVerdict(policy, principal(['registrar']), ON_TEAM, 'Encounter.notes').effect).toBe('deny');
    expect(first.effect).toBe('allow');
  });

  // The policy's roles, counting how often a verdict is worked out from them (knownRoles reads them).
  const counted = (): { policy: PolicySet; lookups: () => number } => {
    let lookups = 0;
    const roles = new (class extends Map<string, RolePolicy> {
      override values() {
        lookups++;
        return super.values();
      }
    })(policy.roles);
    return { policy: { ...policy, roles }, lookups: () => lookups };
  };

  it('keeps the verdicts of rows seen through a break-glass grant too: a page of them costs what one row does', () => {
    const nurse = principal(['nurse']);
    const names = Object.entries(PHI_FIELDS).flatMap(([type, fields]) => fields.map((field) => `${type}.${field}`));
    const grantRow = (i: number) => ({ clinicId: CLINIC, onCareTeam: false, grant: { id: `grant-${i}`, role: 'nurse' } });
    const { policy: countedPolicy, lookups } = counted();
    for (const name of names) fieldVerdict(countedPolicy, nurse, grantRow(0), name);
    const oneRow = lookups();
    expect(oneRow).toBeGreaterThan(0);
    for (let i = 1; i < 100; i++) for (const name of names) fieldVerdict(countedPolicy, nurse, grantRow(i), name);
    expect(lookups()).toBe(oneRow);
    // The grant's id is not part of a verdict (the audit row takes it from the row): one verdict serves every grant.
    expect(fieldVerdict(countedPolicy, nurse, grantRow(7), 'Patient.givenName')).toBe(fieldVerdict(countedPolicy, nurse, grantRow(8), 'Patient.givenName'));
    expect(fieldVerdict(countedPolicy, nurse, grantRow(7), 'Patient.givenName')).toMatchObject({ effect: 'allow', breakGlass: true, purpose: 'emergency_treatment' });
  });

  it('answers each call for its own principal, policy, clinic, standing and grant role, however calls alternate', () => {
    const principals = [principal(['registrar']), principal(['physician']), principal(['nurse']), principal(['physician', 'nurse'])];
    const rows = [ON_TEAM, OFF_TEAM, ELSEWHERE, { ...OFF_TEAM, grant: { id: 'g-1', role: 'nurse' } }, { ...OFF_TEAM, grant: { id: 'g-2', role: 'physician' } }];
    const fields = ['Patient.ssn', 'Encounter.notes', 'Encounter.reason'];
    const restrictive: PolicySet = { ...policy, roles: new Map([...policy.roles].map(([name, role]) => [name, { ...role, fields: new Map() }])) };
    // Each call is judged alone, on a copy of its policy no other call has used.
    const alone = (p: PolicySet, who: (typeof principals)[number], row: (typeof rows)[number], name: string) =>
      fieldVerdict({ ...p, roles: new Map(p.roles) }, who, row, name);
    const calls = principals.flatMap((who) => rows.flatMap((row) => fields.flatMap((name) => [policy, restrictive].map((p) => ({ p, who, row, name })))));
    const expected = calls.map(({ p, who, row, name }) => alone(p, who, row, name));
    expect(new Set(expected.map((v) => v.effect))).toEqual(new Set(['allow', 'mask', 'deny']));
    // Every call right after every other, so each part of the key is the only one to change in some pair.
    for (const before of calls) {
      for (const [i, { p, who, row, name }] of calls.entries()) {
        fieldVerdict(before.p, before.who, before.row, before.name);
        expect(fieldVerdict(p, who, row, name)).toEqual(expected[i]);
      }
    }
  });

  it('keeps verdicts apart by the grant\'s role and from rows seen without one', () => {
    const physicianNurse = principal(['physician', 'nurse']);
    const asNurse = { clinicId: CLINIC, onCareTeam: false, grant: { id: 'g-1', role: 'nurse' } };
    const asPhysician = { clinicId: CLINIC, onCareTeam: false, grant: { id: 'g-2', role: 'physician' } };
    expect(fieldVerdict(policy, physicianNurse, asNurse, 'Encounter.notes')).toMatchObject({ effect: 'deny', breakGlass: true });
    expect(fieldVerdict(policy, physicianNurse, asPhysician, 'Encounter.notes')).toMatchObject({ effect: 'allow', role: 'physician', breakGlass: true });
    expect(fieldVerdict(policy, physicianNurse, OFF_TEAM, 'Encounter.notes')).toMatchObject({ effect: 'deny', breakGlass: false });
    expect(fieldVerdict(policy, physicianNurse, asNurse, 'Encounter.notes')).toMatchObject({ effect: 'deny', breakGlass: true });
  });
});

describe('writes', () => {
  const UNDER_GRANT = { clinicId: CLINIC, onCareTeam: false, grant: { id: 'g-1', role: 'physician' } };

  it('a break-glass grant lends no write: what it shows in full still cannot be written', () => {
    const physician = principal(['physician']);
    expect(fieldVerdict(policy, physician, UNDER_GRANT, 'Patient.phone')).toMatchObject({ effect: 'allow', breakGlass: true });
    expect(writeRolesForRow(policy, physician, UNDER_GRANT, 'updatePatient')).toEqual([]);
    for (const [operation, name] of [['updatePatient', 'Patient.phone'], ['addEncounter', 'Encounter.kind'], ['addEncounter', 'Encounter.notes']] as const) {
      expect(decideWrite(policy, physician, UNDER_GRANT, operation, name)).toEqual({ effect: 'deny', role: null, viaGrant: false });
    }
    // On the care team, the usual scope writes, grant or not.
    const onTeam = { ...UNDER_GRANT, onCareTeam: true };
    expect(decideWrite(policy, physician, onTeam, 'addEncounter', 'Encounter.notes')).toEqual({ effect: 'allow', role: 'physician', viaGrant: false });
  });

  it.each([
    // The registrar covers the row but may not add encounters; the physician may, but not off its team.
    [['registrar', 'physician'], OFF_TEAM, 'addEncounter', 'Encounter.kind', 'deny', null],
    [['registrar', 'physician'], OFF_TEAM, 'updatePatient', 'Patient.phone', 'allow', 'registrar'],
    [['registrar', 'physician'], ON_TEAM, 'addEncounter', 'Encounter.notes', 'allow', 'physician'],
    // Billing covers every row of the clinic and may write nothing; the nurse writes only on its team.
    [['nurse', 'billing'], OFF_TEAM, 'addEncounter', 'Encounter.kind', 'deny', null],
    [['nurse', 'billing'], ON_TEAM, 'addEncounter', 'Encounter.kind', 'allow', 'nurse'],
    [['nurse', 'billing'], ON_TEAM, 'addEncounter', 'Encounter.notes', 'deny', null],
    [['nurse', 'billing'], ON_TEAM, 'updatePatient', 'Patient.phone', 'deny', null],
    // Another clinic's row: nobody.
    [['registrar'], ELSEWHERE, 'updatePatient', 'Patient.phone', 'deny', null],
  ] as const)('%o on %o: %s of %s is %s by %s', (roles, row, operation, name, effect, role) => {
    expect(decideWrite(policy, principal(roles), row, operation, name)).toEqual({ effect, role, viaGrant: false });
  });

  it('a role whose MFA is not met writes nothing', () => {
    expect(writeRolesForRow(policy, principal(['registrar'], { mfa: false }), OFF_TEAM, 'updatePatient')).toEqual([]);
    expect(decideWrite(policy, principal(['registrar'], { mfa: false }), OFF_TEAM, 'updatePatient', 'Patient.phone').effect).toBe('deny');
  });
});

describe('mayEverSee', () => {
  // Every standing a row can give: on or off the care team, elsewhere, and through a live grant
  // opened in each role (decide() ignores a grant in a role the principal does not hold).
  const rows = [ON_TEAM, OFF_TEAM, ELSEWHERE].flatMap((row) => [
    row,
    ...[...policy.roles.keys()].map((role) => ({ ...row, onCareTeam: false, grant: { id: 'grant-1', role } })),
  ]);
  const principals = [
    principal(['registrar']),
    principal(['registrar', 'physician']),
    principal(['nurse', 'billing']),
    principal(['physician'], { mfa: false }),
    principal(['compliance']),
    principal(['clinic_admin']),
    partner(['Patient.mrn', 'Encounter.kind', 'Encounter.notes']),
  ];

  it('is false exactly when fieldVerdict denies the field in every row', () => {
    for (const who of principals) {
      for (const [type, fields] of Object.entries(PHI_FIELDS)) for (const field of fields) {
        const shownSomewhere = rows.some((row) => decisionOf(policy, who, row, type, field).effect !== 'deny');
        expect(mayEverSee(policy, who, `${type}.${field}`), `${who.roles.join('+')} ${type}.${field}`).toBe(shownSomewhere);
      }
    }
  });

  it("leaves a registrar's encounters without their clinical fields, and a physician's with them", () => {
    const seen = (who: ReturnType<typeof principal>) =>
      ['Encounter.kind', 'Encounter.reason', 'Encounter.diagnosisCodes', 'Encounter.notes'].filter((name) => mayEverSee(policy, who, name));
    expect(seen(principal(['registrar']))).toEqual(['Encounter.kind']);
    expect(seen(principal(['physician']))).toEqual(['Encounter.kind', 'Encounter.reason', 'Encounter.diagnosisCodes', 'Encounter.notes']);
    expect(seen(principal(['physician'], { mfa: false }))).toEqual([]);
  });
});

describe('MFA', () => {
  it.each(['physician', 'nurse', 'registrar', 'billing', 'clinic_admin'])('%s without MFA gets nothing and is told MFA would help', (role) => {
    const noMfa = principal([role], { mfa: false });
    for (const row of [ON_TEAM, OFF_TEAM]) {
      for (const [type, fields] of Object.entries(PHI_FIELDS)) {
        for (const field of fields) expect(decisionOf(policy, noMfa, row, type, field)).toEqual({ effect: 'deny', role: null, viaGrant: false });
      }
    }
    expect(mfaBlocks(policy, noMfa)).toBe(true);
    expect(mfaBlocks(policy, principal([role]))).toBe(false);
  });

  it('compliance without MFA is told MFA would help, since its role requires it', () => {
    expect(mfaBlocks(policy, principal(['compliance'], { mfa: false }))).toBe(true);
  });

  it('a principal with MFA is never blocked by MFA', () => {
    expect(mfaBlocks(policy, principal(['physician', 'billing', 'compliance']))).toBe(false);
  });

  // The loader forbids PHI-reading roles without MFA; these hand-built policies check that the
  // decisions themselves do not rely on that.
  const handBuilt = (roles: Array<Pick<RolePolicy, 'name' | 'mfaRequired' | 'rows'> & { effect: Effect; operations?: string[] }>): PolicySet => ({
    version: 1,
    breakGlass: { reach: 'own_clinics' },
    roles: new Map(
      roles.map((role) => [
        role.name,
        {
          name: role.name,
          purpose: 'treatment',
          mfaRequired: role.mfaRequired,
          rows: role.rows,
          operations: new Set(role.operations ?? []),
          fields: new Map([['Patient.givenName', role.effect]]),
          limits: null,
        },
      ]),
    ),
  });

  it('a role that does not require MFA counts without it, one that does is skipped', () => {
    const mixed = handBuilt([
      { name: 'strict', mfaRequired: true, rows: 'clinic', effect: 'allow', operations: ['setCareTeam'] },
      { name: 'lax', mfaRequired: false, rows: 'clinic', effect: 'mask', operations: ['addEncounter'] },
    ]);
    const noMfa = principal(['strict', 'lax'], { mfa: false });
    expect(decisionOf(mixed, noMfa, OFF_TEAM, 'Patient', 'givenName')).toEqual({ effect: 'mask', role: 'lax', viaGrant: false });
    expect(decisionOf(mixed, principal(['strict', 'lax']), OFF_TEAM, 'Patient', 'givenName')).toEqual({ effect: 'allow', role: 'strict', viaGrant: false });
    expect(canPerform(mixed, noMfa, 'addEncounter')).toBe(true);
    expect(canPerform(mixed, noMfa, 'setCareTeam')).toBe(false);
    // It can read PHI without MFA, so a refusal is about permission, not about MFA.
    expect(mfaBlocks(mixed, noMfa)).toBe(false);
  });

  it('a role that needs no MFA and reads no PHI does not stop MFA_REQUIRED for the roles that do', () => {
    const policyWithViewer = handBuilt([
      { name: 'viewer', mfaRequired: false, rows: 'none', effect: 'deny' },
      { name: 'doctor', mfaRequired: true, rows: 'care_team', effect: 'allow' },
    ]);
    expect(mfaBlocks(policyWithViewer, principal(['viewer', 'doctor'], { mfa: false }))).toBe(true);
    expect(mfaBlocks(policyWithViewer, principal(['viewer'], { mfa: false }))).toBe(false);
  });
});

describe('purposeFor', () => {
  it.each([
    [['physician'], 'physician', 'treatment'],
    [['billing', 'physician'], 'billing', 'payment'],
    [['registrar'], 'registrar', 'healthcare_operations'],
    [['physician'], null, 'unspecified'],
    [['physician'], 'billing', 'unspecified'],
    [['physician', 'admin'], 'admin', 'unspecified'],
  ] as const)('roles %j, role %j: %s', (roles, role, purpose) => {
    expect(purposeFor(policy, principal(roles), role)).toBe(purpose);
  });
});
