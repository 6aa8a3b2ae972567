import { discoveryDocument, documentedEndpoint } from '../auth/discovery.ts';

/** How long after a failed discovery the console's pages keep the narrower policy before discovery is tried again. */
export const CONSOLE_ORIGINS_RETRY_MS = 2_000;

/**
 * The origins the console's sign-in fetches from (console/auth.js): the issuer's, for its
 * discovery document, and its token endpoint's, which many IdPs serve from another host (custom
 * domains, Azure AD, Keycloak behind another name). The authorization endpoint is left to the
 * browser as a navigation, which connect-src does not govern. Throws when the document cannot be
 * had, names another issuer or no usable token endpoint.
 */
export async function consoleConnectOrigins(issuer: string): Promise<string[]> {
  const tokenEndpoint = documentedEndpoint(await discoveryDocument(issuer), 'token_endpoint', issuer);
  if (tokenEndpoint === null) throw new Error('the discovery document has no usable token_endpoint');
  return [...new Set([new URL(issuer).origin, tokenEndpoint.origin])];
}

/**
 * consoleConnectOrigins, asked when a page is first served (the issuer may answer only after the
 * gateway starts, and the development issuer is the gateway itself) and then kept. Until the
 * document has been read, pages allow the issuer's origin alone: sign-in cannot finish, but no
 * origin the issuer did not name is ever allowed. One discovery at a time, and after a failure
 * none for CONSOLE_ORIGINS_RETRY_MS, however many pages are asked for.
 */
export function createConsoleOrigins(issuer: string, now: () => number = Date.now): () => Promise<readonly string[]> {
  const fallback: readonly string[] = [new URL(issuer).origin];
  let known: readonly string[] | null = null;
  let asking: Promise<readonly string[]> | null = null;
  let failedAt = -Infinity;
  return () => {
    if (known !== null) return Promise.resolve(known);
    if (asking !== null) return asking;
    if (now() - failedAt < CONSOLE_ORIGINS_RETRY_MS) return Promise.resolve(fallback);
    asking = consoleConnectOrigins(issuer)
      .then(
        (origins) => (known = origins),
        () => {
          failedAt = now();
          return fallback;
        },
      )
      .finally(() => {
        asking = null;
      });
    return asking;
  };
}
