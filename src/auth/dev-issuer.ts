import type { IncomingMessage, ServerResponse } from 'node:http';
import type { DevIssuerKeys } from './dev-issuer-keys.ts';

/**
 * Serves the development issuer's discovery document and JWKS, so that the gateway verifies its
 * own development tokens through the same discovery and JWKS code as any production IdP.
 *
 * There is no authorization or token endpoint: development tokens are minted by `phigate token`.
 * Returns false for any other path, so the caller can route it elsewhere.
 */
export function createDevIssuerHandler(opts: {
  /** Full issuer URL; a function because the port is only known once the server listens. */
  issuer: () => string;
  keys: DevIssuerKeys;
}): (req: IncomingMessage, res: ServerResponse) => boolean {
  const jwks = JSON.stringify({ keys: [opts.keys.publicJwk] });

  return (req, res) => {
    const issuer = opts.issuer().replace(/\/+$/, '');
    const base = new URL(issuer).pathname.replace(/\/+$/, '');
    const pathname = new URL(req.url ?? '/', 'http://localhost').pathname;

    let body: string;
    if (pathname === `${base}/.well-known/openid-configuration`) {
      body = JSON.stringify({
        issuer: opts.issuer(),
        jwks_uri: `${issuer}/jwks`,
        id_token_signing_alg_values_supported: ['ES256'],
        subject_types_supported: ['public'],
      });
    } else if (pathname === `${base}/jwks`) {
      body = jwks;
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
