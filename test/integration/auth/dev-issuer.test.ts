import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadOrCreateDevIssuerKeys } from '../../../src/auth/dev-issuer-keys.ts';
import { mintDevToken } from '../../../src/auth/dev-token.ts';
import { createOidcVerifier } from '../../../src/auth/oidc.ts';
import { startTestIssuer } from '../../support/oidc-issuer.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'phigate-dev-issuer-test-'));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

const verifierFor = (issuer: string) =>
  createOidcVerifier({
    issuer,
    audience: 'phigate',
    algorithms: ['ES256'],
    clockToleranceSeconds: 30,
    rolesClaim: 'roles',
    clinicsClaim: 'clinics',
    mfaAcrValues: [],
  });

describe('development issuer keys', () => {
  it('are created as a private JWK, mode 0600, with the thumbprint as kid', async () => {
    const keys = await loadOrCreateDevIssuerKeys(path.join(dir, 'nested', 'data'));
    const file = path.join(dir, 'nested', 'data', 'dev-issuer.jwk.json');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const stored = JSON.parse(await readFile(file, 'utf8'));
    expect(stored).toMatchObject({ kty: 'EC', crv: 'P-256', d: expect.any(String), kid: keys.kid, alg: 'ES256' });
    expect(keys.publicJwk).toEqual({ kty: 'EC', crv: 'P-256', x: stored.x, y: stored.y, kid: keys.kid, alg: 'ES256', use: 'sig' });
    expect(keys.kid).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(await readdir(path.join(dir, 'nested', 'data'))).toEqual(['dev-issuer.jwk.json']);
  });

  it('are reused across restarts', async () => {
    const first = await loadOrCreateDevIssuerKeys(dir);
    const second = await loadOrCreateDevIssuerKeys(dir);
    expect(second.kid).toBe(first.kid);
    expect(second.publicJwk).toEqual(first.publicJwk);
  });

  it('are created once when several processes start together', async () => {
    const all = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateDevIssuerKeys(dir)));
    expect(new Set(all.map((k) => k.kid)).size).toBe(1);
    expect(await readdir(dir)).toEqual(['dev-issuer.jwk.json']);
  });

  it.each([
    ['not JSON', 'this is not json'],
    ['a public key only', JSON.stringify({ kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' })],
    ['a key of another type', JSON.stringify({ kty: 'oct', k: 'c2VjcmV0' })],
  ])('refuse a key file that is %s', async (_, content) => {
    await writeFile(path.join(dir, 'dev-issuer.jwk.json'), content, { mode: 0o600 });
    await expect(loadOrCreateDevIssuerKeys(dir)).rejects.toMatchObject({ code: 'INTERNAL', reason: 'dev_issuer_key_invalid' });
  });

  it('refuse a key file whose kid is not its thumbprint', async () => {
    await loadOrCreateDevIssuerKeys(dir);
    const file = path.join(dir, 'dev-issuer.jwk.json');
    const stored = JSON.parse(await readFile(file, 'utf8'));
    await writeFile(file, JSON.stringify({ ...stored, kid: 'chosen-kid' }));
    await expect(loadOrCreateDevIssuerKeys(dir)).rejects.toMatchObject({ code: 'INTERNAL', reason: 'dev_issuer_key_invalid' });
  });
});

describe('development issuer endpoints', () => {
  it('serve discovery and a JWKS with the public key only', async () => {
    const issuer = await startTestIssuer();
    try {
      const discovery = await fetch(`${issuer.issuer}/.well-known/openid-configuration`);
      expect(discovery.status).toBe(200);
      expect(await discovery.json()).toMatchObject({
        issuer: issuer.issuer,
        jwks_uri: `${issuer.issuer}/jwks`,
        id_token_signing_alg_values_supported: ['ES256'],
      });
      const jwksText = await (await fetch(`${issuer.issuer}/jwks?cache=bust`)).text();
      expect(JSON.parse(jwksText)).toEqual({ keys: [issuer.keys.publicJwk] });
      expect(jwksText).not.toMatch(/"d"/);
    } finally {
      await issuer.close();
    }
  });

  it('leave other paths and other methods alone or refuse them', async () => {
    const issuer = await startTestIssuer();
    try {
      const origin = new URL(issuer.issuer).origin;
      expect((await fetch(`${origin}/graphql`)).status).toBe(404);
      expect((await fetch(`${origin}/jwks`)).status).toBe(404);
      expect((await fetch(`${issuer.issuer}/jwks/extra`)).status).toBe(404);
      const post = await fetch(`${issuer.issuer}/jwks`, { method: 'POST' });
      expect(post.status).toBe(405);
      expect(post.headers.get('allow')).toBe('GET, HEAD');
    } finally {
      await issuer.close();
    }
  });

  it('keep verifying tokens signed before a restart', async () => {
    const before = await startTestIssuer({ dir });
    await before.close();
    const after = await startTestIssuer({ dir });
    try {
      expect(after.keys.kid).toBe(before.keys.kid);
      // Signed with the key as loaded before the restart, checked against the JWKS served after it.
      const token = await mintDevToken(before.keys, { issuer: after.issuer, audience: 'phigate', subject: 'sub-restart-118', roles: ['registrar'], clinics: ['c-1'], mfa: false });
      await expect(verifierFor(after.issuer).verify(token)).resolves.toMatchObject({ subject: 'sub-restart-118', roles: ['registrar'] });
    } finally {
      await after.close();
    }
  });
});

describe('development tokens', () => {
  it('look like RFC 9068 access tokens', async () => {
    const keys = await loadOrCreateDevIssuerKeys(dir);
    const token = await mintDevToken(keys, {
      issuer: 'http://127.0.0.1:4000/dev-issuer',
      audience: 'phigate',
      subject: 'sub-mint-551',
      roles: ['physician'],
      clinics: ['c-9'],
      mfa: true,
    });
    expect(decodeProtectedHeader(token)).toEqual({ alg: 'ES256', typ: 'at+jwt', kid: keys.kid });
    const claims = decodeJwt(token);
    expect(claims).toMatchObject({
      iss: 'http://127.0.0.1:4000/dev-issuer',
      aud: 'phigate',
      sub: 'sub-mint-551',
      roles: ['physician'],
      clinics: ['c-9'],
      amr: ['pwd', 'otp'],
      jti: expect.any(String),
    });
    expect(claims.exp! - claims.iat!).toBe(900);
    expect(claims.iat! - (claims.auth_time as number)).toBe(60);
  });

  it('honour mfa false, auth age, lifetime and nested claim names', async () => {
    const keys = await loadOrCreateDevIssuerKeys(dir);
    const token = await mintDevToken(keys, {
      issuer: 'http://127.0.0.1:4000/dev-issuer',
      audience: 'phigate',
      subject: 's',
      roles: ['billing'],
      clinics: ['c-1', 'c-2'],
      mfa: false,
      authAgeSeconds: 3600,
      ttlSeconds: 120,
      rolesClaim: 'realm_access.roles',
      clinicsClaim: 'realm_access.clinics',
    });
    const claims = decodeJwt(token);
    expect(claims).toMatchObject({ amr: ['pwd'], realm_access: { roles: ['billing'], clinics: ['c-1', 'c-2'] } });
    expect(claims).not.toHaveProperty('roles');
    expect(claims.exp! - claims.iat!).toBe(120);
    expect(claims.iat! - (claims.auth_time as number)).toBe(3600);
  });
});
