import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { Principal } from '../../../src/auth/principal.ts';
import { roleFor, usableRoles } from '../../../src/policy/decide.ts';
import { parsePolicy } from '../../../src/policy/load.ts';
import { PHI_FIELDS } from '../../../src/policy/phi-fields.ts';
import { principal } from './fixtures.ts';

// An auditor that reads no PHI may sign in without MFA; a registrar may not.
const policy = parsePolicy(
  `version: 1
roles:
  auditor:
    purpose: healthcare_operations
    mfa: not_required
    rows: none
    operations: [readAuditTrail]
  registrar:
    purpose: healthcare_operations
    mfa: required
    rows: clinic
    operations: [createPatient, readAuditTrail]
    limits: { rowsPerRequest: 1, phiValuesPerRequest: 1, rowsPerMinute: 1, phiValuesPerMinute: 1 }
    fields:
      Patient: { mrn: allow, ssn: deny, givenName: allow, familyName: allow, birthDate: allow, phone: deny, email: deny, address: deny }
      Encounter: { occurredAt: deny, kind: deny, reason: deny, diagnosisCodes: deny, notes: deny }
`,
  PHI_FIELDS,
);
const names = (roles: readonly { name: string }[]): string[] => roles.map((r) => r.name);

describe('the roles whose MFA is met', () => {
  it('without MFA only roles that do not require it are usable', () => {
    expect(names(usableRoles(policy, principal(['auditor', 'registrar'], { mfa: false })))).toEqual(['auditor']);
    expect(names(usableRoles(policy, principal(['auditor', 'registrar'], { mfa: true })))).toEqual(['auditor', 'registrar']);
    expect(usableRoles(policy, principal(['stranger']))).toEqual([]);
  });

  it('answers a frozen principal from what it worked out before, per policy, and an unfrozen one afresh', () => {
    // As the verifiers make them: frozen, the claims too.
    const who: Principal = Object.freeze({ ...(principal([]) as Extract<Principal, { kind: 'user' }>), roles: Object.freeze(['auditor', 'registrar']) });
    const first = usableRoles(policy, who);
    expect(usableRoles(policy, who)).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
    // Another principal, the same claims but no MFA: its own answer, not the first one's.
    expect(names(usableRoles(policy, principal(['auditor', 'registrar'], { mfa: false })))).toEqual(['auditor']);
    // The same principal under another policy, which has no registrar.
    const other = parsePolicy(
      `version: 1
roles:
  auditor:
    purpose: healthcare_operations
    mfa: not_required
    rows: none
    operations: [readAuditTrail]
`,
      PHI_FIELDS,
    );
    expect(names(usableRoles(other, who))).toEqual(['auditor']);
    expect(names(usableRoles(policy, who))).toEqual(['auditor', 'registrar']);
    // Unfrozen (a caller's own object): its claims are read as they are now.
    const open = { ...(principal([]) as Extract<Principal, { kind: 'user' }>), roles: ['auditor'] };
    expect(names(usableRoles(policy, open))).toEqual(['auditor']);
    open.roles.push('registrar');
    expect(names(usableRoles(policy, open))).toEqual(['auditor', 'registrar']);
  });

  it('roleFor tells "MFA would help" (held, none usable) from "not yours" (none held)', () => {
    const create = (r: { operations: ReadonlySet<string> }) => r.operations.has('createPatient');
    const noMfa = roleFor(policy, principal(['registrar'], { mfa: false }), create);
    expect(noMfa.role).toBeNull();
    expect(names(noMfa.held)).toEqual(['registrar']);
    expect(roleFor(policy, principal(['auditor'], { mfa: false }), create)).toEqual({ role: null, held: [] });
    expect(roleFor(policy, principal(['registrar']), create).role?.name).toBe('registrar');
    // The usable role wins over an earlier one whose MFA is not met.
    const audit = roleFor(policy, principal(['auditor', 'registrar'], { mfa: false }), (r) => r.operations.has('readAuditTrail'));
    expect(audit.role?.name).toBe('auditor');
  });

  it('is spelt once: no module outside src/policy reads mfaRequired', async () => {
    const src = fileURLToPath(new URL('../../../src/', import.meta.url));
    const files = (await readdir(src, { recursive: true })).filter((f) => f.endsWith('.ts') && !f.startsWith(`policy${path.sep}`));
    const offenders: string[] = [];
    for (const file of files) if ((await readFile(path.join(src, file), 'utf8')).includes('mfaRequired')) offenders.push(file);
    expect(offenders).toEqual([]);
  });
});
