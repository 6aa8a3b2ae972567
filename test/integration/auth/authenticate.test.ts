import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuthenticator } from '../../../src/auth/authenticate.ts';
import { createOidcVerifier } from '../../../src/auth/oidc.ts';
import type { OidcVerifier } from '../../../src/auth/oidc.ts';
import { startTestIssuer } from '../../support/oidc-issuer.ts';
import type { TestIssuer } from '../../support/oidc-issuer.ts';
import { expectRefusal } from './refusal.ts';

let issuer: TestIssuer;
let token: string;
const SUB = 'sub-auth-2c9d41';

beforeAll(async () => {
  issuer = await startTestIssuer();
  token = await issuer.token({ sub: SUB, roles: ['nurse'], clinics: ['clinic-east-204'], mfa: true });
});
afterAll(() => issuer.close());

const authenticate = () =>
  createAuthenticator({
    oidc: createOidcVerifier({
      issuer: issuer.issuer,
      audience: issuer.audience,
      algorithms: ['ES256'],
      clockToleranceSeconds: 30,
      rolesClaim: 'roles',
      clinicsClaim: 'clinics',
      mfaAcrValues: [],
    }),
  });

/** Records what reaches the verifier, to see exactly which credential the header parser passes on. */
function recording(): { oidc: OidcVerifier; seen: string[] } {
  const seen: string[] = [];
  return {
    seen,
    oidc: {
      verify: async (credential) => {
        seen.push(credential);
        return { kind: 'user', subject: SUB, issuer: 'x', roles: [], clinics: [], mfa: false, authTime: null, expiresAt: 0, tokenId: null };
      },
    },
  };
}

describe('authenticate', () => {
  it('verifies a Bearer token against the issuer', async () => {
    await expect(authenticate()(`Bearer ${token}`)).resolves.toMatchObject({ kind: 'user', subject: SUB, roles: ['nurse'], mfa: true });
  });

  it.each(['bearer', 'BEARER', 'BeArEr'])('takes the scheme %s case-insensitively', async (scheme) => {
    const { oidc, seen } = recording();
    await createAuthenticator({ oidc })(`${scheme} ${token}`);
    expect(seen).toEqual([token]);
  });

  it('passes on a token refusal from the verifier unchanged', async () => {
    await expectRefusal(authenticate()(`Bearer ${token.slice(0, -6)}AAAAAA`), 'bad_signature', [token, SUB]);
  });

  it.each([null, '', '   '])('refuses a missing header (%j) as missing_credentials', async (header) => {
    await expectRefusal(authenticate()(header), 'missing_credentials', []);
  });

  it.each(['Bearer', 'Bearer ', `Bearer ${'a'} ${'b'}`, 'Bearer  abc.def.ghi', 'Bearer abc,def', 'Bearer "abc.def.ghi"'])(
    'refuses the malformed Bearer header %j without verifying anything',
    async (header) => {
      const { oidc, seen } = recording();
      await expectRefusal(createAuthenticator({ oidc })(header), 'malformed_credentials', []);
      expect(seen).toEqual([]);
    },
  );

  it('refuses two tokens in one header', async () => {
    await expectRefusal(authenticate()(`Bearer ${token} ${token}`), 'malformed_credentials', [token]);
  });

  it.each(['ApiKey pk_live_5f2a9c0d', 'apikey pk_live_5f2a9c0d', 'APIKEY pk_live_5f2a9c0d'])('refuses %s as api_keys_not_enabled', async (header) => {
    await expectRefusal(authenticate()(header), 'api_keys_not_enabled', ['pk_live_5f2a9c0d']);
  });

  it.each(['ApiKey phg_k', 'apikey phg_k', 'APIKEY  phg_k '])('passes the one credential of %j to the key verifier, and only it', async (header) => {
    const seen: string[] = [];
    const partner = { kind: 'partner', subject: 'lab', keyId: 'k', roles: ['partner'], clinics: [], fields: new Set<string>(), purpose: 'TREAT', mfa: true } as const;
    const apiKeys = { verify: async (c: string) => (seen.push(c), partner), forget: () => undefined, flushLastUsed: async () => undefined, close: async () => undefined };
    const withKeys = createAuthenticator({ oidc: recording().oidc, apiKeys });
    if (header === 'APIKEY  phg_k ') {
      await expectRefusal(withKeys(header), 'malformed_credentials', ['phg_k']);
      expect(seen).toEqual([]);
      return;
    }
    await expect(withKeys(header)).resolves.toBe(partner);
    expect(seen).toEqual(['phg_k']);
  });

  it.each([
    'Basic dXNlcjpwYXNzd29yZA==',
    'Digest username="u"',
    'Token abc',
    'DPoP eyJhbGciOiJFUzI1NiJ9.e30.c2ln',
    'Bearerabc.def.ghi',
    'Bearer\tabc.def.ghi',
    'eyJhbGciOiJFUzI1NiJ9.e30.c2ln',
  ])('refuses the scheme of %j as unsupported_scheme', async (header) => {
    await expectRefusal(authenticate()(header), 'unsupported_scheme', ['dXNlcjpwYXNzd29yZA==', 'eyJhbGciOiJFUzI1NiJ9']);
  });
});
