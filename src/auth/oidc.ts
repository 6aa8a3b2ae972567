import { hash } from 'node:crypto';
import { decodeJwt, errors, jwtVerify } from 'jose';
import type { JWTHeaderParameters, JWTPayload } from 'jose';
import { LRUCache } from 'lru-cache';
import { PhigateError } from '../errors.ts';
import { createIssuerKeys } from './issuer-keys.ts';
import { hasMfa } from './mfa.ts';
import type { UserPrincipal } from './principal.ts';
import { stringListClaim } from './string-list-claim.ts';
import { tokenRefused } from './token-refused.ts';
import { assertNoDuplicateMembers, assertSaneTimes } from './token-hygiene.ts';

export interface OidcVerifierOptions {
  issuer: string;
  audience: string;
  /** Asymmetric JWS algorithms only: the keys come from a public JWKS. */
  algorithms: readonly string[];
  clockToleranceSeconds: number;
  /** Claim name, or a dotted path into nested objects (e.g. `realm_access.roles`). */
  rolesClaim: string;
  clinicsClaim: string;
  mfaAcrValues: readonly string[];
  /** Milliseconds since the epoch; for tests. */
  now?: () => number;
  /** Longest token lifetime (`exp - iat`, and `exp` from now); default one day. */
  maxLifetimeSeconds?: number;
  /** Oldest `auth_time` accepted; default 12 hours. */
  maxAuthAgeSeconds?: number;
  /** How long a verified token is taken on trust without checking its signature again (default 60 s, never past `exp`); 0 turns the cache off. */
  verifiedTokenTtlMs?: number;
}

export interface OidcVerifier {
  verify(token: string): Promise<UserPrincipal>;
}

/** Real access tokens are a few kB; refusing larger ones bounds the work an anonymous caller can cause. */
const MAX_TOKEN_LENGTH = 8192;

/** Distinct verified tokens remembered; beyond that the least recently used is verified again. */
const VERIFIED_TOKENS_KEPT = 10_000;

const ASYMMETRIC_ALGORITHMS = new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519']);

/**
 * `typ` values of an access token: RFC 9068's `at+jwt`, and plain `JWT` because most IdPs
 * (Keycloak, Entra ID, Okta) still send that. Anything else is some other kind of JWT (an ID token
 * marked `id+jwt`, a logout token, an encrypted token) that must not be accepted as an access token.
 */
const ACCESS_TOKEN_TYPES = new Set(['jwt', 'at+jwt']);

const REASON_BY_CODE: Readonly<Record<string, string>> = {
  [errors.JWTExpired.code]: 'token_expired',
  [errors.JWSSignatureVerificationFailed.code]: 'bad_signature',
  [errors.JWKSNoMatchingKey.code]: 'unknown_key',
  [errors.JWKSMultipleMatchingKeys.code]: 'unknown_key',
  [errors.JOSEAlgNotAllowed.code]: 'bad_algorithm',
  // An unrecognised `crit` extension, or an algorithm or key type this runtime cannot handle.
  [errors.JOSENotSupported.code]: 'unsupported_token',
  [errors.JWSInvalid.code]: 'malformed_token',
  [errors.JWTInvalid.code]: 'malformed_token',
  // The JWKS itself holds something unusable (e.g. a private or malformed key).
  [errors.JWKSInvalid.code]: 'issuer_misconfigured',
  [errors.JWKInvalid.code]: 'issuer_misconfigured',
};

const REASON_BY_CLAIM: Readonly<Record<string, string>> = {
  iss: 'bad_issuer',
  aud: 'bad_audience',
  nbf: 'token_not_yet_valid',
};

/**
 * Verifies OIDC access tokens from one issuer, whose keys are found through its discovery
 * document. The development issuer goes through exactly this code, so nothing here may assume
 * which issuer it is.
 */
export function createOidcVerifier(opts: OidcVerifierOptions): OidcVerifier {
  const algorithms = [...opts.algorithms];
  // Config refuses these already; checked again because a symmetric algorithm here would be fatal.
  if (algorithms.length === 0 || !algorithms.every((alg) => ASYMMETRIC_ALGORITHMS.has(alg))) {
    throw new PhigateError('INTERNAL', 'The OIDC verifier is misconfigured.', { reason: 'invalid_algorithms' });
  }
  const now = opts.now ?? (() => Date.now());
  const keys = createIssuerKeys(opts.issuer, now);
  const timeLimits = {
    maxLifetimeSeconds: opts.maxLifetimeSeconds ?? 86_400,
    maxAuthAgeSeconds: opts.maxAuthAgeSeconds ?? 43_200,
    clockToleranceSeconds: opts.clockToleranceSeconds,
  };

  const verifySignedToken = async (token: string, at: number): Promise<UserPrincipal> => {
    let result: { payload: JWTPayload; protectedHeader: JWTHeaderParameters };
    assertNoDuplicateMembers(token);
    try {
      // `iss` is read before any key is looked up, so a token from another issuer is refused as
      // such (not as an unknown key) and cannot make us refetch our issuer's JWKS. Unverified
      // here, it only ever refuses; jwtVerify checks it again under the signature.
      if (decodeJwt(token).iss !== opts.issuer) throw tokenRefused('bad_issuer');
      result = await jwtVerify(token, keys, {
        algorithms,
        issuer: opts.issuer,
        audience: opts.audience,
        clockTolerance: opts.clockToleranceSeconds,
        requiredClaims: ['exp', 'iat', 'sub'],
        currentDate: new Date(at),
      });
    } catch (e) {
      throw refusal(e);
    }
    if (!isAccessTokenType(result.protectedHeader.typ)) throw tokenRefused('bad_token_type');
    const principal = principalFrom(result.payload, opts, Math.floor(at / 1000));
    assertSaneTimes({ iat: result.payload.iat as number, exp: principal.expiresAt, authTime: principal.authTime }, timeLimits, Math.floor(at / 1000));
    return principal;
  };

  // A client sends the same token with every request until it expires, and checking its
  // signature each time was most of authentication's cost. Only successes are kept, under a
  // digest of the token so the heap holds no bearer credential, never past `exp`, and never past
  // the last second its sign-in is young enough for (auth_too_old would refuse it from then on).
  const ttlMs = opts.verifiedTokenTtlMs ?? 60_000;
  const verified = new LRUCache<string, { principal: UserPrincipal; until: number }>({ max: VERIFIED_TOKENS_KEPT });
  return {
    async verify(token) {
      if (token.length > MAX_TOKEN_LENGTH) throw tokenRefused('token_too_large');
      const at = now();
      if (ttlMs <= 0) return verifySignedToken(token, at);
      // One-shot: a Hash object per request cost twice as much (2 -> 1 us for a ~900-character token).
      const digest = hash('sha256', token, 'base64url');
      const known = verified.get(digest);
      if (known !== undefined && at < known.until) return known.principal;
      const principal = await verifySignedToken(token, at);
      const signInGoodUntil = principal.authTime === null ? Infinity : (Math.floor(principal.authTime + timeLimits.maxAuthAgeSeconds) + 1) * 1000;
      verified.set(digest, { principal, until: Math.min(at + ttlMs, principal.expiresAt * 1000, signInGoodUntil) });
      return principal;
    },
  };
}

function principalFrom(payload: JWTPayload, opts: OidcVerifierOptions, nowSeconds: number): UserPrincipal {
  const { sub, iat, exp, auth_time: authTime, jti } = payload;
  // jose has checked that exp and iat are numbers, but not what type sub, auth_time and jti are.
  if (typeof sub !== 'string' || sub === '' || typeof exp !== 'number' || typeof iat !== 'number') {
    throw tokenRefused('invalid_claims');
  }
  if ((authTime !== undefined && typeof authTime !== 'number') || (jti !== undefined && typeof jti !== 'string')) {
    throw tokenRefused('invalid_claims');
  }
  // jose only checks iat against the clock when given a maximum token age, which we do not impose.
  if (iat > nowSeconds + opts.clockToleranceSeconds) throw tokenRefused('token_not_yet_valid');

  return Object.freeze({
    kind: 'user',
    subject: sub,
    issuer: opts.issuer,
    roles: stringListClaim(payload, opts.rolesClaim),
    clinics: stringListClaim(payload, opts.clinicsClaim),
    mfa: hasMfa({ amr: payload.amr, acr: payload.acr }, opts.mfaAcrValues),
    authTime: authTime ?? null,
    expiresAt: exp,
    tokenId: jti ?? null,
  });
}

function isAccessTokenType(typ: unknown): boolean {
  if (typ === undefined) return true;
  if (typeof typ !== 'string') return false;
  const type = typ.toLowerCase();
  return ACCESS_TOKEN_TYPES.has(type.startsWith('application/') ? type.slice('application/'.length) : type);
}

function refusal(e: unknown): PhigateError {
  if (e instanceof PhigateError) return e;
  if (e instanceof errors.JWTClaimValidationFailed) {
    const reason = REASON_BY_CLAIM[e.claim];
    // A claim of the wrong type (e.g. a string `nbf`) is malformed, not early.
    return tokenRefused(reason !== undefined && e.reason !== 'invalid' ? reason : 'invalid_claims', e);
  }
  if (e instanceof errors.JOSEError) return tokenRefused(REASON_BY_CODE[e.code] ?? 'malformed_token', e);
  return tokenRefused('malformed_token', e);
}
