import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { createDevIssuerHandler } from '../../src/auth/dev-issuer.ts';
import { loadOrCreateDevIssuerKeys, type DevIssuerKeys } from '../../src/auth/dev-issuer-keys.ts';
import { mintDevToken } from '../../src/auth/dev-token.ts';
import { createConsoleRoute } from '../../src/http/console.ts';
import { onFreePort } from './free-port.ts';
import { startTestGateway, type TestGateway } from './gateway.ts';

export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];

export interface ConsoleGateway {
  readonly gw: TestGateway;
  /** The gateway's origin, e.g. http://127.0.0.1:PORT */
  readonly origin: string;
  readonly issuer: string;
  /** An access token of the development issuer for a seeded staff member (MFA), as the console would hold. */
  devToken(sub: string): Promise<string>;
  close(): Promise<void>;
}

/**
 * The test gateway as `npm start` assembles it in development: the development issuer (with its
 * login page) and the console served by the gateway itself, tokens verified through the issuer's
 * discovery document and JWKS over HTTP (the gateway's other credentials, such as partner keys,
 * as in any test gateway). The port is chosen first because the issuer's URL names it (onFreePort).
 */
export async function startConsoleGateway(opts: { patients?: number; maxPageSize?: number } = {}): Promise<ConsoleGateway> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'phigate-console-test-'));
  const keys: DevIssuerKeys = await loadOrCreateDevIssuerKeys(dataDir);
  let staff: TestGateway['data']['staff'] = [];
  const { gw, origin, issuer } = await onFreePort(async (port) => {
    const origin = `http://127.0.0.1:${port}`;
    const issuer = `${origin}/dev-issuer`;
    const gw = await startTestGateway({
      patients: opts.patients ?? 24,
      port,
      oidcIssuer: issuer,
      gatewayOptions: {
        // The tests raise alerts when they choose (phigate.sweep_alerts), so none appears mid-assertion.
        alertSweepSeconds: 3600,
        ...(opts.maxPageSize === undefined ? {} : { maxPageSize: opts.maxPageSize }),
        routes: [
          createDevIssuerHandler({
            issuer: () => issuer,
            keys,
            login: { staff: async () => staff, audience: 'phigate', rolesClaim: 'roles', clinicsClaim: 'clinics', tokenTtlSeconds: 900 },
          }),
          await createConsoleRoute({ issuer, clientId: 'phigate-console' }),
        ],
      },
    });
    return { gw, origin, issuer };
  });
  staff = gw.data.staff;
  return {
    gw,
    origin,
    issuer,
    devToken: (sub) => {
      const s = gw.staff(sub);
      return mintDevToken(keys, { issuer, audience: 'phigate', subject: sub, roles: [...s.roles], clinics: [...s.clinics], mfa: true });
    },
    async close() {
      await gw.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export const launchChromium = (): Promise<Browser> => chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });

/** Opens the console and signs in through the development issuer's login page as `sub`. */
export async function signInAs(page: Page, origin: string, sub: string): Promise<void> {
  await page.goto(`${origin}/console/`);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByLabel('Staff member').selectOption(sub);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#who').filter({ hasText: sub }).waitFor();
}
