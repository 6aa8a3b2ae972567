import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { loadPolicy, parsePolicy } from '../../../src/policy/load.ts';
import { OPERATIONS } from '../../../src/policy/operations.ts';
import { PHI_FIELDS } from '../../../src/policy/phi-fields.ts';
import { PolicyError } from '../../../src/policy/policy-error.ts';
import { DEFAULT_POLICY_FILE } from './fixtures.ts';

const DEFAULT_TEXT = readFileSync(DEFAULT_POLICY_FILE, 'utf8');

// The tree edits below work on a fresh copy of the default policy, so each case breaks one thing only.
type Tree = { version: unknown; roles: Record<string, Record<string, unknown> & { fields?: Record<string, Record<string, unknown>> }> } & Record<string, unknown>;
const withEdit = (edit: (tree: Tree) => void): string => {
  const tree = parse(DEFAULT_TEXT) as Tree;
  edit(tree);
  return stringify(tree);
};
const role = (tree: Tree, name: string) => tree.roles[name]!;
const fields = (tree: Tree, name: string, type: string) => role(tree, name).fields![type]!;

function rejection(text: string): PolicyError {
  try {
    parsePolicy(text, PHI_FIELDS, 'test.yaml');
  } catch (error) {
    if (error instanceof PolicyError) return error;
    throw error;
  }
  throw new Error('policy was accepted');
}

describe('parsePolicy accepts', () => {
  it('the default policy, with every role and every PHI field decided', async () => {
    const policy = await loadPolicy(DEFAULT_POLICY_FILE, PHI_FIELDS);
    expect(policy.version).toBe(1);
    expect([...policy.roles.keys()]).toEqual(['physician', 'nurse', 'registrar', 'billing', 'compliance', 'clinic_admin', 'partner']);
    const catalog = Object.entries(PHI_FIELDS).flatMap(([type, names]) => names.map((name) => `${type}.${name}`));
    for (const rolePolicy of policy.roles.values()) expect([...rolePolicy.fields.keys()]).toEqual(catalog);
  });

  it('a role without rows that omits its fields, which then mean deny', () => {
    const policy = parsePolicy(withEdit((tree) => delete role(tree, 'compliance').fields), PHI_FIELDS);
    const compliance = policy.roles.get('compliance')!;
    expect(compliance.fields.size).toBe(13);
    expect([...compliance.fields.values()].every((effect) => effect === 'deny')).toBe(true);
  });

  it('a role without rows that lists only some fields', () => {
    const text = withEdit((tree) => {
      delete fields(tree, 'compliance', 'Patient').ssn;
      delete role(tree, 'compliance').fields!.Encounter;
    });
    expect(parsePolicy(text, PHI_FIELDS).roles.get('compliance')!.fields.get('Patient.ssn')).toBe('deny');
  });

  it('a role without rows or PHI that does not require MFA', () => {
    const text = withEdit((tree) => (role(tree, 'compliance').mfa = 'not_required'));
    expect(parsePolicy(text, PHI_FIELDS).roles.get('compliance')!.mfaRequired).toBe(false);
  });

  it('every known operation name', () => {
    const text = withEdit((tree) => (role(tree, 'compliance').operations = [...OPERATIONS]));
    expect([...parsePolicy(text, PHI_FIELDS).roles.get('compliance')!.operations]).toEqual(OPERATIONS);
  });
});

describe('parsePolicy rejects', () => {
  const physicianSsn = '        ssn: mask\n';
  const cases: Array<[string, string, string, RegExp]> = [
    ['YAML syntax', 'version: 1\nroles: [physician\n', '', /not valid YAML/],
    ['an empty file', '', '', /mapping/],
    ['a duplicate field', DEFAULT_TEXT.replace(physicianSsn, `${physicianSsn}        ssn: allow\n`), 'roles.physician.fields.Patient.ssn', /more than once/],
    ['a duplicate role', `${DEFAULT_TEXT}\n  nurse:\n    purpose: treatment\n`, 'roles.nurse', /more than once/],
    ['a YAML alias', `${DEFAULT_TEXT.replace('  physician:\n', '  physician: &p\n')}\n  doctor: *p\n`, 'roles.doctor', /alias/],
    ['an unknown top-level key', withEdit((tree) => (tree.defaults = 'allow')), 'defaults', /not a known key/],
    ['a missing version', withEdit((tree) => delete (tree as Partial<Tree>).version), 'version', /must be 1/],
    ['an unsupported version', withEdit((tree) => (tree.version = 2)), 'version', /must be 1/],
    ['roles that are not a mapping', withEdit((tree) => (tree.roles = [] as never)), 'roles', /must map/],
    ['a role that is not a mapping', withEdit((tree) => (tree.roles.nurse = 'physician' as never)), 'roles.nurse', /must be a mapping/],
    ['an unknown role key', withEdit((tree) => (role(tree, 'nurse').inherits = 'physician')), 'roles.nurse.inherits', /not a known key/],
    ['a missing purpose', withEdit((tree) => delete role(tree, 'nurse').purpose), 'roles.nurse.purpose', /required/],
    ['an empty purpose', withEdit((tree) => (role(tree, 'nurse').purpose = ' ')), 'roles.nurse.purpose', /non-empty/],
    ['missing operations', withEdit((tree) => delete role(tree, 'billing').operations), 'roles.billing.operations', /required/],
    ['an unknown row scope', withEdit((tree) => (role(tree, 'nurse').rows = 'everyone')), 'roles.nurse.rows', /"everyone" is not one of care_team, clinic, none/],
    ['an unknown mfa value', withEdit((tree) => (role(tree, 'nurse').mfa = 'optional')), 'roles.nurse.mfa', /not one of required, not_required/],
    ['a type outside the catalog', withEdit((tree) => (role(tree, 'nurse').fields!.Invoice = { amount: 'allow' })), 'roles.nurse.fields.Invoice', /not a type with PHI fields/],
    ['a field outside the catalog', withEdit((tree) => (fields(tree, 'nurse', 'Patient').shoeSize = 'allow')), 'roles.nurse.fields.Patient.shoeSize', /not a PHI field of Patient/],
    ['a non-PHI field', withEdit((tree) => (fields(tree, 'nurse', 'Patient').id = 'allow')), 'roles.nurse.fields.Patient.id', /not a PHI field/],
    ['a missing PHI field', withEdit((tree) => delete fields(tree, 'nurse', 'Patient').ssn), 'roles.nurse.fields.Patient.ssn', /missing/],
    ['a missing PHI type', withEdit((tree) => delete role(tree, 'billing').fields!.Encounter), 'roles.billing.fields.Encounter', /missing/],
    ['missing fields on a role with rows', withEdit((tree) => delete role(tree, 'clinic_admin').fields), 'roles.clinic_admin.fields', /must map/],
    ['a type that is not a mapping', withEdit((tree) => (role(tree, 'nurse').fields!.Patient = 'allow' as never)), 'roles.nurse.fields.Patient', /must map/],
    ['an unknown effect', withEdit((tree) => (fields(tree, 'nurse', 'Encounter').notes = 'redact')), 'roles.nurse.fields.Encounter.notes', /"redact" is not one of allow, mask, deny/],
    ['an effect that is not text', withEdit((tree) => (fields(tree, 'nurse', 'Encounter').notes = true)), 'roles.nurse.fields.Encounter.notes', /not one of allow, mask, deny/],
    ['mask on a field without a masked form', withEdit((tree) => (fields(tree, 'billing', 'Patient').mrn = 'mask')), 'roles.billing.fields.Patient.mrn', /cannot be masked/],
    ['an invalid field on a role without rows', withEdit((tree) => (fields(tree, 'compliance', 'Patient').ssn = 'hide')), 'roles.compliance.fields.Patient.ssn', /not one of/],
    ['an unknown operation', withEdit((tree) => (role(tree, 'nurse').operations = ['addEncounter', 'deletePatient'])), 'roles.nurse.operations[1]', /"deletePatient" is not a known operation/],
    ['an operation listed twice', withEdit((tree) => (role(tree, 'nurse').operations = ['addEncounter', 'addEncounter'])), 'roles.nurse.operations[1]', /more than once/],
    ['operations that are not a list', withEdit((tree) => (role(tree, 'nurse').operations = 'addEncounter')), 'roles.nurse.operations', /must be a list/],
    ['no MFA on a role that sees rows', withEdit((tree) => (role(tree, 'clinic_admin').mfa = 'not_required')), 'roles.clinic_admin.mfa', /must be required/],
    [
      'no MFA on a role without rows that is allowed a field',
      withEdit((tree) => {
        role(tree, 'compliance').mfa = 'not_required';
        fields(tree, 'compliance', 'Patient').mrn = 'allow';
      }),
      'roles.compliance.mfa',
      /must be required/,
    ],
    [
      'no MFA on a role without rows that is allowed a masked field',
      withEdit((tree) => {
        role(tree, 'compliance').mfa = 'not_required';
        fields(tree, 'compliance', 'Patient').ssn = 'mask';
      }),
      'roles.compliance.mfa',
      /must be required/,
    ],
  ];

  it.each(cases)('%s', (_name, text, path, problem) => {
    const error = rejection(text);
    expect(error.code).toBe('POLICY_INVALID');
    expect(error.path).toBe(path);
    expect(error.message).toMatch(problem);
    expect(error.message.startsWith(path ? `test.yaml: ${path}: ` : 'test.yaml: ')).toBe(true);
  });

  it('a file that cannot be read, naming the file', async () => {
    const error = await loadPolicy('/nonexistent/policy.yaml', PHI_FIELDS).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PolicyError);
    expect((error as PolicyError).message).toBe('/nonexistent/policy.yaml: cannot be read (ENOENT)');
  });
});

describe('the parsed policy', () => {
  const policy = parsePolicy(DEFAULT_TEXT, PHI_FIELDS);
  const nurse = policy.roles.get('nurse')!;

  it('is frozen object by object', () => {
    expect(Object.isFrozen(policy)).toBe(true);
    expect(Object.isFrozen(nurse)).toBe(true);
    expect(() => ((policy as { version: number }).version = 2)).toThrow(TypeError);
    expect(() => ((nurse as { mfaRequired: boolean }).mfaRequired = false)).toThrow(TypeError);
    expect(() => ((nurse as { rows: string }).rows = 'clinic')).toThrow(TypeError);
  });

  it('has collections without mutators that the Map and Set prototypes cannot alter either', () => {
    expect((policy.roles as Partial<Map<string, unknown>>).set).toBeUndefined();
    expect((nurse.fields as Partial<Map<string, unknown>>).delete).toBeUndefined();
    expect((nurse.operations as Partial<Set<string>>).add).toBeUndefined();
    expect(() => Map.prototype.set.call(nurse.fields, 'Encounter.notes', 'allow')).toThrow(TypeError);
    expect(() => Map.prototype.clear.call(policy.roles)).toThrow(TypeError);
    expect(() => Set.prototype.add.call(nurse.operations, 'setCareTeam')).toThrow(TypeError);
    expect(() => ((nurse.fields as unknown as Record<string, unknown>).extra = 1)).toThrow(TypeError);
    expect(nurse.fields.get('Encounter.notes')).toBe('deny');
    expect(nurse.operations.has('setCareTeam')).toBe(false);
  });

  it('still reads like a map and a set', () => {
    expect(nurse.fields.size).toBe(13);
    expect(new Map(nurse.fields).get('Patient.ssn')).toBe('mask');
    expect([...nurse.operations]).toEqual(['addEncounter', 'breakGlass']);
    const seen: string[] = [];
    policy.roles.forEach((_value, key) => seen.push(key));
    expect(seen).toHaveLength(7);
  });
});
