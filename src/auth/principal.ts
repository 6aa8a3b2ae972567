/**
 * Who is asking, after authentication. Built only by `src/auth`; everything downstream
 * (policy, row security context, audit) reads this and nothing from the raw request.
 */
export interface UserPrincipal {
  readonly kind: 'user';
  /** `sub` of the verified token. */
  readonly subject: string;
  readonly issuer: string;
  /** As claimed by the issuer; unknown roles are ignored by the policy, never trusted. */
  readonly roles: readonly string[];
  readonly clinics: readonly string[];
  /** MFA as defined by the contract (amr `mfa`, two distinct RFC 8176 factors, or a configured acr). */
  readonly mfa: boolean;
  /** `auth_time` in seconds since the epoch, when the token carried one. */
  readonly authTime: number | null;
  /** `exp` in seconds since the epoch. */
  readonly expiresAt: number;
  /** `jti` when present, for audit correlation. */
  readonly tokenId: string | null;
}

export type Principal = UserPrincipal;
