import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createDevIssuerHandler } from '../../src/auth/dev-issuer.ts';
import { loadOrCreateDevIssuerKeys } from '../../src/auth/dev-issuer-keys.ts';
import type { DevIssuerKeys } from '../../src/auth/dev-issuer-keys.ts';
import { mintDevToken } from '../../src/auth/dev-token.ts';
import type { DevTokenClaims } from '../../src/auth/dev-token.ts';

/** What a test may say about a token; `issuer` and `audience` default to this issuer and 'phigate'. */
export type TestTokenClaims = Partial<Omit<DevTokenClaims, 'subject' | 'roles' | 'clinics' | 'mfa'>> & {
  sub: string;
  roles: string[];
  clinics: string[];
  mfa?: boolean;
};

export interface TestIssuer {
  /** `http://127.0.0.1:<port>/dev-issuer` */
  readonly issuer: string;
  readonly audience: string;
  readonly keys: DevIssuerKeys;
  token(claims: TestTokenClaims): Promise<string>;
  /** While down, the JWKS endpoint answers 503 (discovery keeps working). */
  setJwksDown(down: boolean): void;
  /** JWKS requests received so far, including those refused while down. */
  jwksRequests(): number;
  /** While down, the discovery document answers 503. */
  setDiscoveryDown(down: boolean): void;
  /** Discovery requests received so far, including those refused while down. */
  discoveryRequests(): number;
  close(): Promise<void>;
}

/**
 * A real OIDC issuer on loopback: the development issuer's handler behind node:http, so tests
 * verify tokens over HTTP through the same discovery and JWKS code as production.
 * Keys live in `opts.dir`, or in a temporary directory removed by close(). `opts.discovery` adds
 * fields to (or replaces fields of) the discovery document, e.g. a token endpoint on another host.
 */
export async function startTestIssuer(opts: { dir?: string; discovery?: Readonly<Record<string, string>> } = {}): Promise<TestIssuer> {
  const dir = opts.dir ?? (await mkdtemp(path.join(tmpdir(), 'phigate-issuer-')));
  const keys = await loadOrCreateDevIssuerKeys(dir);
  let issuer = '';
  let jwksDown = false;
  let jwksRequests = 0;
  let discoveryDown = false;
  let discoveryRequests = 0;
  const handle = createDevIssuerHandler({ issuer: () => issuer, keys });

  const server = createServer((req, res) => {
    const pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (pathname === '/dev-issuer/.well-known/openid-configuration') {
      discoveryRequests += 1;
      if (discoveryDown) {
        res.writeHead(503).end();
        return;
      }
      if (opts.discovery !== undefined) {
        const body = JSON.stringify({ issuer, jwks_uri: `${issuer}/jwks`, ...opts.discovery });
        res.writeHead(200, { 'content-type': 'application/json' }).end(body);
        return;
      }
    }
    if (pathname === '/dev-issuer/jwks') {
      jwksRequests += 1;
      if (jwksDown) {
        res.writeHead(503).end();
        return;
      }
    }
    if (!handle(req, res)) res.writeHead(404).end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}/dev-issuer`;
  const audience = 'phigate';

  return {
    issuer,
    audience,
    keys,
    token: ({ sub, mfa = false, ...rest }) => mintDevToken(keys, { issuer, audience, ...rest, subject: sub, mfa }),
    setJwksDown: (down) => {
      jwksDown = down;
    },
    jwksRequests: () => jwksRequests,
    setDiscoveryDown: (down) => {
      discoveryDown = down;
    },
    discoveryRequests: () => discoveryRequests,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => server.close((e) => (e ? reject(e) : resolve())));
      if (opts.dir === undefined) await rm(dir, { recursive: true, force: true });
    },
  };
}
