import { createLocalJWKSet, createRemoteJWKSet, customFetch, errors } from 'jose';
import type { FetchImplementation, JWTVerifyGetKey } from 'jose';
import { outboundRequest } from '../net/outbound-request.ts';
import { tokenRefused } from './token-refused.ts';

/**
 * An unknown `kid` fetches the JWKS again once the last fetch is this old, so a key the IdP has just
 * started signing with is accepted within seconds. A storm of made-up kids costs the IdP at most one
 * fetch per COOLDOWN_MS: jose shares one fetch in flight among all callers and starts the cooldown
 * when it succeeds (RETRY_MS below covers failures). Tokens naming another issuer never get here.
 */
const COOLDOWN_MS = 5_000;
/** Keys older than this are refetched before use; if that fails, they are used anyway (below). */
const MAX_AGE_MS = 10 * 60_000;
const TIMEOUT_MS = 5_000;
/** After a failed fetch, no other is tried for this long: requests use the keys we already have. */
const RETRY_MS = 5_000;

/** Errors from jose's JWKS resolver that mean "could not fetch the set", not "no key fits". */
const FETCH_FAILURES = new Set([errors.JOSEError.code, errors.JWKSTimeout.code, errors.JWKSInvalid.code]);

/**
 * The issuer's JWKS, fetched with jose and kept usable while the endpoint is down.
 *
 * jose alone would refuse every token once its cache is older than `cacheMaxAge` and a refetch
 * fails, and when fetches fail its cooldown never starts, so every token with an unknown `kid`
 * would trigger another fetch. So a failed fetch switches to the last keys fetched, for RETRY_MS:
 * an IdP outage neither locks users out nor turns each request into a request to the IdP. The
 * price is that a key the IdP has just withdrawn stays trusted until the JWKS can be read again.
 */
export function createCachedRemoteJwks(jwksUri: URL, now: () => number): JWTVerifyGetKey {
  const remote = createRemoteJWKSet(jwksUri, {
    cooldownDuration: COOLDOWN_MS,
    cacheMaxAge: MAX_AGE_MS,
    timeoutDuration: TIMEOUT_MS,
    [customFetch]: jwksRequest,
  });
  let offlineUntil = -Infinity;
  let lastKnown: JWTVerifyGetKey | undefined;
  let lastFailure: unknown;

  return async (header, token) => {
    if (now() >= offlineUntil) {
      try {
        return await remote(header, token);
      } catch (e) {
        if (!isFetchFailure(e)) throw e;
        offlineUntil = now() + RETRY_MS;
        lastFailure = e;
        const cached = remote.jwks();
        lastKnown = cached && createLocalJWKSet(cached);
      }
    }
    if (!lastKnown) throw tokenRefused('issuer_unreachable', lastFailure);
    return lastKnown(header, token);
  };
}

/** jose's JWKS request through node:http rather than fetch (src/net/outbound-request.ts says why). */
const jwksRequest: FetchImplementation = async (url, { headers, signal }) => {
  const answer = await outboundRequest(new URL(url), { headers: Object.fromEntries(headers), signal });
  // jose reads the body of a 200 only; a Response may not carry one with some other statuses (204, 304).
  return new Response(answer.status === 200 ? answer.text : null, { status: answer.status });
};

function isFetchFailure(e: unknown): boolean {
  // A failed connection rejects with node:http's own error (src/net/outbound-request.ts), not a JOSEError.
  return !(e instanceof errors.JOSEError) || FETCH_FAILURES.has(e.code);
}
