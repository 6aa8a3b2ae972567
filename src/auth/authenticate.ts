import { PhigateError } from '../errors.ts';
import type { OidcVerifier } from './oidc.ts';
import type { Principal } from './principal.ts';

/** RFC 6750 `b64token`; a JWT's characters are a subset of it. */
const BEARER_CREDENTIAL = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * Turns the Authorization header into a principal, or refuses. Only one scheme is accepted per
 * request and it must carry exactly one credential, so there is never a question of which of two
 * tokens was meant.
 */
export function createAuthenticator(deps: { oidc: OidcVerifier }): (authorization: string | null) => Promise<Principal> {
  return async (authorization) => {
    const header = authorization?.trim() ?? '';
    if (header === '') {
      throw new PhigateError('UNAUTHENTICATED', 'Authentication is required.', { reason: 'missing_credentials' });
    }
    const [scheme = '', ...credentials] = header.split(' ');
    switch (scheme.toLowerCase()) {
      case 'bearer': {
        const [token] = credentials;
        if (credentials.length !== 1 || token === undefined || !BEARER_CREDENTIAL.test(token)) {
          throw new PhigateError('UNAUTHENTICATED', 'The Authorization header is malformed.', { reason: 'malformed_credentials' });
        }
        return deps.oidc.verify(token);
      }
      case 'apikey':
        // Partner API keys arrive with their own issue; until then they are refused, never ignored.
        throw new PhigateError('UNAUTHENTICATED', 'API keys are not accepted yet.', { reason: 'api_keys_not_enabled' });
      default:
        throw new PhigateError('UNAUTHENTICATED', 'The authorization scheme is not supported.', { reason: 'unsupported_scheme' });
    }
  };
}
