import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { consoleCsp, createConsoleRoute } from '../../src/http/console.ts';
import { CONSOLE_ORIGINS_RETRY_MS, createConsoleOrigins } from '../../src/http/console-origins.ts';
import { startTestIssuer, type TestIssuer } from '../support/oidc-issuer.ts';

// The console's page may fetch from exactly the origins its sign-in uses: the issuer's (discovery)
// and the token endpoint's, which an IdP may serve from another host. Here a real loopback issuer
// names a token endpoint on a second port, and the console is served over HTTP as the gateway serves it.

const closing: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closing.splice(0).reverse()) await close();
});

async function listen(handler: Parameters<typeof createServer>[1]): Promise<{ server: Server; origin: string }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closing.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function issuerWith(discovery?: Record<string, string>): Promise<TestIssuer> {
  const issuer = await startTestIssuer(discovery === undefined ? {} : { discovery });
  closing.push(() => issuer.close());
  return issuer;
}

/** The console as the gateway serves it, signing in with `issuer`. */
async function serveConsole(issuer: string): Promise<string> {
  const route = await createConsoleRoute({ issuer, clientId: 'phigate-console' });
  const { origin } = await listen((req, res) => {
    if (!route(req, res)) res.writeHead(404).end();
  });
  return origin;
}

const connectSrc = (csp: string | null) => csp?.split('; ').find((d) => d.startsWith('connect-src '));

describe('the console Content-Security-Policy', () => {
  it("lets the page fetch from the issuer and from its token endpoint on another origin, and nowhere else", async () => {
    const tokenHost = await listen((_req, res) => res.writeHead(404).end());
    const idp = await issuerWith({ token_endpoint: `${tokenHost.origin}/oauth2/token`, authorization_endpoint: `${tokenHost.origin}/authorize` });
    const consoleOrigin = await serveConsole(idp.issuer);
    const issuerOrigin = new URL(idp.issuer).origin;
    expect(issuerOrigin).not.toBe(tokenHost.origin);

    for (const path of ['/console/', '/console/auth.js', '/console/config.json']) {
      const r = await fetch(`${consoleOrigin}${path}`);
      expect(r.status, path).toBe(200);
      const csp = r.headers.get('content-security-policy');
      expect(csp, path).toBe(consoleCsp([issuerOrigin, tokenHost.origin]));
      expect(connectSrc(csp), path).toBe(`connect-src 'self' ${issuerOrigin} ${tokenHost.origin}`);
      expect(csp).not.toContain('*');
    }
    // Asked once, then kept for every page.
    expect(idp.discoveryRequests()).toBe(1);
  });

  it('names an issuer whose token endpoint is its own origin once', async () => {
    const idp = await issuerWith();
    const r = await fetch(`${await serveConsole(idp.issuer)}/console/`);
    expect(connectSrc(r.headers.get('content-security-policy'))).toBe(`connect-src 'self' ${new URL(idp.issuer).origin}`);
  });

  it('allows the issuer alone while its discovery document cannot be read, and its token endpoint once it can', async () => {
    const tokenHost = await listen((_req, res) => res.writeHead(404).end());
    const idp = await issuerWith({ token_endpoint: `${tokenHost.origin}/token` });
    const issuerOrigin = new URL(idp.issuer).origin;
    let clock = 1_000_000;
    const origins = createConsoleOrigins(idp.issuer, () => clock);

    idp.setDiscoveryDown(true);
    expect(await origins()).toEqual([issuerOrigin]);
    idp.setDiscoveryDown(false);
    // Not asked again so soon, however many pages are served meanwhile.
    expect(await Promise.all([origins(), origins(), origins()])).toEqual([[issuerOrigin], [issuerOrigin], [issuerOrigin]]);
    expect(idp.discoveryRequests()).toBe(1);

    clock += CONSOLE_ORIGINS_RETRY_MS;
    // Concurrent pages share one discovery.
    const answers = await Promise.all([origins(), origins(), origins()]);
    for (const a of answers) expect(a).toEqual([issuerOrigin, tokenHost.origin]);
    expect(idp.discoveryRequests()).toBe(2);
  });

  it('allows the issuer alone when the document names no usable token endpoint', async () => {
    for (const token_endpoint of ['', 'javascript:alert(1)', 'ftp://127.0.0.1/token', 'not a url']) {
      const idp = await issuerWith({ token_endpoint });
      expect(await createConsoleOrigins(idp.issuer)(), token_endpoint).toEqual([new URL(idp.issuer).origin]);
    }
  });

  it('allows the issuer alone when the document names another issuer', async () => {
    const other = await issuerWith();
    const tokenHost = await listen((_req, res) => res.writeHead(404).end());
    const idp = await issuerWith({ issuer: other.issuer, token_endpoint: `${tokenHost.origin}/token` });
    expect(await createConsoleOrigins(idp.issuer)()).toEqual([new URL(idp.issuer).origin]);
  });
});
