import { fileURLToPath } from 'node:url';
import type { PartnerPrincipal, Principal } from '../../../src/auth/principal.ts';
import { fieldVerdict, type FieldDecision, type RowFacts } from '../../../src/policy/decide.ts';
import type { PolicySet } from '../../../src/policy/types.ts';

export const DEFAULT_POLICY_FILE = fileURLToPath(new URL('../../../policies/default.yaml', import.meta.url));

export const CLINIC = 'clinic-a';
export const OTHER_CLINIC = 'clinic-b';

export function principal(roles: readonly string[], options: { mfa?: boolean; clinics?: readonly string[] } = {}): Principal {
  return {
    kind: 'user',
    subject: 'user-1',
    issuer: 'https://issuer.test',
    roles,
    clinics: options.clinics ?? [CLINIC],
    mfa: options.mfa ?? true,
    authTime: null,
    expiresAt: 4_102_444_800,
    tokenId: null,
  };
}

/** A partner holding a key for `fields` (Type.field) of CLINIC, with purpose of use `purpose`. */
export function partner(fields: readonly string[], options: { purpose?: string; clinics?: readonly string[] } = {}): PartnerPrincipal {
  return {
    kind: 'partner',
    subject: 'lab-1',
    keyId: '00000000-0000-4000-8000-000000000001',
    roles: ['partner'],
    clinics: options.clinics ?? [CLINIC],
    fields: new Set(fields),
    purpose: options.purpose ?? 'HOPERAT',
    mfa: true,
  };
}

/**
 * The decision on `type.field` as the gateway makes it (src/records/read-phi.ts calls
 * fieldVerdict), without the audit facts the verdict adds: the tables of expected effects are
 * checked against the function that runs.
 */
export function decisionOf(policy: PolicySet, who: Principal, row: RowFacts, type: string, field: string): FieldDecision {
  const { effect, role, viaGrant } = fieldVerdict(policy, who, row, `${type}.${field}`);
  return { effect, role, viaGrant };
}
