import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { launchChromium, signInAs, startConsoleGateway, type ConsoleGateway } from '../support/console-browser.ts';

const OUT = path.resolve(import.meta.dirname, '../../docs/console');

let cg: ConsoleGateway;
let browser: Browser;
beforeAll(async () => {
  [cg, browser] = await Promise.all([startConsoleGateway(), launchChromium()]);
  await mkdir(OUT, { recursive: true });
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await cg?.close();
});

const shot = async (page: Page, name: string) => page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: true });

async function openAs(sub: string): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  await signInAs(page, cg.origin, sub);
  return page;
}

it('takes a screenshot of every console page', async () => {
  const first = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  await first.goto(`${cg.origin}/console/`);
  await shot(first, 'sign-in');
  await first.getByRole('button', { name: 'Sign in' }).click();
  await first.getByLabel('Staff member').selectOption('compliance-1');
  await shot(first, 'dev-issuer-login');

  for (const [dr, reason] of [
    ['dr-north-1', 'Unconscious in the emergency department, no care-team physician reachable'],
    ['dr-north-2', 'Covering the night shift for a colleague, patient deteriorating on the ward'],
  ] as const) {
    const patient = cg.gw.data.patients.find((p) => p.clinicId === 'c-north' && !p.careTeam.includes(dr));
    const opened = await cg.gw.gql(await cg.devToken(dr), 'mutation($id: ID!, $r: String!) { breakGlass(patientId: $id, reason: $r) { id } }', { id: patient?.id, r: reason });
    expect(opened.body.errors).toBeUndefined();
  }

  const compliance = await openAs('compliance-1');
  await compliance.locator('tr[data-grant]').first().waitFor();
  await shot(compliance, 'break-glass-review');
  await compliance.getByRole('link', { name: 'Audit search' }).click();
  await shot(compliance, 'audit-search');
  await compliance.getByRole('link', { name: 'Accounting of disclosures' }).click();
  await shot(compliance, 'disclosures');

  const admin = await openAs('admin-north');
  await admin.locator('main h1').waitFor();
  await shot(admin, 'api-keys');
  await admin.getByRole('link', { name: 'Care teams' }).click();
  await shot(admin, 'care-teams');

  const physician = await openAs('dr-north-1');
  await physician.getByRole('heading', { name: 'Nothing to show' }).waitFor();
  await shot(physician, 'physician');
});
