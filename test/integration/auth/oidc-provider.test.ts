import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuthenticator } from '../../../src/auth/authenticate.ts';
import { createOidcVerifier } from '../../../src/auth/oidc.ts';
import { loadConfig } from '../../../src/config.ts';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';
import { startOidcProvider, type OidcProviderIssuer } from '../../support/oidc-provider.ts';

// phigate behind panva's oidc-provider, configured as deploy/oidc-provider/phigate.ts ships it:
// a user logs in through the real authorization code flow, and the gateway is called with the
// access token the provider's token endpoint issued.

let gw: TestGateway;
let idp: OidcProviderIssuer;

beforeAll(async () => {
  let staff: TestGateway['staff'] = () => {
    throw new Error('the gateway is not up yet');
  };
  idp = await startOidcProvider((sub) => {
    try {
      return staff(sub);
    } catch {
      return undefined;
    }
  });
  // The settings the README gives for oidc-provider: its issuer, everything else the defaults.
  const oidc = createOidcVerifier({ ...loadConfig({}).oidc, issuer: idp.issuer });
  gw = await startTestGateway({ gatewayOptions: { authenticate: createAuthenticator({ oidc }), issuer: idp.issuer } });
  staff = gw.staff;
});
afterAll(async () => {
  await gw?.close();
  await idp?.close();
});

const ME_AND_PAGE = '{ me { subject roles clinics mfa } patients(first: 50) { edges { node { id givenName ssn } } } }';

describe('an access token from oidc-provider', () => {
  it('carries the claims phigate reads, as a JWT access token for the resource phigate', async () => {
    const token = await idp.accessToken({ accountId: 'dr-north-1', amr: ['pwd', 'otp'] });
    expect(decodeProtectedHeader(token)).toMatchObject({ alg: 'ES256', typ: 'at+jwt' });
    const claims = decodeJwt(token);
    expect(claims).toMatchObject({ iss: idp.issuer, aud: 'phigate', sub: 'dr-north-1', amr: ['pwd', 'otp'], roles: [...gw.staff('dr-north-1').roles], clinics: [...gw.staff('dr-north-1').clinics] });
    expect(claims.auth_time).toBeTypeOf('number');
  });

  it("reads a physician's care-team patients after a two-factor login", async () => {
    const token = await idp.accessToken({ accountId: 'dr-north-1', amr: ['pwd', 'otp'] });
    const r = await gw.gql(token, ME_AND_PAGE);
    expect(r.status).toBe(200);
    expect(r.body.errors).toBeUndefined();
    expect(r.body.data!.me).toEqual({ subject: 'dr-north-1', roles: [...gw.staff('dr-north-1').roles], clinics: [...gw.staff('dr-north-1').clinics], mfa: true });
    const expected = gw.data.patients.filter((p) => p.careTeam.includes('dr-north-1'));
    expect(expected.length).toBeGreaterThan(0);
    const nodes = r.body.data!.patients.edges.map((e: any) => e.node);
    expect(nodes.map((n: any) => n.id).sort()).toEqual(expected.map((p) => p.id).sort());
    for (const n of nodes) expect(n.givenName).toBe(expected.find((p) => p.id === n.id)!.givenName);
  });

  it('after a password-only login gets MFA_REQUIRED and no PHI', async () => {
    const token = await idp.accessToken({ accountId: 'dr-north-1', amr: ['pwd'] });
    const r = await gw.gql(token, ME_AND_PAGE);
    expect(r.body.data?.patients ?? null).toBeNull();
    expect(r.body.errors?.map((e) => e.extensions?.code)).toContain('MFA_REQUIRED');
  });
});
