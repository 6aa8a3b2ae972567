import { fileURLToPath } from 'node:url';
import type { Principal } from '../../../src/auth/principal.ts';

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
