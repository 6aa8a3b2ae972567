import { PhigateError } from '../errors.ts';
import type { ApiKeyVerifier } from './api-key.ts';
import type { OidcVerifier } from './oidc.ts';
import type { Principal } from './principal.ts';

/** RFC 6750 `b64token`; a JWT's characters are a subset of it. */
const BEARER_CREDENTIAL = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * Turns the Authorization header into a principal, or refuses. Only one scheme is accepted per
 * request and it must carry exactly one credential, so there is never a question of which of two
 * tokens was meant.
 */
export function createAuthenticator(deps: { oidc: OidcVerifier; apiKeys?: ApiKeyVerifier }): (authorization: string | null) => Promise<Principal> {
  return async (authorization) => {
    const header = authorization?.trim() ?? '';
    if (header === '') {
      throw new PhigateError('UNAUTHENTICATED', 'Authentication is required.', { reason: 'missing_credentials' });
    }
    const [scheme = '', ...credentials] = header.split(' ');
    switch (scheme.toLowerCase()) {
      case 'bearer':
        return deps.oidc.verify(single(credentials));
      case 'apikey':
        // A gateway built without a key verifier refuses keys, never ignores them.
        if (!deps.apiKeys) throw new PhigateError('UNAUTHENTICATED', 'API keys are not accepted here.', { reason: 'api_keys_not_enabled' });
        return deps.apiKeys.verify(single(credentials));
      default:
        throw new PhigateError('UNAUTHENTICATED', 'The authorization scheme is not supported.', { reason: 'unsupported_scheme' });
    }
  };
}

function single(credentials: readonly string[]): string {
  const [credential] = credentials;
  if (credentials.length !== 1 || credential === undefined || !BEARER_CREDENTIAL.test(credential)) {
    throw new PhigateError('UNAUTHENTICATED', 'The Authorization header is malformed.', { reason: 'malformed_credentials' });
  }
  return credential;
}
