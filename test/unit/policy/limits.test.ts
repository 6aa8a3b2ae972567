import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { parsePolicy } from '../../../src/policy/load.ts';
import { effectiveLimits } from '../../../src/policy/limits.ts';
import { PHI_FIELDS } from '../../../src/policy/phi-fields.ts';
import { PolicyError } from '../../../src/policy/policy-error.ts';
import { readsPhi } from '../../../src/policy/reads-phi.ts';
import { DEFAULT_POLICY_FILE, principal } from './fixtures.ts';

const DEFAULT_TEXT = readFileSync(DEFAULT_POLICY_FILE, 'utf8');

type Roles = Record<string, Record<string, unknown>>;
const withEdit = (edit: (roles: Roles) => void): string => {
  const tree = parse(DEFAULT_TEXT) as { roles: Roles };
  edit(tree.roles);
  return stringify(tree);
};
const limitsOf = (roles: Roles, name: string) => roles[name]!.limits as Record<string, unknown>;

function rejection(text: string): PolicyError {
  try {
    parsePolicy(text, PHI_FIELDS, 'test.yaml');
  } catch (error) {
    if (error instanceof PolicyError) return error;
    throw error;
  }
  throw new Error('policy was accepted');
}

const policy = parsePolicy(DEFAULT_TEXT, PHI_FIELDS);

describe('PHI limits in the policy', () => {
  it('the default policy gives limits to exactly the roles that read PHI', () => {
    for (const role of policy.roles.values()) expect(role.limits !== null).toBe(readsPhi(role));
    expect(policy.roles.get('compliance')!.limits).toBeNull();
  });

  it('the default policy keeps a registrar from paging a clinic: at most 50 rows a request and 500 a minute', () => {
    expect(policy.roles.get('registrar')!.limits).toEqual({ rowsPerRequest: 50, phiValuesPerRequest: 1000, rowsPerMinute: 500, phiValuesPerMinute: 5000 });
  });

  it('parsed limits cannot be changed', () => {
    const limits = policy.roles.get('registrar')!.limits!;
    expect(Object.isFrozen(limits)).toBe(true);
    expect(() => ((limits as { rowsPerMinute: number }).rowsPerMinute = 1e9)).toThrow(TypeError);
  });

  const cases: Array<[string, string, string, RegExp]> = [
    ['missing limits on a role that reads PHI', withEdit((r) => delete r.registrar!.limits), 'roles.registrar.limits', /is required/],
    ['missing limits on a role that only sees rows', withEdit((r) => delete r.clinic_admin!.limits), 'roles.clinic_admin.limits', /is required/],
    ['limits on a role that reads no PHI', withEdit((r) => (r.compliance!.limits = { rowsPerRequest: 1, phiValuesPerRequest: 1, rowsPerMinute: 1, phiValuesPerMinute: 1 })), 'roles.compliance.limits', /cannot apply/],
    ['limits that are not a mapping', withEdit((r) => (r.registrar!.limits = 100)), 'roles.registrar.limits', /must map/],
    ['a missing limit', withEdit((r) => delete limitsOf(r, 'registrar').phiValuesPerMinute), 'roles.registrar.limits.phiValuesPerMinute', /is required/],
    ['an unknown limit', withEdit((r) => (limitsOf(r, 'registrar').ssnPerDay = 5)), 'roles.registrar.limits.ssnPerDay', /not a known key/],
    ['a zero limit', withEdit((r) => (limitsOf(r, 'registrar').rowsPerRequest = 0)), 'roles.registrar.limits.rowsPerRequest', /not a whole number from 1/],
    ['a negative limit', withEdit((r) => (limitsOf(r, 'nurse').rowsPerMinute = -5)), 'roles.nurse.limits.rowsPerMinute', /not a whole number/],
    ['a fractional limit', withEdit((r) => (limitsOf(r, 'billing').phiValuesPerRequest = 2.5)), 'roles.billing.limits.phiValuesPerRequest', /not a whole number/],
    ['a limit written as text', withEdit((r) => (limitsOf(r, 'billing').rowsPerMinute = '1000')), 'roles.billing.limits.rowsPerMinute', /"1000" is not a whole number/],
    ['a limit too large for the usage counters', withEdit((r) => (limitsOf(r, 'physician').phiValuesPerMinute = 2 ** 31)), 'roles.physician.limits.phiValuesPerMinute', /1 to 1000000000/],
    ['rows per request above rows per minute', withEdit((r) => (limitsOf(r, 'registrar').rowsPerRequest = 501)), 'roles.registrar.limits.rowsPerRequest', /larger than rowsPerMinute/],
    ['values per request above values per minute', withEdit((r) => (limitsOf(r, 'registrar').phiValuesPerRequest = 5001)), 'roles.registrar.limits.phiValuesPerRequest', /larger than phiValuesPerMinute/],
  ];

  it.each(cases)('the loader rejects %s, naming where', (_name, text, path, problem) => {
    const error = rejection(text);
    expect(error.path).toBe(path);
    expect(error.message).toMatch(problem);
    expect(error.message.startsWith(`test.yaml: ${path}: `)).toBe(true);
  });

  it('the loader refuses a YAML infinity (unlimited is not a limit)', () => {
    const error = rejection(DEFAULT_TEXT.replace('rowsPerMinute: 500, phiValuesPerMinute: 5000', 'rowsPerMinute: .inf, phiValuesPerMinute: 5000'));
    expect(error.path).toBe('roles.registrar.limits.rowsPerMinute');
  });
});

describe('effectiveLimits', () => {
  const registrar = policy.roles.get('registrar')!.limits!;
  const billing = policy.roles.get('billing')!.limits!;
  const physician = policy.roles.get('physician')!.limits!;

  it('is the role\'s own limits for a principal with one role', () => {
    expect(effectiveLimits(policy, principal(['registrar']))).toEqual(registrar);
  });

  it('takes, limit by limit, the largest among the principal\'s roles', () => {
    expect(effectiveLimits(policy, principal(['registrar', 'physician']))).toEqual({
      rowsPerRequest: Math.max(registrar.rowsPerRequest, physician.rowsPerRequest),
      phiValuesPerRequest: Math.max(registrar.phiValuesPerRequest, physician.phiValuesPerRequest),
      rowsPerMinute: Math.max(registrar.rowsPerMinute, physician.rowsPerMinute),
      phiValuesPerMinute: Math.max(registrar.phiValuesPerMinute, physician.phiValuesPerMinute),
    });
    expect(effectiveLimits(policy, principal(['billing', 'registrar']))).toEqual(billing);
  });

  it('counts only roles whose MFA requirement is met: without MFA a PHI role lends no limits', () => {
    expect(effectiveLimits(policy, principal(['registrar', 'billing'], { mfa: false }))).toBeNull();
    expect(effectiveLimits(policy, principal(['registrar', 'billing'], { mfa: true }))).toEqual(billing);
  });

  it('is null for a principal whose roles read no PHI, or whose roles the policy does not know', () => {
    expect(effectiveLimits(policy, principal(['compliance']))).toBeNull();
    expect(effectiveLimits(policy, principal(['superuser', 'Registrar']))).toBeNull();
    expect(effectiveLimits(policy, principal([]))).toBeNull();
  });
});
