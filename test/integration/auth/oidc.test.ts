import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CompactSign, exportJWK, exportSPKI, generateKeyPair, importJWK, SignJWT, UnsecuredJWT } from 'jose';
import type { CryptoKey, JWK, JWTHeaderParameters } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { checkIssuer } from '../../../src/auth/check-issuer.ts';
import { createDevIssuerHandler } from '../../../src/auth/dev-issuer.ts';
import { mintDevToken } from '../../../src/auth/dev-token.ts';
import { createOidcVerifier } from '../../../src/auth/oidc.ts';
import type { OidcVerifierOptions } from '../../../src/auth/oidc.ts';
import { startTestIssuer } from '../../support/oidc-issuer.ts';
import type { TestIssuer } from '../../support/oidc-issuer.ts';
import { expectRefusal } from './refusal.ts';

const SUB = 'sub-7f3a91c2';
const ROLE = 'role-physician-x81';
const CLINIC = 'clinic-north-5531';
const MFA_ACR = 'urn:phigate:loa:mfa-9';
const SECRET_CLAIMS = [SUB, ROLE, CLINIC];

let A: TestIssuer;
let B: TestIssuer;

beforeAll(async () => {
  [A, B] = await Promise.all([startTestIssuer(), startTestIssuer()]);
});
afterAll(async () => {
  await Promise.all([A.close(), B.close()]);
});
afterEach(() => {
  vi.useRealTimers();
});

function verifierFor(issuer: string, overrides: Partial<OidcVerifierOptions> = {}) {
  return createOidcVerifier({
    issuer,
    audience: 'phigate',
    algorithms: ['ES256', 'RS256', 'EdDSA'],
    clockToleranceSeconds: 30,
    rolesClaim: 'roles',
    clinicsClaim: 'clinics',
    mfaAcrValues: [MFA_ACR],
    ...overrides,
  });
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

/** A token signed by issuer A's key unless told otherwise; `undefined` in `claims` removes a claim. */
async function signed(
  claims: Record<string, unknown> = {},
  header: Partial<JWTHeaderParameters> = {},
  key: CryptoKey | Uint8Array = A.keys.privateKey as CryptoKey,
  crit?: Record<string, boolean>,
): Promise<string> {
  const iat = nowSeconds();
  const payload = { iss: A.issuer, aud: 'phigate', sub: SUB, roles: [ROLE], clinics: [CLINIC], amr: ['pwd', 'otp'], iat, exp: iat + 900, ...claims };
  return new SignJWT(payload)
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: A.keys.kid, ...header })
    .sign(key, crit ? { crit } : undefined);
}

async function refused(token: string, reason: string, verifier = verifierFor(A.issuer)) {
  return expectRefusal(verifier.verify(token), reason, [token, token.split('.')[1] ?? token, ...SECRET_CLAIMS]);
}

/** A loopback server publishing issuer A's key under a discovery document of our choosing. */
async function serveIssuer(issuerFor: (url: string) => string) {
  let url = '';
  let down = false;
  const requests = { discovery: 0, jwks: 0 };
  const handle = createDevIssuerHandler({ issuer: () => issuerFor(url), keys: A.keys });
  const server: Server = createServer((req, res) => {
    const pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (pathname.endsWith('/openid-configuration')) requests.discovery += 1;
    if (pathname.endsWith('/jwks')) requests.jwks += 1;
    if (down) res.writeHead(503).end();
    else if (!handle(req, res)) res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/dev-issuer`;
  return {
    url,
    requests,
    setDown: (value: boolean) => {
      down = value;
    },
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A loopback issuer whose JWKS grows as the test adds keys, as an IdP's does before it rotates. */
async function serveRotatingIssuer() {
  let url = '';
  const jwks: JWK[] = [];
  const requests = { jwks: 0 };
  const server: Server = createServer((req, res) => {
    const pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
    let body: unknown;
    if (pathname.endsWith('/.well-known/openid-configuration')) body = { issuer: url, jwks_uri: `${url}/jwks` };
    else if (pathname.endsWith('/jwks')) {
      requests.jwks += 1;
      body = { keys: jwks };
    }
    if (body === undefined) res.writeHead(404).end();
    else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/rotating`;
  return {
    url,
    requests,
    async addKey(kid: string) {
      const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
      jwks.push({ ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' });
      return { kid, privateKey };
    },
    token: (key: { kid: string; privateKey: CryptoKey }) => signed({ iss: url }, { kid: key.kid }, key.privateKey),
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('a valid token', () => {
  it('becomes a principal with the roles, clinics and MFA of its claims', async () => {
    const token = await A.token({ sub: SUB, roles: [ROLE, 'nurse'], clinics: [CLINIC], mfa: true });
    const principal = await verifierFor(A.issuer).verify(token);
    const now = nowSeconds();
    expect(principal).toEqual({
      kind: 'user',
      subject: SUB,
      issuer: A.issuer,
      roles: [ROLE, 'nurse'],
      clinics: [CLINIC],
      mfa: true,
      authTime: expect.any(Number),
      expiresAt: expect.any(Number),
      tokenId: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
    expect(principal.authTime).toBeGreaterThanOrEqual(now - 62);
    expect(principal.authTime).toBeLessThanOrEqual(now - 58);
    expect(principal.expiresAt).toBeGreaterThanOrEqual(now + 898);
    expect(Object.isFrozen(principal) && Object.isFrozen(principal.roles) && Object.isFrozen(principal.clinics)).toBe(true);
  });

  it('without MFA has mfa false', async () => {
    const principal = await verifierFor(A.issuer).verify(await A.token({ sub: SUB, roles: [ROLE], clinics: [CLINIC] }));
    expect(principal.mfa).toBe(false);
  });

  it('has mfa true when acr is a configured multi-factor value', async () => {
    const principal = await verifierFor(A.issuer).verify(await signed({ amr: ['pwd'], acr: MFA_ACR }));
    expect(principal.mfa).toBe(true);
  });

  it('gets empty roles and clinics when those claims are absent, and null for absent auth_time and jti', async () => {
    const principal = await verifierFor(A.issuer).verify(await signed({ roles: undefined, clinics: undefined }));
    expect(principal).toMatchObject({ roles: [], clinics: [], authTime: null, tokenId: null, mfa: true });
  });

  it('reads roles from a dotted path (Keycloak realm_access.roles)', async () => {
    const token = await A.token({ sub: SUB, roles: [ROLE], clinics: [CLINIC], rolesClaim: 'realm_access.roles', clinicsClaim: 'phigate.clinics' });
    const principal = await verifierFor(A.issuer, { rolesClaim: 'realm_access.roles', clinicsClaim: 'phigate.clinics' }).verify(token);
    expect(principal).toMatchObject({ roles: [ROLE], clinics: [CLINIC] });
  });

  it('reads a namespaced claim whose name has dots literally (Auth0 style)', async () => {
    const token = await signed({ roles: undefined, 'https://phigate.example/roles': [ROLE] });
    const principal = await verifierFor(A.issuer, { rolesClaim: 'https://phigate.example/roles' }).verify(token);
    expect(principal.roles).toEqual([ROLE]);
  });

  it.each(['JWT', 'jwt', 'at+jwt', 'AT+JWT', 'application/at+jwt', 'application/JWT', undefined])('is accepted with typ %s', async (typ) => {
    await expect(verifierFor(A.issuer).verify(await signed({}, { typ }))).resolves.toMatchObject({ subject: SUB });
  });

  it('is accepted within the clock tolerance: exp just past, nbf and iat just ahead', async () => {
    // The verifier's clock stays at the instant the times are reckoned from: on the system's, a
    // run slower than 10 s between signing and verifying would see exp past the tolerance.
    const now = nowSeconds();
    const token = await signed({ iat: now + 20, nbf: now + 20, exp: now - 20 });
    await expect(verifierFor(A.issuer, { now: () => now * 1000 }).verify(token)).resolves.toMatchObject({ subject: SUB });
  });
});

describe('refuses', () => {
  it("a token with alg 'none'", async () => {
    const iat = nowSeconds();
    const token = new UnsecuredJWT({ sub: SUB, roles: [ROLE], clinics: [CLINIC], iat, exp: iat + 900 })
      .setIssuer(A.issuer)
      .setAudience('phigate')
      .encode();
    await refused(token, 'bad_algorithm');
  });

  it("an HS256 token whose HMAC secret is the issuer's public key", async () => {
    const publicKey = await importJWK(A.keys.publicJwk, 'ES256', { extractable: true });
    const pem = await exportSPKI(publicKey as CryptoKey);
    for (const secret of [new TextEncoder().encode(pem), new TextEncoder().encode(JSON.stringify(A.keys.publicJwk))]) {
      await refused(await signed({}, { alg: 'HS256' }, secret), 'bad_algorithm');
    }
  });

  it("a token signed by another key that claims the issuer's kid", async () => {
    const { privateKey } = await generateKeyPair('ES256');
    await refused(await signed({}, {}, privateKey), 'bad_signature');
  });

  it('a token whose signature was altered', async () => {
    const [h, p, s = ''] = (await signed()).split('.');
    await refused(`${h}.${p}.${s.slice(0, -4)}${s.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`, 'bad_signature');
  });

  it('a token whose payload was altered after signing', async () => {
    const [h, , s] = (await signed()).split('.');
    const forged = Buffer.from(JSON.stringify({ iss: A.issuer, aud: 'phigate', sub: SUB, roles: ['admin'], iat: nowSeconds(), exp: nowSeconds() + 900 })).toString('base64url');
    await refused(`${h}.${forged}.${s}`, 'bad_signature');
  });

  it('a token with an unknown kid', async () => {
    const { privateKey } = await generateKeyPair('ES256');
    await refused(await signed({}, { kid: 'kid-nobody-knows' }, privateKey), 'unknown_key');
  });

  it('a token with the wrong iss, or none', async () => {
    await refused(await signed({ iss: 'https://evil.example/dev-issuer' }), 'bad_issuer');
    await refused(await signed({ iss: `${A.issuer}/` }), 'bad_issuer');
    await refused(await signed({ iss: undefined }), 'bad_issuer');
  });

  it('a token with the wrong aud, or none', async () => {
    await refused(await signed({ aud: 'another-api' }), 'bad_audience');
    await refused(await signed({ aud: ['another-api', 'yet-another'] }), 'bad_audience');
    await refused(await signed({ aud: undefined }), 'bad_audience');
  });

  it('an expired token', async () => {
    await refused(await signed({ exp: nowSeconds() - 31 }), 'token_expired');
    // The same token the issuer minted, an hour later by the verifier's clock.
    const token = await A.token({ sub: SUB, roles: [ROLE], clinics: [CLINIC] });
    await refused(token, 'token_expired', verifierFor(A.issuer, { now: () => Date.now() + 3_600_000 }));
  });

  it('a token that is not valid yet (nbf beyond the tolerance)', async () => {
    await refused(await signed({ nbf: nowSeconds() + 120 }), 'token_not_yet_valid');
  });

  it('a token issued in the future beyond the tolerance', async () => {
    // Judged at the instant its iat is reckoned from: 45 s ahead stays 15 s past the tolerance however slow the run.
    const now = nowSeconds();
    const at = verifierFor(A.issuer, { now: () => now * 1000 });
    await refused(await signed({ iat: now + 3600, exp: now + 7200 }), 'token_not_yet_valid', at);
    await refused(await signed({ iat: now + 45 }), 'token_not_yet_valid', at);
  });

  it.each([
    ['no sub', { sub: undefined }],
    ['an empty sub', { sub: '' }],
    ['a numeric sub', { sub: 1234 }],
    ['no exp', { exp: undefined }],
    ['no iat', { iat: undefined }],
    ['a string exp', { exp: 'tomorrow' }],
    ['a string nbf', { nbf: 'soon' }],
    ['a string auth_time', { auth_time: 'recently' }],
    ['a numeric jti', { jti: 42 }],
  ])('a token with %s', async (_, claims) => {
    await refused(await signed(claims), 'invalid_claims');
  });

  it('a token with a crit header naming an extension we do not understand', async () => {
    await refused(await signed({}, { crit: ['x-phigate-ext'], 'x-phigate-ext': 1 } as Partial<JWTHeaderParameters>, undefined, { 'x-phigate-ext': true }), 'unsupported_token');
  });

  it.each(['JWE', 'id+jwt', 'dpop+jwt', 'application/logout+jwt', 'secevent+jwt', 'at+jwt+extra', ''])('a token with typ %j', async (typ) => {
    await refused(await signed({}, { typ }), 'bad_token_type');
  });

  it('a token longer than 8192 characters, before parsing it', async () => {
    const big = await signed({ padding: 'x'.repeat(20 * 1024) });
    expect(big.length).toBeGreaterThan(20 * 1024);
    await refused(big, 'token_too_large');
    await refused('a'.repeat(8193), 'token_too_large');
  });

  it.each([
    ['roles as a string', { roles: ROLE }],
    ['roles with a number', { roles: [ROLE, 7] }],
    ['roles as an object', { roles: { 0: ROLE } }],
    ['roles as null', { roles: null }],
    ['clinics as a string', { clinics: CLINIC }],
    ['clinics with a nested array', { clinics: [[CLINIC]] }],
  ])('a token with %s', async (_, claims) => {
    await refused(await signed(claims), 'invalid_claims');
  });

  it('a token whose roles path runs through something that is not an object', async () => {
    const verifier = verifierFor(A.issuer, { rolesClaim: 'realm_access.roles' });
    await refused(await signed({ realm_access: [ROLE] }), 'invalid_claims', verifier);
    await refused(await signed({ realm_access: { roles: ROLE } }), 'invalid_claims', verifier);
    await expect(verifier.verify(await signed({ realm_access: {} }))).resolves.toMatchObject({ roles: [] });
  });

  it.each(['not-a-jwt', 'a.b.c', 'a.b', '...', 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0'])('the malformed token %j', async (token) => {
    await refused(token, 'malformed_token');
  });

  it('a token whose payload is not a JSON object', async () => {
    const jws = await new CompactSign(new TextEncoder().encode('["not","an","object"]'))
      .setProtectedHeader({ alg: 'ES256', kid: A.keys.kid })
      .sign(A.keys.privateKey);
    await refused(jws, 'malformed_token');
  });

  it("issuer B's token at a verifier for issuer A", async () => {
    const fromB = await B.token({ sub: SUB, roles: [ROLE], clinics: [CLINIC], mfa: true });
    await refused(fromB, 'bad_issuer');
    // Even when B writes A's name into iss and A's kid into the header.
    const impersonating = await mintDevToken({ ...B.keys, kid: A.keys.kid }, { issuer: A.issuer, audience: 'phigate', subject: SUB, roles: [ROLE], clinics: [CLINIC], mfa: true });
    await refused(impersonating, 'bad_signature');
    // And B's own verifier refuses A's token in turn.
    await refused(await signed(), 'bad_issuer', verifierFor(B.issuer));
  });

  it('a token from another issuer as such, before looking up a key or fetching a JWKS', async () => {
    const verifier = verifierFor(A.issuer);
    const before = A.jwksRequests();
    for (let i = 0; i < 3; i += 1) {
      const fromB = await mintDevToken({ ...B.keys, kid: `kid-of-b-${i}` }, { issuer: B.issuer, audience: 'phigate', subject: SUB, roles: [ROLE], clinics: [CLINIC], mfa: true });
      await refused(fromB, 'bad_issuer', verifier);
    }
    await refused(await signed({ iss: `${A.issuer}/` }, { kid: 'kid-nobody-knows' }), 'bad_issuer', verifier);
    expect(A.jwksRequests()).toBe(before);
  });
});

describe('discovery', () => {
  it('refuses keys from a discovery document that names another issuer', async () => {
    const server = await serveIssuer(() => 'https://idp.example/dev-issuer');
    try {
      const token = await mintDevToken(A.keys, { issuer: server.url, audience: 'phigate', subject: SUB, roles: [ROLE], clinics: [CLINIC], mfa: true });
      await refused(token, 'issuer_misconfigured', verifierFor(server.url));
      expect(server.requests.jwks).toBe(0);
    } finally {
      await server.close();
    }
  });

  it('requires the document to name the configured issuer exactly, trailing slash included', async () => {
    const token = await signed({ iss: `${A.issuer}/` });
    await refused(token, 'issuer_misconfigured', verifierFor(`${A.issuer}/`));
  });

  it('works for an issuer whose identifier ends in a slash', async () => {
    const server = await serveIssuer((url) => `${url}/`);
    try {
      const token = await mintDevToken(A.keys, { issuer: `${server.url}/`, audience: 'phigate', subject: SUB, roles: [ROLE], clinics: [CLINIC], mfa: true });
      await expect(verifierFor(`${server.url}/`).verify(token)).resolves.toMatchObject({ issuer: `${server.url}/`, subject: SUB });
    } finally {
      await server.close();
    }
  });

  it('happens once, shared by concurrent first requests', async () => {
    const server = await serveIssuer((url) => url);
    try {
      const token = await mintDevToken(A.keys, { issuer: server.url, audience: 'phigate', subject: SUB, roles: [ROLE], clinics: [CLINIC], mfa: true });
      const verifier = verifierFor(server.url);
      await Promise.all(Array.from({ length: 5 }, () => verifier.verify(token)));
      await verifier.verify(token);
      expect(server.requests).toEqual({ discovery: 1, jwks: 1 });
    } finally {
      await server.close();
    }
  });

  it('is not attempted for a token refused before a key is needed', async () => {
    const server = await serveIssuer((url) => url);
    try {
      const verifier = verifierFor(server.url);
      await refused(await signed({ iss: server.url }, { alg: 'HS256' }, new Uint8Array(32)), 'bad_algorithm', verifier);
      await refused('not-a-jwt', 'malformed_token', verifier);
      expect(server.requests).toEqual({ discovery: 0, jwks: 0 });
    } finally {
      await server.close();
    }
  });

  it('that failed is retried, but not more than once per few seconds', async () => {
    const server = await serveIssuer((url) => url);
    try {
      let clock = Date.now();
      const verifier = verifierFor(server.url, { now: () => clock });
      const token = await mintDevToken(A.keys, { issuer: server.url, audience: 'phigate', subject: SUB, roles: [ROLE], clinics: [CLINIC], mfa: true });

      server.setDown(true);
      await refused(token, 'issuer_unreachable', verifier);
      await refused(token, 'issuer_unreachable', verifier);
      expect(server.requests.discovery).toBe(1);

      server.setDown(false);
      clock += 1_000;
      await refused(token, 'issuer_unreachable', verifier);
      expect(server.requests.discovery).toBe(1);

      clock += 5_000;
      await expect(verifier.verify(token)).resolves.toMatchObject({ subject: SUB });
      expect(server.requests.discovery).toBe(2);
    } finally {
      await server.close();
    }
  });

  it('and the JWKS are read without fetch(), whose WebAssembly parser would stay resident (src/net/outbound-request.ts)', async () => {
    vi.stubGlobal('fetch', () => Promise.reject(new Error('fetch() was called')));
    try {
      await expect(verifierFor(A.issuer).verify(await signed())).resolves.toMatchObject({ subject: SUB });
    } finally {
      vi.unstubAllGlobals();
    }
  });

  it('of an issuer nobody answers for is refused promptly', async () => {
    const server = await serveIssuer((url) => url);
    const { url } = server;
    await server.close();
    const started = Date.now();
    await refused(await signed({ iss: url }), 'issuer_unreachable', verifierFor(url));
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});

describe('the start-up check of the issuer', () => {
  it('passes when the discovery document names the configured issuer', async () => {
    await expect(checkIssuer(A.issuer)).resolves.toEqual({ ok: true });
  });

  it('names both values when configured issuer and document differ by a trailing slash, either way', async () => {
    await expect(checkIssuer(`${A.issuer}/`)).resolves.toEqual({
      ok: false,
      unreachable: false,
      problem: `is "${A.issuer}/" but its discovery document names "${A.issuer}"; tokens carry the document's value, so set exactly that`,
    });
    const server = await serveIssuer((url) => `${url}/`);
    try {
      const check = await checkIssuer(server.url);
      expect(check).toMatchObject({ ok: false, unreachable: false });
      expect(check.ok || check.problem).toContain(`is "${server.url}" but its discovery document names "${server.url}/"`);
    } finally {
      await server.close();
    }
  });

  it('reports an issuer that does not answer as unreachable, not as misconfigured', async () => {
    const server = await serveIssuer((url) => url);
    server.setDown(true);
    try {
      await expect(checkIssuer(server.url)).resolves.toMatchObject({ ok: false, unreachable: true });
    } finally {
      await server.close();
    }
  });
});

describe('the JWKS', () => {
  it('keeps verifying with cached keys while the endpoint is down', async () => {
    const verifier = verifierFor(A.issuer);
    const token = await A.token({ sub: SUB, roles: [ROLE], clinics: [CLINIC], mfa: true });
    await verifier.verify(token);
    const fetched = A.jwksRequests();
    A.setJwksDown(true);
    try {
      await expect(verifier.verify(token)).resolves.toMatchObject({ subject: SUB });
      expect(A.jwksRequests()).toBe(fetched);
    } finally {
      A.setJwksDown(false);
    }
  });

  it('keeps verifying with cached keys once they are stale and a refetch fails', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const verifier = verifierFor(A.issuer);
    const token = await A.token({ sub: SUB, roles: [ROLE], clinics: [CLINIC], mfa: true });
    await verifier.verify(token);
    A.setJwksDown(true);
    try {
      vi.setSystemTime(Date.now() + 11 * 60_000);
      const before = A.jwksRequests();
      await expect(verifier.verify(token)).resolves.toMatchObject({ subject: SUB });
      await expect(verifier.verify(token)).resolves.toMatchObject({ subject: SUB });
      // One attempt to refresh, then the cached keys, without asking again on every request.
      expect(A.jwksRequests()).toBe(before + 1);
    } finally {
      A.setJwksDown(false);
    }
  });

  it('refuses an unknown kid while the endpoint is down, promptly and without a fetch per request', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const verifier = verifierFor(A.issuer);
    await verifier.verify(await A.token({ sub: SUB, roles: [ROLE], clinics: [CLINIC] }));
    const { privateKey } = await generateKeyPair('ES256');
    const rotated = await signed({}, { kid: 'kid-after-rotation' }, privateKey);
    A.setJwksDown(true);
    try {
      // Within the cooldown, an unknown kid does not even try the JWKS.
      const before = A.jwksRequests();
      await refused(rotated, 'unknown_key', verifier);
      expect(A.jwksRequests()).toBe(before);

      // After it, one refetch is tried; it fails, and the next requests do not try again.
      vi.setSystemTime(Date.now() + 6_000);
      const started = performance.now();
      for (let i = 0; i < 5; i += 1) await refused(rotated, 'unknown_key', verifier);
      expect(performance.now() - started).toBeLessThan(3_000);
      expect(A.jwksRequests()).toBe(before + 1);
    } finally {
      A.setJwksDown(false);
    }
  });

  it('is refetched for an unknown kid at most once per cooldown', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const verifier = verifierFor(A.issuer);
    await verifier.verify(await A.token({ sub: SUB, roles: [ROLE], clinics: [CLINIC] }));
    const { privateKey } = await generateKeyPair('ES256');
    const before = A.jwksRequests();
    for (let i = 0; i < 5; i += 1) await refused(await signed({}, { kid: `kid-unknown-${i}` }, privateKey), 'unknown_key', verifier);
    expect(A.jwksRequests()).toBe(before);

    vi.setSystemTime(Date.now() + 6_000);
    for (let i = 0; i < 5; i += 1) await refused(await signed({}, { kid: `kid-unknown-${i}` }, privateKey), 'unknown_key', verifier);
    expect(A.jwksRequests()).toBe(before + 1);
  });

  it('is fetched once for a storm of concurrent unknown kids', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const verifier = verifierFor(A.issuer);
    await verifier.verify(await A.token({ sub: SUB, roles: [ROLE], clinics: [CLINIC] }));
    vi.setSystemTime(Date.now() + 6_000);
    const { privateKey } = await generateKeyPair('ES256');
    const tokens = await Promise.all(Array.from({ length: 50 }, (_, i) => signed({}, { kid: `kid-storm-${i}` }, privateKey)));
    const before = A.jwksRequests();
    await Promise.all(tokens.map((token) => refused(token, 'unknown_key', verifier)));
    expect(A.jwksRequests()).toBe(before + 1);
  });

  it("accepts a signing key the issuer has just started using, within seconds of the last fetch", async () => {
    const server = await serveRotatingIssuer();
    try {
      let clock = Date.now();
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(clock);
      const verifier = verifierFor(server.url, { now: () => clock });
      const first = await server.addKey('kid-first');
      await verifier.verify(await server.token(first));
      expect(server.requests.jwks).toBe(1);

      const second = await server.addKey('kid-second');
      const fresh = await server.token(second);
      // Right after a fetch, a new kid waits out the few seconds that bound kid storms.
      clock += 1_000;
      vi.setSystemTime(clock);
      await refused(fresh, 'unknown_key', verifier);
      clock += 5_000;
      vi.setSystemTime(clock);
      await expect(verifier.verify(fresh)).resolves.toMatchObject({ subject: SUB });
      expect(server.requests.jwks).toBe(2);
    } finally {
      await server.close();
    }
  });
});

describe('configuration', () => {
  it.each([[['HS256']], [['ES256', 'HS512']], [['none']], [[]]])('refuses the algorithm list %j', (algorithms) => {
    expect(() => verifierFor(A.issuer, { algorithms })).toThrow(expect.objectContaining({ code: 'INTERNAL', reason: 'invalid_algorithms' }));
  });

  it('only accepts the algorithms it is configured with', async () => {
    await refused(await signed(), 'bad_algorithm', verifierFor(A.issuer, { algorithms: ['RS256'] }));
  });
});

describe('verified tokens', () => {
  // jose checks signatures through WebCrypto; counting its calls counts real verifications.
  const signatureChecks = () => vi.spyOn(globalThis.crypto.subtle, 'verify');
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('are signature-checked once, then taken on trust until the TTL runs out', async () => {
    let clock = Date.now();
    const verifier = verifierFor(A.issuer, { now: () => clock });
    const token = await signed();
    await verifier.verify(token); // keys fetched and imported
    const checks = signatureChecks();
    for (let i = 0; i < 5; i += 1) await expect(verifier.verify(token)).resolves.toMatchObject({ subject: SUB });
    expect(checks).toHaveBeenCalledTimes(0);

    clock += 61_000;
    await expect(verifier.verify(token)).resolves.toMatchObject({ subject: SUB });
    expect(checks).toHaveBeenCalledTimes(1);
  });

  it('are never taken on trust past exp', async () => {
    let clock = Date.now();
    const verifier = verifierFor(A.issuer, { now: () => clock, verifiedTokenTtlMs: 3_600_000 });
    const token = await signed({ exp: nowSeconds() + 20 });
    await expect(verifier.verify(token)).resolves.toMatchObject({ subject: SUB });
    clock += 55_000; // past exp and the 30 s clock tolerance
    await refused(token, 'token_expired', verifier);
  });

  it('are never taken on trust past the sign-in age limit', async () => {
    let clock = Date.now();
    const verifier = verifierFor(A.issuer, { now: () => clock, verifiedTokenTtlMs: 3_600_000, maxAuthAgeSeconds: 600 });
    const token = await signed({ auth_time: nowSeconds() - 590, exp: nowSeconds() + 900 });
    await expect(verifier.verify(token)).resolves.toMatchObject({ subject: SUB });
    clock += 5_000; // still within the 600 s: taken from the cache
    const checks = signatureChecks();
    await expect(verifier.verify(token)).resolves.toMatchObject({ subject: SUB });
    expect(checks).not.toHaveBeenCalled();
    clock += 20_000; // the sign-in is now 615 s old, the token still 15 minutes from exp
    await refused(token, 'auth_too_old', verifier);
  });

  it('are remembered per exact token: one with a changed signature is checked, and refused', async () => {
    const verifier = verifierFor(A.issuer);
    const token = await signed();
    await verifier.verify(token);
    const [h, p, sig] = token.split('.');
    const tampered = `${h}.${p}.${sig!.startsWith('A') ? 'B' : 'A'}${sig!.slice(1)}`;
    const checks = signatureChecks();
    await refused(tampered, 'bad_signature', verifier);
    await refused(tampered, 'bad_signature', verifier);
    expect(checks).toHaveBeenCalledTimes(2);
  });

  it('are checked every time with a TTL of 0', async () => {
    const verifier = verifierFor(A.issuer, { verifiedTokenTtlMs: 0 });
    const token = await signed();
    await verifier.verify(token);
    const checks = signatureChecks();
    for (let i = 0; i < 3; i += 1) await verifier.verify(token);
    expect(checks).toHaveBeenCalledTimes(3);
  });
});
