import { KeyObject, sign } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createOidcVerifier, type OidcVerifierOptions } from '../../src/auth/oidc.ts';
import { hasDuplicateMember } from '../../src/auth/token-hygiene.ts';
import { expectRefusal } from '../integration/auth/refusal.ts';
import { startTestIssuer, type TestIssuer } from '../support/oidc-issuer.ts';

// Token hygiene (issue 11, item 6): a real issuer on loopback signs every token; the verifier
// fetches its keys over HTTP. Lifetimes and sign-in ages here are the settings' defaults.
const SUB = 'sub-hygiene-4f1c';
const DAY = 86_400;
const SKEW = 30;
let issuer: TestIssuer;

beforeAll(async () => {
  issuer = await startTestIssuer();
});
// Each test's tokens and its verifier read one instant: a margin such as "5 s past the clock
// skew" then holds however long a loaded machine takes between signing and verifying.
let at = 0;
beforeEach(() => {
  at = Math.floor(Date.now() / 1000);
});
afterAll(async () => {
  await issuer.close();
});

const verifier = (over: Partial<OidcVerifierOptions> = {}) =>
  createOidcVerifier({
    issuer: issuer.issuer,
    audience: 'phigate',
    algorithms: ['ES256'],
    clockToleranceSeconds: SKEW,
    rolesClaim: 'roles',
    clinicsClaim: 'clinics',
    mfaAcrValues: [],
    verifiedTokenTtlMs: 0,
    maxLifetimeSeconds: DAY,
    maxAuthAgeSeconds: DAY / 2,
    now: () => at * 1000,
    ...over,
  });

/** A token of the issuer with these times (seconds relative to the test's instant `at`); `authAge: null` leaves auth_time out. */
async function timed(t: { iat?: number; exp: number; authAge?: number | null }): Promise<string> {
  const payload: Record<string, unknown> = { roles: ['physician'], clinics: ['c-north'], amr: ['pwd', 'otp'] };
  if (t.authAge !== null) payload.auth_time = at - (t.authAge ?? 60);
  return new SignJWT(payload)
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: issuer.keys.kid })
    .setIssuer(issuer.issuer)
    .setAudience('phigate')
    .setSubject(SUB)
    .setIssuedAt(at + (t.iat ?? 0))
    .setExpirationTime(at + t.exp)
    .sign(issuer.keys.privateKey);
}

/** A JWS over exactly these header and payload texts, signed with the issuer's key (jose would re-serialise them). */
function raw(headerJson: string, payloadJson: string): string {
  const input = `${Buffer.from(headerJson).toString('base64url')}.${Buffer.from(payloadJson).toString('base64url')}`;
  const signature = sign('sha256', Buffer.from(input), { key: KeyObject.from(issuer.keys.privateKey as CryptoKey), dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}

const header = (extra = '') => `{"alg":"ES256","typ":"at+jwt","kid":"${issuer.keys.kid}"${extra}}`;
const payload = (extra = '', sub = `"sub":"${SUB}"`) =>
  `{"iss":"${issuer.issuer}","aud":"phigate",${sub},"iat":${at},"exp":${at + 600},"auth_time":${at - 60},"roles":["nurse"],"clinics":["c-north"]${extra}}`;

describe('a maximum token lifetime', () => {
  it.each([
    ['exp in the year 2100', { exp: 4_102_444_800 - Math.floor(Date.now() / 1000) }],
    ['exp - iat one second over a day', { exp: DAY + 1 }],
    ['issued long ago, expiring soon, but a lifetime over the maximum', { iat: -3 * DAY, exp: 600 }],
    ['exp a week from now', { exp: 7 * DAY }],
  ])('refuses %s', async (_what, t) => {
    await expectRefusal(verifier().verify(await timed(t)), 'lifetime_too_long', [SUB]);
  });

  it('accepts a lifetime of exactly the maximum, and an ordinary 15-minute token', async () => {
    await expect(verifier().verify(await timed({ exp: DAY }))).resolves.toMatchObject({ subject: SUB });
    await expect(verifier().verify(await timed({ exp: 900 }))).resolves.toMatchObject({ subject: SUB });
  });

  it('follows the setting', async () => {
    await expectRefusal(verifier({ maxLifetimeSeconds: 300 }).verify(await timed({ exp: 900 })), 'lifetime_too_long', [SUB]);
  });
});

describe('an auth_time sanity window', () => {
  it.each([
    ['an hour in the future', { exp: 900, authAge: -3600 }],
    ['just past the clock skew in the future', { exp: 900, authAge: -(SKEW + 5) }],
    ['after the token was issued', { iat: -600, exp: 300, authAge: 300 }],
  ])('refuses a sign-in %s', async (_what, t) => {
    await expectRefusal(verifier().verify(await timed(t)), 'auth_time_in_future', [SUB]);
  });

  it.each([
    ['three years ago', 3 * 365 * DAY],
    ['a minute past the 12-hour setting', DAY / 2 + 60],
  ])('refuses a sign-in %s for ordinary reads', async (_what, age) => {
    await expectRefusal(verifier().verify(await timed({ exp: 900, authAge: age })), 'auth_too_old', [SUB]);
  });

  it('accepts a sign-in within the window, one within the skew, and a token without auth_time', async () => {
    await expect(verifier().verify(await timed({ exp: 900, authAge: DAY / 2 - 60 }))).resolves.toMatchObject({ subject: SUB });
    await expect(verifier().verify(await timed({ exp: 900, authAge: -(SKEW - 10) }))).resolves.toMatchObject({ subject: SUB });
    await expect(verifier().verify(await timed({ exp: 900, authAge: null }))).resolves.toMatchObject({ authTime: null });
  });
});

describe('duplicate JSON members', () => {
  it('a correctly signed hand-written token passes (the control for every case below)', async () => {
    await expect(verifier().verify(raw(header(), payload()))).resolves.toMatchObject({ subject: SUB, roles: ['nurse'] });
  });

  it.each([
    ['a second sub (last would win)', '', ',"sub":"someone-else"'],
    ['a second roles claim raising the role', '', ',"roles":["physician","clinic_admin"]'],
    ['a second clinics claim', '', ',"clinics":["c-south"]'],
    ['a second exp far in the future', '', ',"exp":4102444800'],
    ['a name spelled with an escape (\\u0073ub)', '', ',"\\u0073ub":"someone-else"'],
    ['a duplicate inside a nested object', '', ',"realm_access":{"roles":["a"],"roles":["b"]}'],
    ['a second alg in the header', ',"alg":"none"', ''],
    ['a second kid in the header', ',"kid":"other"', ''],
    ['a second typ in the header', ',"typ":"id+jwt"', ''],
  ])('refuses %s', async (_what, h, p) => {
    await expectRefusal(verifier().verify(raw(header(h), payload(p))), 'duplicate_member', [SUB, 'someone-else']);
  });

  it.each([
    ['the same name in two sibling objects', '{"a":{"x":1},"b":{"x":2}}'],
    ['the same name at two depths', '{"x":{"x":1}}'],
    ['a brace and a quoted name inside a string value', '{"a":"{\\"a\\":1}","b":"}{"}'],
    ['arrays of objects with the same names', '{"l":[{"x":1},{"x":2}]}'],
  ])('keeps %s', (_what, json) => {
    expect(hasDuplicateMember(json)).toBe(false);
  });

  it.each([
    ['top level', '{"a":1,"a":2}'],
    ['after a nested object', '{"a":{"b":1},"c":[1,{"d":2}],"a":3}'],
    ['inside an array element', '{"l":[{"x":1,"x":2}]}'],
    ['escaped the same', '{"a\\u0062":1,"ab":2}'],
  ])('finds a duplicate: %s', (_what, json) => {
    expect(hasDuplicateMember(json)).toBe(true);
  });
});
