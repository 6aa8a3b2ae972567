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

  // Some history to show: reads by the care team, a billing clerk's denied notes, and the alerts
  // a sweep with zero thresholds raises from them.
  const dr = 'dr-north-1';
  const patient = cg.gw.data.patients.find((p) => p.clinicId === 'c-north' && p.careTeam.includes(dr));
  if (patient === undefined) throw new Error('no c-north patient on the care team of dr-north-1');
  for (const sub of [dr, dr, 'bill-north']) await cg.gw.gql(await cg.devToken(sub), 'query($id: ID!) { patient(id: $id) { mrn ssn encounters { notes } } }', { id: patient.id });
  await cg.gw.admin(async (c) => {
    await c.query("UPDATE phigate.alert_sweep SET swept_until = now() - interval '10 minutes'");
    // Zero thresholds are no setting's: the owner's unchecked sweep takes them (migration 042).
    await c.query("SELECT * FROM phigate.sweep_alerts_unchecked(0, 0, '00:00', '00:00', 'UTC', 0)");
  });

  const compliance = await openAs('compliance-1');
  await compliance.locator('tr[data-grant]').first().getByRole('button', { name: /^Review grant/ }).click();
  await compliance.locator('#grant-detail form').waitFor();
  await shot(compliance, 'break-glass-review');
  await compliance.getByRole('link', { name: 'Alerts' }).click();
  await compliance.locator('tr[data-alert]').first().waitFor();
  await shot(compliance, 'alerts');
  await compliance.getByRole('link', { name: 'Audit search' }).click();
  await compliance.getByLabel('Actor').fill(dr);
  await compliance.getByRole('button', { name: 'Search' }).click();
  await compliance.locator('#audit-results tr').nth(1).waitFor();
  await shot(compliance, 'audit-search');
  await compliance.getByRole('link', { name: 'Accounting of disclosures' }).click();
  await compliance.getByLabel('Patient id').fill(patient.id);
  await compliance.getByRole('button', { name: 'Produce accounting' }).click();
  await compliance.locator('#disclosure-results tbody tr').first().waitFor();
  await shot(compliance, 'disclosures');
  await compliance.emulateMedia({ media: 'print' });
  await shot(compliance, 'disclosures-print');
  await compliance.emulateMedia({ media: 'screen' });
  await compliance.getByRole('link', { name: 'Charts' }).click();
  await compliance.locator('#denied-figure').waitFor();
  await compliance.getByLabel('Patient id').fill(patient.id);
  await compliance.getByRole('button', { name: 'Chart accesses' }).click();
  await compliance.locator('#access-figure').waitFor();
  await shot(compliance, 'charts');

  const admin = await openAs('admin-north');
  await admin.locator('main h1').waitFor();
  await shot(admin, 'api-keys');
  await admin.getByRole('link', { name: 'Care teams' }).click();
  await shot(admin, 'care-teams');

  const physician = await openAs('dr-north-1');
  await physician.getByRole('heading', { name: 'Nothing to show' }).waitFor();
  await shot(physician, 'physician');
});
