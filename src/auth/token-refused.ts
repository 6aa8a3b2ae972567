import { PhigateError } from '../errors.ts';

/** Reasons that say the issuer, not the token, is at fault: the client may retry the same token. */
const ISSUER_REASONS = new Set(['issuer_unreachable', 'issuer_misconfigured']);

/**
 * The error for every refused access token. The message is the same whatever went wrong so that
 * nothing from the token (or from jose's messages about it) reaches the client; `reason` says
 * which check failed and `cause` keeps the detail for logs.
 */
export function tokenRefused(reason: string, cause?: unknown): PhigateError {
  const message = ISSUER_REASONS.has(reason)
    ? 'The access token cannot be verified right now.'
    : 'The access token is not valid.';
  return new PhigateError('UNAUTHENTICATED', message, { reason, cause });
}
