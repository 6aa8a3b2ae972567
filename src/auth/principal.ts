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

/**
 * A partner integration holding an API key (src/auth/api-key.ts). It acts in the `partner` role
 * only, within the key's clinics, fields and purpose of use; the key counts as its own factor set.
 */
export interface PartnerPrincipal {
  readonly kind: 'partner';
  /** The partner's name: the actor of its audit rows. */
  readonly subject: string;
  /** The key's id: the audit's credential id, and the actor row security checks is live. */
  readonly keyId: string;
  readonly roles: readonly ['partner'];
  readonly clinics: readonly string[];
  /** `Type.field` names the key may read, within what the `partner` role allows. */
  readonly fields: ReadonlySet<string>;
  /** HL7 PurposeOfUse code (TREAT, HPAYMT, ...), written into every audit row. */
  readonly purpose: string;
  readonly mfa: true;
}

export type Principal = UserPrincipal | PartnerPrincipal;
