import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import type { DevIssuerKeys } from './dev-issuer-keys.ts';

export interface DevTokenClaims {
  issuer: string;
  audience: string;
  subject: string;
  roles: string[];
  clinics: string[];
  mfa: boolean;
  /** How long ago the user "signed in" (`auth_time`), in seconds. Default 60. */
  authAgeSeconds?: number;
  /** Default 900. */
  ttlSeconds?: number;
  /** Same meaning as in the verifier: a dotted name nests (`realm_access.roles`). Default `roles`. */
  rolesClaim?: string;
  /** Default `clinics`. */
  clinicsClaim?: string;
}

/**
 * An access token from the development issuer, shaped like one from a production IdP (RFC 9068),
 * so that the verifier has no reason to treat it differently.
 */
export async function mintDevToken(keys: DevIssuerKeys, claims: DevTokenClaims): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const payload: Record<string, unknown> = Object.assign(Object.create(null), {
    auth_time: now - (claims.authAgeSeconds ?? 60),
    amr: claims.mfa ? ['pwd', 'otp'] : ['pwd'],
  });
  place(payload, claims.rolesClaim ?? 'roles', claims.roles);
  place(payload, claims.clinicsClaim ?? 'clinics', claims.clinics);

  return new SignJWT(payload)
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: keys.kid })
    .setIssuer(claims.issuer)
    .setAudience(claims.audience)
    .setSubject(claims.subject)
    .setIssuedAt(now)
    .setExpirationTime(now + (claims.ttlSeconds ?? 900))
    .setJti(randomUUID())
    .sign(keys.privateKey);
}

/** Writes `value` where the verifier's dotted-path lookup will find it. */
function place(payload: Record<string, unknown>, name: string, value: readonly string[]): void {
  const segments = name.split('.');
  const leaf = segments.pop() ?? name;
  let node = payload;
  for (const segment of segments) {
    const child = Object.hasOwn(node, segment) ? node[segment] : undefined;
    // Null-prototype objects, so that a segment named `__proto__` is a plain key here too.
    const next: Record<string, unknown> = typeof child === 'object' && child !== null ? (child as Record<string, unknown>) : Object.create(null);
    node[segment] = next;
    node = next;
  }
  node[leaf] = [...value];
}
