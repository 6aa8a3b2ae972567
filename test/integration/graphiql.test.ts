import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assembleApp, type App } from '../../src/app.ts';
import { loadConfig } from '../../src/config.ts';
import { createLogger } from '../../src/log.ts';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { onFreePort } from '../support/free-port.ts';

// GraphiQL as `npm start` serves it: the app assembled from a development configuration with the
// built-in issuer, on loopback. Offline means every byte the page needs comes from the gateway:
// the page, and every file it references, is fetched here from the gateway itself and searched for
// addresses elsewhere.

const CDN = /unpkg\.com|jsdelivr|cdnjs|esm\.sh|skypack|githubusercontent|googleapis|gstatic/;

let db: TestDatabase;
let dataDir: string;
let app: App;
let base: string;

const stop = async (a: App) => {
  await a.gateway.close();
  await Promise.all([a.pool.end(), a.keyPool.end()]);
};

/** The app of a development configuration, listening; the port is chosen first because the development issuer's URL names it. */
const startApp = (env: Record<string, string>) =>
  onFreePort(async (port) => {
    const config = loadConfig({ PHIGATE_ENV: 'development', PHIGATE_PORT: String(port), PHIGATE_DATA_DIR: dataDir, ...db.gatewayEnv, ...env });
    const started = await assembleApp(config, db.appUrl, createLogger('silent'));
    await started.gateway.listen(config.port, config.host).catch(async (err: unknown) => {
      await stop(started);
      throw err;
    });
    return { app: started, base: `http://127.0.0.1:${port}` };
  });

beforeAll(async () => {
  db = await createTestDatabase();
  dataDir = await mkdtemp(path.join(tmpdir(), 'phigate-graphiql-'));
  ({ app, base } = await startApp({ PHIGATE_LOCAL_MASTER_KEY: randomBytes(32).toString('base64') }));
});
afterAll(async () => {
  if (app) await stop(app);
  await db?.drop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

const page = () => fetch(`${base}/graphql`, { headers: { accept: 'text/html' } });
const optionsOf = (html: string) =>
  JSON.parse(/<script type="application\/json" id="graphiql-options">([^<]*)<\/script>/.exec(html)![1]!) as { headers: string; endpoint: string; shouldPersistHeaders: boolean };

describe('GraphiQL at /graphql (development)', () => {
  it('is a page whose every referenced file loads from the gateway itself, none of them naming another host', async () => {
    const res = await page();
    expect(res.status).toBe(200);
    const html = await res.text();
    expect(html).not.toMatch(/https?:\/\/|\/\/[a-z0-9.-]+\.[a-z]{2,}\//i);

    const referenced = [...html.matchAll(/\s(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(referenced.length).toBeGreaterThanOrEqual(4);
    const start = referenced.find((r) => r.endsWith('/start.js'));
    expect(start).toBeDefined();
    // The editor's workers are named by the start script, not by the page.
    const startScript = await (await fetch(`${base}${start}`)).text();
    const workers = [...startScript.matchAll(/'(\/graphiql\/[^']+\.js)'/g)].map((m) => m[1]!);
    expect(workers).toHaveLength(3);

    for (const file of [...referenced, ...workers]) {
      expect(file, file).toMatch(/^\/[^/]/);
      const asset = await fetch(`${base}${file}`);
      expect(asset.status, file).toBe(200);
      const type = asset.headers.get('content-type') ?? '';
      if (type.startsWith('image/')) continue;
      const text = await asset.text();
      expect(text.length, file).toBeGreaterThan(100);
      expect(CDN.test(text), `${file} names a CDN`).toBe(false);
      if (type.startsWith('text/css')) {
        for (const [, url] of text.matchAll(/url\(\s*['"]?([^'")]+)/g)) expect(url, file).toMatch(/^data:/);
      }
    }
    expect(startScript).not.toMatch(/https?:/);
  });

  it('runs no inline script and lets the page load nothing from elsewhere (CSP)', async () => {
    const res = await page();
    const csp = res.headers.get('content-security-policy')!;
    expect(csp).toMatch(/(^|; )default-src 'none'(;|$)/);
    for (const directive of ['script-src', 'connect-src', 'worker-src']) expect(csp).toMatch(new RegExp(`(^|; )${directive} 'self'(;|$)`));
    expect(csp).not.toMatch(/https?:|\*|unsafe-eval/);
    expect(csp).not.toMatch(/script-src[^;]*unsafe-inline/);
    const html = await res.text();
    // Every <script> either loads a file or is a JSON data block, which browsers do not execute.
    for (const [tag] of html.matchAll(/<script[^>]*>/g)) expect(tag).toMatch(/ src="|type="application\/json"/);
    expect(res.headers.get('cache-control')).toBe('no-store');
  });

  it('starts with the Authorization header of a seeded physician, a token the gateway accepts, fresh on every load and never persisted', async () => {
    const first = optionsOf(await (await page()).text());
    const second = optionsOf(await (await page()).text());
    expect(first.endpoint).toBe('/graphql');
    expect(first.shouldPersistHeaders).toBe(false);
    const authorization = (JSON.parse(first.headers) as { Authorization: string }).Authorization;
    expect(authorization).toMatch(/^Bearer [\w-]+\.[\w-]+\.[\w-]+$/);
    expect((JSON.parse(second.headers) as { Authorization: string }).Authorization).not.toBe(authorization);

    const res = await fetch(`${base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization },
      body: JSON.stringify({ query: '{ me { subject roles mfa } }' }),
    });
    expect(await res.json()).toEqual({ data: { me: { subject: 'dr-north-1', roles: ['physician'], mfa: true } } });
  });

  it('a GET that is not a browser asking for the page is still refused (405)', async () => {
    const res = await fetch(`${base}/graphql?query=${encodeURIComponent('{ me { subject } }')}`);
    expect(res.status).toBe(405);
    const unknownAsset = await fetch(`${base}/graphiql/elsewhere.js`);
    expect(unknownAsset.status).toBe(404);
  });
});

describe('PHIGATE_GRAPHIQL=off (development)', () => {
  it('serves no GraphiQL: a browser asking for the page is refused like any GET, and its files are not there', async () => {
    const off = await startApp({ PHIGATE_GRAPHIQL: 'off', PHIGATE_LOCAL_MASTER_KEY: randomBytes(32).toString('base64') });
    try {
      const res = await fetch(`${off.base}/graphql`, { headers: { accept: 'text/html' } });
      expect(res.status).toBe(405);
      expect(res.headers.get('content-type') ?? '').not.toMatch(/^text\/html/);
      expect((await fetch(`${off.base}/graphiql/start.js`)).status).not.toBe(200);
    } finally {
      await stop(off.app);
    }
  });
});
