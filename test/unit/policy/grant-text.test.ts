import { describe, expect, it } from 'vitest';
import { grantTextVerdict } from '../../../src/policy/grant-text.ts';
import { loadPolicy } from '../../../src/policy/load.ts';
import { PHI_FIELDS } from '../../../src/policy/phi-fields.ts';
import { CLINIC, DEFAULT_POLICY_FILE, OTHER_CLINIC, partner, principal } from './fixtures.ts';

// Who is shown a break-glass grant's reason and review comment (policies/default.yaml, breakGlass).
describe('grantTextVerdict', async () => {
  const policy = await loadPolicy(DEFAULT_POLICY_FILE, PHI_FIELDS);
  const mine = { actor: 'user-1', clinicId: OTHER_CLINIC };
  const theirs = { actor: 'dr-other', clinicId: CLINIC };

  it("shows them to the grant's clinician, in a role that may break the glass, whatever the grant's clinic", () => {
    expect(grantTextVerdict(policy, principal(['physician']), mine)).toEqual({ allowed: true, role: 'physician', purpose: 'treatment' });
    expect(grantTextVerdict(policy, principal(['nurse']), mine)).toMatchObject({ allowed: true, role: 'nurse' });
  });

  it('shows them to the reviewers of the grant\'s clinic, and to no reviewer of another', () => {
    expect(grantTextVerdict(policy, principal(['compliance']), theirs)).toEqual({ allowed: true, role: 'compliance', purpose: 'healthcare_operations' });
    expect(grantTextVerdict(policy, principal(['compliance'], { clinics: [OTHER_CLINIC] }), theirs)).toMatchObject({ allowed: false, role: null });
  });

  it('shows them to nobody else: another clinician, any other role, MFA not met, a partner', () => {
    for (const roles of [['physician'], ['nurse'], ['registrar'], ['billing'], ['clinic_admin'], ['registrar', 'billing', 'clinic_admin']]) {
      expect(grantTextVerdict(policy, principal(roles), theirs), roles.join()).toMatchObject({ allowed: false, role: null });
    }
    expect(grantTextVerdict(policy, principal(['compliance'], { mfa: false }), theirs)).toMatchObject({ allowed: false });
    expect(grantTextVerdict(policy, principal(['physician'], { mfa: false }), mine)).toMatchObject({ allowed: false });
    expect(grantTextVerdict(policy, principal(['registrar']), mine)).toMatchObject({ allowed: false });
    const lab = partner(['Patient.mrn']);
    expect(grantTextVerdict(policy, lab, { actor: lab.subject, clinicId: CLINIC })).toMatchObject({ allowed: false, role: null, purpose: lab.purpose });
  });
});
