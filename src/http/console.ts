import { readdir, readFile } from 'node:fs/promises';
import type http from 'node:http';
import path from 'node:path';
import { createConsoleOrigins } from './console-origins.ts';

/** Where the console's files are: plain ES modules, a stylesheet and one page, nothing fetched from elsewhere. */
export const CONSOLE_DIR = path.resolve(import.meta.dirname, '../../console');
const PREFIX = '/console/';

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

/**
 * Scripts and styles from this origin only, no inline script or style; queries to this origin and
 * to `connectOrigins` (the issuer's and its token endpoint's: console-origins.ts); no frame may
 * show the page, and no form posts anywhere (the console's forms are handled by its script).
 */
export function consoleCsp(connectOrigins: readonly string[]): string {
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    ["connect-src 'self'", ...connectOrigins].join(' '),
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

export interface ConsoleOptions {
  /** The OIDC issuer the console signs in with. */
  readonly issuer: string;
  /** The console's client id at that issuer (a public client: PKCE, no secret). */
  readonly clientId: string;
}

/**
 * The compliance console at `/console/`: its files are read once at start-up and served with
 * `Cache-Control: no-store` (what the pages show is fetched from /graphql with a token held in
 * memory, and nothing of it may stay in a cache). `config.json` tells the page its issuer. The
 * first page served waits for the issuer's discovery document, which names the origins its
 * Content-Security-Policy lets the page fetch from.
 */
export async function createConsoleRoute(opts: ConsoleOptions): Promise<(req: http.IncomingMessage, res: http.ServerResponse) => boolean> {
  const files = new Map<string, { type: string; body: Buffer }>();
  for (const name of await readdir(CONSOLE_DIR)) {
    const type = TYPES[path.extname(name)];
    if (type !== undefined) files.set(name, { type, body: await readFile(path.join(CONSOLE_DIR, name)) });
  }
  files.set('config.json', { type: 'application/json', body: Buffer.from(JSON.stringify({ issuer: opts.issuer, clientId: opts.clientId, graphql: '/graphql' })) });
  const connectOrigins = createConsoleOrigins(opts.issuer);

  return (req, res) => {
    const pathname = (req.url ?? '/').split('?')[0] ?? '/';
    if (pathname === '/console') {
      res.writeHead(308, { location: PREFIX }).end();
      return true;
    }
    if (!pathname.startsWith(PREFIX)) return false;
    const file = files.get(pathname === PREFIX ? 'index.html' : pathname.slice(PREFIX.length));
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return true;
    }
    if (file === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end('not found\n');
      return true;
    }
    void connectOrigins().then((origins) => {
      res.writeHead(200, {
        'content-type': file.type,
        'content-length': file.body.length,
        'cache-control': 'no-store',
        'content-security-policy': consoleCsp(origins),
        // The page's address carries the authorization code on return from the issuer: no referrer takes it along.
        'referrer-policy': 'no-referrer',
        'x-content-type-options': 'nosniff',
      });
      res.end(req.method === 'HEAD' ? undefined : file.body);
    });
    return true;
  };
}
