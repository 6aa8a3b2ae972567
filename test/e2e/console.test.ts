import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { launchChromium, signInAs, startConsoleGateway, type ConsoleGateway } from '../support/console-browser.ts';

// The console in a real browser (Debian's chromium, driven by playwright-core), against the real
// gateway, development issuer and PostgreSQL: sign-in with PKCE through the issuer's login page,
// each role's pages, what they change in the database, and accessibility checked with axe-core.

const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const REASON = 'Unconscious in the emergency department, no care-team physician reachable';

let cg: ConsoleGateway;
let browser: Browser;
let context: BrowserContext;
let page: Page;
/** Requests the page made to any origin but `home`'s, and CSP refusals it reported: both must stay empty. */
let foreign: string[];
/** The gateway the test at hand drives (a describe may start one of its own). */
let home: () => ConsoleGateway = () => cg;
let refused: string[];

beforeAll(async () => {
  [cg, browser] = await Promise.all([startConsoleGateway(), launchChromium()]);
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await cg?.close();
});
beforeEach(async () => {
  context = await browser.newContext();
  page = await context.newPage();
  foreign = [];
  refused = [];
  page.on('request', (r) => void (new URL(r.url()).origin !== home().origin && !r.url().startsWith('blob:') && foreign.push(r.url())));
  page.on('console', (m) => void (/Content Security Policy|Refused to/.test(m.text()) && refused.push(m.text())));
});
afterEach(async () => {
  await context.close();
  expect(foreign).toEqual([]);
  expect(refused).toEqual([]);
});

/** axe-core's violations on the page as shown; evaluated through the debugging protocol, which the page's CSP does not govern. */
async function axeViolations(p: Page): Promise<string[]> {
  await p.evaluate(AXE);
  const result = await p.evaluate(async () => (globalThis as any).axe.run(document, { resultTypes: ['violations'] }));
  return result.violations.map((v: { id: string; nodes: unknown[] }) => `${v.id} (${v.nodes.length})`);
}

/** At 200% zoom a 1280-pixel window is 640 CSS pixels wide: the page must not need sideways scrolling. */
async function readableAtDoubleZoom(p: Page): Promise<void> {
  await p.setViewportSize({ width: 640, height: 800 });
  expect(await p.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(true);
  await p.setViewportSize({ width: 1280, height: 800 });
}

describe('console delivery', () => {
  it('is served by the gateway with no-store and a strict CSP on every file, no inline script or style, and its config names the issuer', async () => {
    const res = await fetch(`${cg.origin}/console/`);
    expect(res.status).toBe(200);
    const html = await res.text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)/);
    expect(html).not.toMatch(/<style|\sstyle=|\son[a-z]+=/i);
    const files = ['', ...[...html.matchAll(/(?:src|href)="\/console\/([^"]+)"/g)].map((m) => m[1] ?? '')];
    expect(files).toEqual(['', 'console.css', 'main.js']);
    for (const name of [...files, 'alerts.js', 'charts.js', 'pdf.js', 'config.json']) {
      const r = await fetch(`${cg.origin}/console/${name}`);
      expect(r.status, name).toBe(200);
      expect(r.headers.get('cache-control'), name).toBe('no-store');
      expect(r.headers.get('x-content-type-options'), name).toBe('nosniff');
      expect(r.headers.get('referrer-policy'), name).toBe('no-referrer');
      expect(r.headers.get('content-security-policy'), name).toBe(
        `default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self' ${new URL(cg.issuer).origin}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
      );
    }
    expect(await (await fetch(`${cg.origin}/console/config.json`)).json()).toEqual({ issuer: cg.issuer, clientId: 'phigate-console', graphql: '/graphql' });
    expect((await fetch(`${cg.origin}/console/..%2Fsrc%2Fapp.ts`)).status).toBe(404);
    const bare = await fetch(`${cg.origin}/console`, { redirect: 'manual' });
    expect([bare.status, bare.headers.get('location')]).toEqual([308, '/console/']);
  });
});

describe('development issuer sign-in', () => {
  const authorize = (over: Record<string, string> = {}) =>
    `${cg.issuer}/authorize?${new URLSearchParams({ response_type: 'code', client_id: 'phigate-console', redirect_uri: `${cg.origin}/console/`, state: 'state-0123456789abcdef', code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM', code_challenge_method: 'S256', ...over })}`;

  it('refuses a redirect elsewhere and a request without PKCE, saying what is wrong', async () => {
    const elsewhere = await fetch(authorize({ redirect_uri: 'https://attacker.example/console/' }));
    expect(elsewhere.status).toBe(400);
    expect(await elsewhere.text()).toContain('redirect_uri must be');
    const plain = await fetch(authorize({ code_challenge_method: 'plain' }));
    expect(plain.status).toBe(400);
    expect(await plain.text()).toContain('PKCE is required');
  });

  // RFC 7636 appendix B: this verifier hashes to the challenge of `authorize` above.
  const VERIFIER = 'dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk';

  /** The login page's form as a browser posts it: the code it redirects to the console with. */
  async function codeFor(sub: string, mfa: boolean): Promise<string> {
    const form = new URLSearchParams({ ...Object.fromEntries(new URL(authorize()).searchParams), sub, ...(mfa ? { mfa: 'on' } : {}) });
    const login = await fetch(`${cg.issuer}/authorize`, { method: 'POST', body: form, redirect: 'manual' });
    expect(login.status).toBe(303);
    const back = new URL(login.headers.get('location') ?? '');
    expect(`${back.origin}${back.pathname}`).toBe(`${cg.origin}/console/`);
    expect(back.searchParams.get('state')).toBe('state-0123456789abcdef');
    return back.searchParams.get('code') ?? '';
  }
  const redeem = (code: string, verifier: string) =>
    fetch(`${cg.issuer}/token`, { method: 'POST', body: new URLSearchParams({ grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: `${cg.origin}/console/`, client_id: 'phigate-console' }) });

  it('redeems a code only with the verifier of its challenge', async () => {
    const code = await codeFor('compliance-1', true);
    const wrong = await redeem(code, 'x'.repeat(43));
    expect(wrong.status).toBe(400);
    expect(await wrong.json()).toMatchObject({ error: 'invalid_grant' });
    const right = await redeem(code, VERIFIER);
    expect(right.status).toBe(200);
    const { access_token: token } = await right.json();
    const me = await cg.gw.gql(token, '{ me { subject roles mfa } }');
    expect(me.body.data?.me).toEqual({ subject: 'compliance-1', roles: ['compliance'], mfa: true });
  });

  it('signs in without the second factor when its box is unticked, and the gateway sees no MFA', async () => {
    const { access_token: token } = await (await redeem(await codeFor('rn-north-1', false), VERIFIER)).json();
    const me = await cg.gw.gql(token, '{ me { subject mfa } }');
    expect(me.body.data?.me).toEqual({ subject: 'rn-north-1', mfa: false });
  });
});

describe('compliance officer', () => {
  it('finds a grant the test opened, reviews it, and the review is audited', async () => {
    const dr = 'dr-north-1';
    const patient = cg.gw.data.patients.find((p) => p.clinicId === 'c-north' && !p.careTeam.includes(dr));
    if (patient === undefined) throw new Error('the seed has no c-north patient outside the care team of dr-north-1');
    const opened = await cg.gw.gql(await cg.devToken(dr), `mutation($id: ID!, $r: String!) { breakGlass(patientId: $id, reason: $r) { id } }`, { id: patient.id, r: REASON });
    const grantId: string = opened.body.data?.breakGlass.id;
    expect(grantId).toBeTruthy();

    // The queue lists grants without their reasons: opening it discloses no patient's reason.
    const reasonReads = () => cg.gw.auditRows("actor = 'compliance-1' AND type_name = 'BreakGlassGrant' AND field IS NOT NULL AND action = 'read'");
    const readsBefore = (await reasonReads()).length;
    await signInAs(page, cg.origin, 'compliance-1');
    const row = page.locator(`tr[data-grant="${grantId}"]`);
    await expect.poll(() => row.textContent()).toContain('Unreviewed');
    const text = (await row.textContent()) ?? '';
    expect(text).toContain(patient.id);
    expect(text).toContain(dr);
    expect(await page.content()).not.toContain(REASON);
    expect(await reasonReads()).toHaveLength(readsBefore);

    // Reviewing the grant shows its reason, that one grant's, audited once.
    await row.getByRole('button', { name: `Review grant ${grantId}` }).click();
    const detail = page.locator('#grant-detail');
    await expect.poll(() => detail.textContent()).toContain(REASON);
    const reads = (await reasonReads()).slice(readsBefore);
    expect(reads.map((e) => [e.field, e.record_id, e.patient_id])).toEqual([['reason', grantId, patient.id]]);
    // No PHI value on the page: the patient is named by id only.
    for (const value of [patient.givenName, patient.familyName, patient.ssn, patient.mrn]) expect(await page.content()).not.toContain(value);
    expect(await axeViolations(page)).toEqual([]);
    await readableAtDoubleZoom(page);

    await detail.getByLabel('Outcome').selectOption('justified');
    await detail.getByLabel('Comment').fill('Confirmed with the ED charge nurse');
    await detail.getByRole('button', { name: 'Record review' }).click();
    await expect.poll(() => page.locator('#status').textContent()).toContain(`Review recorded for grant ${grantId}`);
    expect(await page.locator(`tr[data-grant="${grantId}"]`).textContent()).toContain('justified by compliance-1');
    expect(await page.content()).not.toContain(REASON);

    const events = await cg.gw.auditRows("action = 'review' AND record_id = $1", [grantId]);
    expect(events).toEqual([expect.objectContaining({ actor: 'compliance-1', detail: 'justified' })]);

    // Opening the reviewed grant shows its reason and the review's comment.
    await page.locator(`tr[data-grant="${grantId}"]`).getByRole('button', { name: `Open grant ${grantId}` }).click();
    await expect.poll(() => detail.textContent()).toContain('justified by compliance-1: Confirmed with the ED charge nurse');
    expect(await detail.textContent()).toContain(REASON);

    // What was read under the grant: the audit search, filtered to the grant's patient and clinician.
    await page.locator(`tr[data-grant="${grantId}"]`).getByRole('link', { name: `Reads under grant ${grantId}` }).click();
    await expect.poll(() => page.locator('#audit-results').textContent()).toContain(dr);
    expect(await page.getByLabel('Patient id').inputValue()).toBe(patient.id);
    expect(await page.getByLabel('Break-glass only').isChecked()).toBe(true);
  });

  it("shows a reason the gateway withholds (its patient's key destroyed) as not shown, and the rest of the queue", async () => {
    const dr = 'dr-north-2';
    const patient = cg.gw.data.patients.filter((p) => p.clinicId === 'c-north' && !p.careTeam.includes(dr)).at(-1)!;
    const opened = await cg.gw.gql(await cg.devToken(dr), `mutation($id: ID!, $r: String!) { breakGlass(patientId: $id, reason: $r) { id } }`, { id: patient.id, r: REASON });
    const grantId: string = opened.body.data?.breakGlass.id;
    expect(grantId).toBeTruthy();
    // What keys shred writes over the grant's sealed reason (src/crypto/envelope.ts SHREDDED_VALUE).
    await cg.gw.admin((c) => c.query(`UPDATE phigate.break_glass_grants SET reason_sealed = '\\x00'::bytea || convert_to('shredded', 'UTF8') WHERE id = $1`, [grantId]));

    await signInAs(page, cg.origin, 'compliance-1');
    const row = page.locator(`tr[data-grant="${grantId}"]`);
    await expect.poll(() => row.textContent()).toContain(patient.id);
    expect(await page.locator('tr[data-grant]').count()).toBeGreaterThan(1);
    await row.getByRole('button', { name: `Review grant ${grantId}` }).click();
    await expect.poll(() => page.locator('#grant-detail').textContent()).toContain('not shown: shredded');
    await page.locator('#grant-detail').getByRole('button', { name: 'Close' }).click();
    expect(await page.locator('#grant-detail').textContent()).toBe('');
    expect(await page.evaluate(() => document.activeElement?.getAttribute('aria-label'))).toBe(`Review grant ${grantId}`);
  });

  it('pages through the queue, one grant a page, forward and back, in the gateway\'s order', async () => {
    const listed = await cg.gw.gql(await cg.devToken('compliance-1'), `query { breakGlassGrants(first: 100) { id } }`, {});
    const order: string[] = listed.body.data?.breakGlassGrants.map((g: { id: string }) => g.id);
    expect(order.length).toBeGreaterThan(1);

    await signInAs(page, cg.origin, 'compliance-1');
    await page.goto(`${cg.origin}/console/#/break-glass?first=1`);
    const shown = () => page.locator('tr[data-grant]').getAttribute('data-grant');
    await expect.poll(shown).toBe(order[0]);
    expect(await page.getByRole('button', { name: 'Previous page' }).count()).toBe(0);
    const forward = [await shown()];
    for (const id of order.slice(1)) {
      await page.getByRole('button', { name: 'Next page' }).click();
      await expect.poll(shown).toBe(id);
      forward.push(id);
    }
    expect(forward).toEqual(order);
    expect(await page.getByRole('button', { name: 'Next page' }).count()).toBe(0);
    await page.getByRole('button', { name: 'Previous page' }).click();
    await expect.poll(shown).toBe(order.at(-2));
  });

  it('finds its own review in the audit search', async () => {
    await signInAs(page, cg.origin, 'compliance-1');
    await page.getByRole('link', { name: 'Audit search' }).click();
    await page.getByLabel('Actor').fill('dr-north-1');
    await page.getByLabel('Break-glass only').check();
    await page.getByRole('button', { name: 'Search' }).click();
    await expect.poll(() => page.locator('#audit-results').textContent()).toContain('dr-north-1');
    expect(await axeViolations(page)).toEqual([]);
  });

  it("produces a patient's accounting whose CSV and PDF downloads match the database's audit rows, and prints without the console around it", async () => {
    const dr = 'dr-north-1';
    const patient = cg.gw.data.patients.find((p) => p.clinicId === 'c-north' && p.careTeam.includes(dr));
    if (patient === undefined) throw new Error('no c-north patient on the care team of dr-north-1');
    const read = await cg.gw.gql(await cg.devToken(dr), 'query($id: ID!) { patient(id: $id) { givenName ssn encounters { notes } } }', { id: patient.id });
    expect(read.body.data?.patient?.givenName).toBeTruthy();
    await cg.gw.gql(await cg.devToken('bill-north'), 'query($id: ID!) { patient(id: $id) { mrn } }', { id: patient.id });
    // The database's own account: one line per request that showed the patient something.
    const expected = await cg.gw.admin(async (c) =>
      (
        await c.query(
          `SELECT request_id, actor, coalesce(string_agg(DISTINCT type_name || '.' || field, ' ') FILTER (WHERE action = 'read'), '') AS shown,
                  coalesce(string_agg(DISTINCT type_name || '.' || field, ' ') FILTER (WHERE action = 'masked'), '') AS masked
           FROM phigate.audit_events WHERE patient_id = $1 AND action IN ('read', 'masked', 'search') GROUP BY 1, 2`,
          [patient.id],
        )
      ).rows.map((r) => [r.request_id, r.actor, r.shown, r.masked].join('|')),
    );
    expect(expected.length).toBeGreaterThanOrEqual(2);

    await signInAs(page, cg.origin, 'compliance-1');
    await page.getByRole('link', { name: 'Accounting of disclosures' }).click();
    await page.getByLabel('Patient id').fill(patient.id);
    await page.getByRole('button', { name: 'Produce accounting' }).click();
    await expect.poll(() => page.locator('#disclosure-results tbody tr').count()).toBe(expected.length);
    expect(await page.locator('#disclosure-results').textContent()).not.toContain(String(patient.givenName));
    expect(await axeViolations(page)).toEqual([]);
    await readableAtDoubleZoom(page);

    const save = async (button: string) => {
      const [file] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: button }).click()]);
      expect(file.suggestedFilename()).toBe(`disclosures-${patient.id}.${button === 'Export CSV' ? 'csv' : 'pdf'}`);
      return readFileSync((await file.path()) ?? '', 'latin1');
    };
    const csv = await save('Export CSV');
    expect(csv).not.toContain('"');
    const [header, ...lines] = csv.trimEnd().split('\r\n').map((l) => l.split(','));
    expect(header).toEqual(['Disclosed at', 'To', 'Kind', 'Role', 'Purpose', 'Fields shown', 'Fields masked', 'Searches', 'Break-glass', 'Request']);
    expect(lines.map((l) => [l[9], l[1], l[5], l[6]].join('|')).sort()).toEqual([...expected].sort());

    const pdf = await save('Export PDF');
    expect(pdf.startsWith('%PDF-1.4\n')).toBe(true);
    expect(pdf.endsWith('%%EOF\n')).toBe(true);
    // Every cross-reference entry points at the start of its object, as a reader needs it to.
    const xrefAt = Number(/startxref\n(\d+)/.exec(pdf)?.[1]);
    expect(pdf.slice(xrefAt, xrefAt + 4)).toBe('xref');
    const entries = [...pdf.slice(xrefAt).matchAll(/^(\d{10}) 00000 n $/gm)].map((m) => Number(m[1]));
    expect(entries.length).toBeGreaterThanOrEqual(5);
    entries.forEach((offset, i) => expect(pdf.slice(offset, offset + `${i + 1} 0 obj`.length)).toBe(`${i + 1} 0 obj`));
    for (const line of expected) expect(pdf).toContain(`request ${line.split('|')[0]}`);
    for (const value of [patient.givenName, patient.familyName, patient.ssn]) expect(pdf).not.toContain(String(value));

    // Printed, the accounting stands alone: no header, navigation, form or buttons.
    await page.emulateMedia({ media: 'print' });
    for (const hidden of ['header', 'form.filters', 'button:text("Export CSV")']) expect(await page.locator(hidden).isVisible()).toBe(false);
    expect(await page.locator('#disclosure-results table').isVisible()).toBe(true);
    await page.emulateMedia({ media: 'screen' });
  });

  it('lists the alerts the sweep raised, newest first, a page at a time', async () => {
    // Reads that cross every rule once its threshold is zero: a physician's read, and a billing
    // clerk's denied notes.
    const dr = 'dr-north-1';
    const mine = cg.gw.data.patients.find((p) => p.clinicId === 'c-north' && p.careTeam.includes(dr));
    await cg.gw.gql(await cg.devToken(dr), 'query($id: ID!) { patient(id: $id) { mrn } }', { id: mine?.id });
    const denied = await cg.gw.gql(await cg.devToken('bill-north'), '{ patients(first: 3) { edges { node { encounters { notes } } } } }');
    expect(denied.body.errors?.[0]?.extensions?.code).toBe('FIELD_DENIED');
    await cg.gw.admin(async (c) => {
      await c.query("UPDATE phigate.alert_sweep SET swept_until = now() - interval '10 minutes'");
      // Zero thresholds are no setting's: the owner's unchecked sweep takes them (migration 042).
      await c.query("SELECT * FROM phigate.sweep_alerts_unchecked(0, 0, '00:00', '00:00', 'UTC', 0)");
    });
    const alerts = await cg.gw.admin(async (c) => (await c.query("SELECT id::text, actor, detail FROM phigate.audit_events WHERE action = 'alert' ORDER BY id DESC")).rows);
    expect(alerts.length).toBeGreaterThanOrEqual(3);
    expect(alerts.map((a) => a.detail.split(':')[0])).toEqual(expect.arrayContaining(['bulk_read', 'denied_spike']));

    await signInAs(page, cg.origin, 'compliance-1');
    await page.evaluate(() => (location.hash = '#/alerts?first=2'));
    const shown = () => page.locator('#alert-results tr[data-alert]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-alert')));
    await expect.poll(shown).toEqual(alerts.slice(0, 2).map((a) => a.id));
    const spike = alerts.find((a) => a.detail.startsWith('denied_spike:'));
    if (spike === undefined) throw new Error('the sweep raised no denied spike');
    expect(await page.locator('#alert-results').textContent()).not.toContain('undefined');
    expect(await axeViolations(page)).toEqual([]);
    await readableAtDoubleZoom(page);

    await page.getByRole('button', { name: 'Next page' }).click();
    await expect.poll(shown).toEqual(alerts.slice(2, 4).map((a) => a.id));
    await page.getByRole('button', { name: 'Previous page' }).click();
    await expect.poll(shown).toEqual(alerts.slice(0, 2).map((a) => a.id));

    // Walk to the denied spike: its row says what was counted and whose it was.
    const onPage = (n: number) => expect.poll(() => page.locator('.pager span').textContent()).toBe(`Page ${n}`);
    for (let n = 2; !(await shown()).includes(spike.id) && (await page.getByRole('button', { name: 'Next page' }).count()) > 0; n++) {
      await page.getByRole('button', { name: 'Next page' }).click();
      await onPage(n);
    }
    const row = page.locator(`tr[data-alert="${spike.id}"]`);
    const observed = Number(spike.detail.split(':')[1]);
    expect(await row.textContent()).toContain(`Denied-field spike${observed} ${observed === 1 ? 'field' : 'fields'} denied in one minute`);
    expect(await row.textContent()).toContain('bill-north (user)');
  });

  it("charts one patient's accesses and the denied fields, each with a table that matches the database", async () => {
    const dr = 'dr-north-1';
    const patient = cg.gw.data.patients.find((p) => p.clinicId === 'c-north' && p.careTeam.includes(dr));
    if (patient === undefined) throw new Error('no c-north patient on the care team of dr-north-1');
    const token = await cg.devToken(dr);
    for (let i = 0; i < 2; i++) await cg.gw.gql(token, 'query($id: ID!) { patient(id: $id) { mrn } }', { id: patient.id });
    const denied = await cg.gw.gql(await cg.devToken('bill-north'), '{ patients(first: 2) { edges { node { encounters { notes } } } } }');
    expect(denied.body.errors?.[0]?.extensions?.code).toBe('FIELD_DENIED');
    const clinics = cg.gw.staff('compliance-1').clinics;
    const [accesses, deniedCount] = await cg.gw.admin(async (c) => [
      Number((await c.query("SELECT count(DISTINCT request_id) AS n FROM phigate.audit_events WHERE patient_id = $1 AND action IN ('read', 'masked', 'search') ", [patient.id])).rows[0].n),
      Number((await c.query("SELECT count(*) AS n FROM phigate.audit_events e JOIN phigate.patient_clinics pc USING (patient_id) WHERE e.action = 'denied' AND e.occurred_at > now() - interval '24 hours' AND pc.clinic_id = ANY($1)", [clinics])).rows[0].n),
    ]);
    expect(accesses).toBeGreaterThanOrEqual(2);
    expect(deniedCount).toBeGreaterThan(0);
    const tableSum = (id: string) => page.locator(`#${id} tbody tr td:nth-child(2)`).allTextContents().then((cells) => cells.reduce((sum, c) => sum + Number(c), 0));

    await signInAs(page, cg.origin, 'compliance-1');
    await page.getByRole('link', { name: 'Charts' }).click();
    await expect.poll(() => tableSum('denied-figure')).toBe(deniedCount);
    expect(await page.locator('#denied-figure svg[role="img"]').getAttribute('aria-label')).toContain(`${deniedCount} denied fields`);

    await page.getByLabel('Patient id').fill(patient.id);
    await page.getByRole('button', { name: 'Chart accesses' }).click();
    await expect.poll(() => tableSum('access-figure')).toBe(accesses);
    expect(await page.locator('#access-figure svg rect.bar').count()).toBeGreaterThan(0);
    expect(await page.locator('#access-figure svg[role="img"]').getAttribute('aria-label')).toContain(`${accesses} accesses`);
    await page.locator('#access-figure summary').click();
    expect(await page.locator('#access-figure table').isVisible()).toBe(true);
    expect(await page.locator('main').textContent()).not.toContain(String(patient.familyName));
    expect(await axeViolations(page)).toEqual([]);
    await readableAtDoubleZoom(page);
  });

  it('is told when the session expires, and the token is dropped', async () => {
    await page.clock.install();
    await signInAs(page, cg.origin, 'compliance-1');
    await page.clock.fastForward('13:01');
    await expect.poll(() => page.locator('#status').textContent()).toContain('Your session ends in 2 minutes');
    expect(await page.locator('#who').count()).toBe(1);
    await page.clock.fastForward('02:00');
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('Your session expired');
    expect(await page.locator('#who').count()).toBe(0);
  });

  it('goes back to sign-in with a message when the gateway refuses the token mid-session, and forgets it', async () => {
    await signInAs(page, cg.origin, 'compliance-1');
    await page.getByRole('link', { name: 'Alerts' }).click();
    await expect.poll(() => page.locator('main h1').textContent()).toBe('Alerts');
    // As when the token is revoked at the issuer or the gateway's keys change: 401 from /graphql.
    const refusals: string[] = [];
    await page.route('**/graphql', (route) => {
      refusals.push(route.request().headers().authorization ?? '');
      return route.fulfill({ status: 401, contentType: 'application/json', body: JSON.stringify({ errors: [{ message: 'Unauthenticated', extensions: { code: 'UNAUTHENTICATED' } }] }) });
    });
    await page.getByRole('button', { name: 'Show alerts' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('Your session expired');
    expect(await page.locator('#who').count()).toBe(0);
    expect(await page.locator('#nav a').count()).toBe(0);
    expect(refusals).toHaveLength(1);
    // The token is gone: navigating sends no further request and shows no page.
    await page.evaluate(() => (location.hash = '#/audit'));
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    expect(refusals).toHaveLength(1);
    expect(await axeViolations(page)).toEqual([]);
  });

  it('signs out, and the token is gone from the page', async () => {
    await signInAs(page, cg.origin, 'compliance-1');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('You are signed out');
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
    expect(stored).not.toMatch(/eyJ/);
    const sent: string[] = [];
    page.on('request', (r) => void (r.url().endsWith('/graphql') && sent.push(r.url())));
    await page.evaluate(() => (location.hash = '#/break-glass'));
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    expect(sent).toEqual([]);
    expect(await page.locator('main').textContent()).not.toContain('Break-glass review');
  });
});

describe('clinic admin', () => {
  it('sets a care team through the console, as the database then says', async () => {
    const patient = cg.gw.data.patients.find((p) => p.clinicId === 'c-north');
    if (patient === undefined) throw new Error('no c-north patient');
    await signInAs(page, cg.origin, 'admin-north');
    expect(await page.getByRole('navigation', { name: 'Pages' }).getByRole('link').allTextContents()).toEqual(['Partner API keys', 'Care teams']);
    await page.getByRole('link', { name: 'Care teams' }).click();
    await page.getByLabel('Patient id').fill(patient.id);
    await page.getByLabel(/Care team members/).fill('dr-north-1 rn-north-2');
    expect(await axeViolations(page)).toEqual([]);
    await page.getByRole('button', { name: 'Set care team' }).click();
    await expect.poll(() => page.locator('#status').textContent()).toContain(`Care team of patient ${patient.id} set`);
    const team = await cg.gw.admin(async (c) => (await c.query('SELECT subject FROM phigate.care_team WHERE patient_id = $1 ORDER BY subject', [patient.id])).rows.map((r) => r.subject));
    expect(team).toEqual(['dr-north-1', 'rn-north-2']);
  });

  it('sets a care team with the keyboard alone', async () => {
    const patient = cg.gw.data.patients.find((p) => p.clinicId === 'c-north');
    if (patient === undefined) throw new Error('no c-north patient');
    await signInAs(page, cg.origin, 'admin-north');
    const focused = () => page.evaluate(() => {
      const el = document.activeElement as HTMLInputElement | null;
      return el?.name || el?.textContent?.trim() || '';
    });
    await expect.poll(() => page.locator('main h1').textContent()).toBe('Partner API keys');
    // Sequential navigation starts where the user last clicked: the header's title, before the nav.
    await page.locator('.brand').click();
    for (let i = 0; i < 5 && (await focused()) !== 'Care teams'; i++) await page.keyboard.press('Tab');
    expect(await focused()).toBe('Care teams');
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator('main h1').textContent()).toBe('Care teams');
    await page.keyboard.press('Tab');
    expect(await focused()).toBe('patientId');
    await page.keyboard.type(patient.id);
    await page.keyboard.press('Tab');
    expect(await focused()).toBe('subjects');
    await page.keyboard.type('dr-north-2');
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator('#status').textContent()).toContain(`Care team of patient ${patient.id} set: dr-north-2`);
  });

  it('creates a partner key (secret shown once), uses it over HTTP, and revokes it', async () => {
    await signInAs(page, cg.origin, 'admin-north');
    await page.getByRole('link', { name: 'Partner API keys' }).click();
    await page.getByLabel('Partner').fill('acme-labs');
    await page.getByLabel(/^Fields/).fill('Patient.mrn');
    await page.getByRole('button', { name: 'Create key' }).click();
    const secret = (await page.locator('#secret-value').textContent()) ?? '';
    expect(secret.length).toBeGreaterThan(20);
    expect(await axeViolations(page)).toEqual([]);

    const use = () => fetch(`${cg.origin}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `ApiKey ${secret}` }, body: JSON.stringify({ query: '{ patients(first: 1) { edges { node { id mrn } } } }' }) });
    const used = await use();
    expect(used.status).toBe(200);
    expect((await used.json()).data?.patients.edges.length).toBe(1);

    await page.getByRole('button', { name: 'I have stored it' }).click();
    expect(await page.content()).not.toContain(secret);
    page.once('dialog', (d) => void d.accept());
    const row = page.locator('tr[data-key]').filter({ hasText: 'acme-labs' });
    await row.getByRole('button', { name: /^Revoke key/ }).click();
    await expect.poll(() => row.textContent()).toContain('revoked');
    const refusedKey = await (await use()).json();
    expect(refusedKey.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
  });
});

describe('every page', () => {
  /** Each page of each role: axe at 100% and at 200% zoom (a 1280-pixel window at twice the pixel size), and every control reachable with Tab. */
  // Up to five pages, each through axe twice in a real browser: a CI run with other work beside it
  // took 21.5 s, past the suite's 20 s default, so these have 60 s.
  it.each([
    { sub: 'compliance-1', titles: ['Break-glass review', 'Alerts', 'Audit search', 'Accounting of disclosures', 'Charts'] },
    { sub: 'admin-north', titles: ['Partner API keys', 'Care teams'] },
  ])('as $sub: axe at normal and double zoom, every control reachable with Tab', async ({ sub, titles }) => {
    await signInAs(page, cg.origin, sub);
    expect(await page.getByRole('navigation', { name: 'Pages' }).getByRole('link').allTextContents()).toEqual(titles);
    for (const title of titles) {
      await page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: title }).click();
      await expect.poll(() => page.locator('main h1').textContent()).toBe(title);
      await page.waitForLoadState('networkidle');
      expect(await axeViolations(page), title).toEqual([]);
      expect(await page.locator('[style]').count(), `${title}: inline style`).toBe(0);

      // Tab from the skip link through the page: every enabled control in main takes focus, visibly.
      const controls = await page.evaluate(() => [...document.querySelectorAll('main a[href], main button:not([disabled]), main input, main select, main textarea, main summary, main [tabindex="0"]')].filter((el) => el.checkVisibility()).length);
      await page.locator('.brand').click();
      const reached = new Set<string>();
      for (let i = 0; i < controls + 20; i++) {
        await page.keyboard.press('Tab');
        const where = await page.evaluate(() => {
          const el = document.activeElement;
          if (el === null || !document.querySelector('main')?.contains(el)) return null;
          const all = [...document.querySelectorAll('main a[href], main button, main input, main select, main textarea, main summary, main [tabindex="0"]')];
          return { index: all.indexOf(el), outline: getComputedStyle(el).outlineStyle, what: `${el.tagName} ${el.getAttribute('name') ?? el.textContent}` };
        });
        if (where !== null) {
          reached.add(String(where.index));
          expect(where.outline, `${title}: focus on ${where.what} is not visible`).not.toBe('none');
        }
      }
      expect(reached.size, `${title}: controls reached with Tab`).toBe(controls);
    }

    const zoomed = await browser.newContext({ viewport: { width: 640, height: 400 }, deviceScaleFactor: 2 });
    const z = await zoomed.newPage();
    z.on('console', (m) => void (/Content Security Policy|Refused to/.test(m.text()) && refused.push(m.text())));
    await signInAs(z, cg.origin, sub);
    for (const title of titles) {
      await z.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: title }).click();
      await expect.poll(() => z.locator('main h1').textContent()).toBe(title);
      await z.waitForLoadState('networkidle');
      expect(await axeViolations(z), `${title} at 200%`).toEqual([]);
      expect(await z.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), `${title} at 200% scrolls sideways`).toBe(true);
    }
    await zoomed.close();
  }, 60_000);

  it('the sign-in page and the development issuer\'s login page pass axe', async () => {
    await page.goto(`${cg.origin}/console/`);
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    expect(await axeViolations(page)).toEqual([]);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByLabel('Staff member').waitFor();
    expect(await axeViolations(page)).toEqual([]);
  });
});

describe('physician', () => {
  it('opens the console and sees no compliance or admin page', async () => {
    await signInAs(page, cg.origin, 'dr-north-1');
    await expect.poll(() => page.locator('main h1').textContent()).toBe('Nothing to show');
    expect(await page.getByRole('navigation', { name: 'Pages' }).getByRole('link').count()).toBe(0);
    await page.goto(`${cg.origin}/console/#/break-glass`);
    expect(await page.getByText('Break-glass review').count()).toBe(0);
    expect(await axeViolations(page)).toEqual([]);
  });
});

// PHIGATE_MAX_PAGE_SIZE under the console's own page sizes (25 grants, 25 alerts, 50 events): every
// page sizes itself by the limit the gateway states (`me { maxPageSize }`), and the review queue,
// with no room to read one grant past a page, learns whether there is a next page by asking for it.
describe('a gateway whose page limit is 2', () => {
  const LIMIT = 2;
  let small: ConsoleGateway;
  beforeAll(async () => {
    small = await startConsoleGateway({ maxPageSize: LIMIT });
    home = () => small;
  }, 120_000);
  afterAll(async () => {
    home = () => cg;
    await small?.close();
  });

  it("pages the review queue two grants at a time, forward to the end and back, in the gateway's order; the audit search and alerts load", async () => {
    // Five grants, each by its own physician on a patient of its clinic outside its care team.
    const used = new Set<string>();
    const physicians = small.gw.data.staff.filter((s) => s.roles.includes('physician')).slice(0, 5);
    expect(physicians).toHaveLength(5);
    for (const dr of physicians) {
      const patient = small.gw.data.patients.find((p) => dr.clinics.includes(p.clinicId) && !p.careTeam.includes(dr.sub) && !used.has(p.id))!;
      used.add(patient.id);
      const opened = await small.gw.gql(await small.devToken(dr.sub), `mutation($id: ID!, $r: String!) { breakGlass(patientId: $id, reason: $r) { id } }`, { id: patient.id, r: REASON });
      expect(opened.body.errors, opened.text).toBeUndefined();
    }
    // The contract's own call, unpaged: the whole queue in order.
    const listed = await small.gw.gql(await small.devToken('compliance-1'), `query { breakGlassGrants { id } }`, {});
    const order: string[] = listed.body.data?.breakGlassGrants.map((g: { id: string }) => g.id);
    expect(order.length).toBeGreaterThan(2 * LIMIT);
    const pages = Array.from({ length: Math.ceil(order.length / LIMIT) }, (_, i) => order.slice(i * LIMIT, (i + 1) * LIMIT));

    await signInAs(page, small.origin, 'compliance-1');
    const shown = () => page.locator('tr[data-grant]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-grant')));
    await expect.poll(shown).toEqual(pages[0]);
    expect(await page.getByRole('button', { name: 'Previous page' }).count()).toBe(0);
    for (const expected of pages.slice(1)) {
      await page.getByRole('button', { name: 'Next page' }).click();
      await expect.poll(shown).toEqual(expected);
    }
    expect(await page.getByRole('button', { name: 'Next page' }).count()).toBe(0);
    await page.getByRole('button', { name: 'Previous page' }).click();
    await expect.poll(shown).toEqual(pages.at(-2));
    expect(await page.getByRole('button', { name: 'Next page' }).count()).toBe(1);

    await page.getByRole('link', { name: 'Audit search' }).click();
    await page.getByLabel('Actor').fill('compliance-1');
    await page.getByRole('button', { name: 'Search' }).click();
    await expect.poll(() => page.locator('#audit-results tbody tr').count()).toBe(LIMIT);
    expect(await page.getByRole('button', { name: 'Next page' }).count()).toBe(1);

    await page.getByRole('link', { name: 'Alerts' }).click();
    await expect.poll(() => page.locator('#alert-results').textContent()).toMatch(/No alerts in this range|Alerts, page 1/);
    expect(await page.locator('[role="alert"]').count()).toBe(0);
  });
});
