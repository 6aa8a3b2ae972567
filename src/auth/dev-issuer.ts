import type { IncomingMessage, ServerResponse } from 'node:http';
import { createDevLogin, type DevLoginOptions } from './dev-login.ts';

/**
 * Serves the development issuer's discovery document and JWKS, so that the gateway verifies its
 * own development tokens through the same discovery and JWKS code as any production IdP, and its
 * authorization and token endpoints (dev-login.ts), so that the console signs in as it would
 * with a production IdP. `phigate token` mints tokens without them.
 * Returns false for any other path, so the caller can route it elsewhere.
 */
export function createDevIssuerHandler(
  opts: Pick<DevLoginOptions, 'issuer' | 'keys'> & {
    /** Who may sign in and what their tokens carry; unset, no authorization or token endpoint. */
    login?: Omit<DevLoginOptions, 'issuer' | 'keys'>;
  },
): (req: IncomingMessage, res: ServerResponse) => boolean {
  const jwks = JSON.stringify({ keys: [opts.keys.publicJwk] });
  const login = opts.login === undefined ? null : createDevLogin({ ...opts.login, issuer: opts.issuer, keys: opts.keys });

  return (req, res) => {
    const issuer = opts.issuer().replace(/\/+$/, '');
    const base = new URL(issuer).pathname.replace(/\/+$/, '');
    const pathname = new URL(req.url ?? '/', 'http://localhost').pathname;

    let body: string;
    if (pathname === `${base}/.well-known/openid-configuration`) {
      body = JSON.stringify({
        issuer: opts.issuer(),
        jwks_uri: `${issuer}/jwks`,
        ...(login === null
          ? {}
          : {
              authorization_endpoint: `${issuer}/authorize`,
              token_endpoint: `${issuer}/token`,
              response_types_supported: ['code'],
              grant_types_supported: ['authorization_code'],
              code_challenge_methods_supported: ['S256'],
              token_endpoint_auth_methods_supported: ['none'],
            }),
        id_token_signing_alg_values_supported: ['ES256'],
        subject_types_supported: ['public'],
      });
    } else if (pathname === `${base}/jwks`) {
      body = jwks;
    } else if (login !== null && (pathname === `${base}/authorize` || pathname === `${base}/token`)) {
      const endpoint = pathname.endsWith('/token') ? login.token : login.authorize;
      endpoint(req, res).catch(() => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('development issuer failed\n');
      });
      return true;
    } else {
      return false;
    }

    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return true;
    }
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
    return true;
  };
}
