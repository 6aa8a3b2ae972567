import type { JWTVerifyGetKey } from 'jose';
import { createCachedRemoteJwks } from './cached-remote-jwks.ts';
import { discoverJwksUri } from './discovery.ts';
import { tokenRefused } from './token-refused.ts';

/** After a failed discovery, requests are refused without another attempt for this long. */
const RETRY_MS = 5_000;

/**
 * The key resolver for one issuer. Discovery happens on the first token that gets as far as
 * needing a key (so malformed tokens never cause network traffic), is shared by concurrent
 * requests, and is kept once it succeeds. A failure is kept only for RETRY_MS, so a gateway
 * started while its IdP is down recovers by itself without hammering the IdP meanwhile.
 */
export function createIssuerKeys(issuer: string, now: () => number): JWTVerifyGetKey {
  let keys: Promise<JWTVerifyGetKey> | undefined;
  let retryAt = -Infinity;

  return async (header, token) => {
    if (!keys) {
      if (now() < retryAt) throw tokenRefused('issuer_unreachable', new Error('discovery failed recently'));
      const attempt = discoverJwksUri(issuer).then((jwksUri) => createCachedRemoteJwks(jwksUri, now));
      keys = attempt;
      attempt.catch(() => {
        keys = undefined;
        retryAt = now() + RETRY_MS;
      });
    }
    return (await keys)(header, token);
  };
}
