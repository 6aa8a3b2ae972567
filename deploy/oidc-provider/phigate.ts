import type { Configuration, KoaContextWithOIDC } from 'oidc-provider';
import { errors } from 'oidc-provider';

/** What the IdP knows about a member of staff and phigate reads from the access token. */
export interface PhigateStaff {
  readonly roles: readonly string[];
  readonly clinics: readonly string[];
}

/**
 * The part of a panva `oidc-provider` configuration that makes it an issuer phigate accepts:
 * access tokens for the resource indicator `resource` (RFC 8707 wants an absolute URI, hence
 * `urn:phigate`) are JWTs with `aud` = `audience` (phigate's PHIGATE_OIDC_AUDIENCE), signed with the
 * provider's asymmetric keys, carrying `roles`, `clinics`, `amr`, `acr` and `auth_time`.
 *
 * oidc-provider itself puts only `iss`, `sub`, `aud`, `exp`, `iat`, `jti`, `client_id` and `scope`
 * into a JWT access token: the login's `amr`, `acr` and `auth_time` live on the authorization code
 * (or refresh token) that is being exchanged, and are copied from there, so phigate's MFA check sees
 * what the login really did. Merge the result into the rest of your configuration
 * (clients, `findAccount`, `jwks`, `cookies`, interactions).
 */
export function phigateConfiguration(opts: {
  resource?: string;
  audience?: string;
  /** Lifetime of an access token, in seconds. */
  accessTokenTtl?: number;
  findStaff(accountId: string): Promise<PhigateStaff | undefined>;
}): Pick<Configuration, 'features' | 'extraTokenClaims'> {
  const resource = opts.resource ?? 'urn:phigate';
  const audience = opts.audience ?? 'phigate';
  return {
    features: {
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resource,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, indicator) => {
          if (indicator !== resource) throw new errors.InvalidTarget();
          return {
            scope: audience,
            audience,
            accessTokenTTL: opts.accessTokenTtl ?? 900,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } },
          };
        },
      },
    },
    async extraTokenClaims(ctx: KoaContextWithOIDC, token) {
      if (token.kind !== 'AccessToken' || token.aud !== audience) return undefined;
      const staff = await opts.findStaff(token.accountId);
      const login = ctx.oidc.entities.AuthorizationCode ?? ctx.oidc.entities.RefreshToken ?? ctx.oidc.entities.DeviceCode;
      return {
        roles: [...(staff?.roles ?? [])],
        clinics: [...(staff?.clinics ?? [])],
        ...(login?.amr !== undefined ? { amr: login.amr } : {}),
        ...(login?.acr !== undefined ? { acr: login.acr } : {}),
        ...(login?.authTime !== undefined ? { auth_time: login.authTime } : {}),
      };
    },
  };
}
