import { decodeJwt } from 'jose';

/**
 * The `sub` a bearer token claims, read without verifying it, for the record of a refusal only:
 * never an identity. Null when there is no readable bearer token or no string subject.
 */
export function claimedSubject(authorization: string | null): string | null {
  const [scheme, token, ...rest] = authorization?.trim().split(' ') ?? [];
  if (scheme?.toLowerCase() !== 'bearer' || token === undefined || rest.length > 0) return null;
  try {
    const { sub } = decodeJwt(token);
    return typeof sub === 'string' ? sub : null;
  } catch {
    return null;
  }
}
