// The console's shell: sign-in state, the pages a principal's roles allow, and hash routing.
import { apiKeysPage, careTeamsPage } from './admin.js';
import { alertsPage } from './alerts.js';
import { gql, onSessionEnd } from './api.js';
import { auditPage, disclosuresPage } from './audit.js';
import { accessToken, completeSignIn, expiresAt, signIn, signOut } from './auth.js';
import { breakGlassPage } from './break-glass.js';
import { chartsPage } from './charts.js';
import { announce, h } from './dom.js';

/** Which role opens which page. The gateway enforces the same: a page here is only a convenience. */
const PAGES = [
  { id: 'break-glass', title: 'Break-glass review', role: 'compliance', render: (main, ctx, params) => breakGlassPage(main, ctx.endpoint, params, ctx.me.maxPageSize) },
  { id: 'alerts', title: 'Alerts', role: 'compliance', render: (main, ctx, params) => alertsPage(main, ctx.endpoint, params, ctx.me.maxPageSize) },
  { id: 'audit', title: 'Audit search', role: 'compliance', render: (main, ctx, params) => auditPage(main, ctx.endpoint, params, ctx.me.maxPageSize) },
  { id: 'disclosures', title: 'Accounting of disclosures', role: 'compliance', render: (main, ctx) => disclosuresPage(main, ctx.endpoint) },
  { id: 'charts', title: 'Charts', role: 'compliance', render: (main, ctx) => chartsPage(main, ctx.endpoint) },
  { id: 'api-keys', title: 'Partner API keys', role: 'clinic_admin', render: (main, ctx) => apiKeysPage(main, ctx.endpoint, ctx.me.clinics) },
  { id: 'care-teams', title: 'Care teams', role: 'clinic_admin', render: (main, ctx) => careTeamsPage(main, ctx.endpoint) },
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const sessionBox = document.getElementById('session');
let ctx = null;

function signedOut(config, message) {
  ctx = null;
  nav.replaceChildren();
  sessionBox.replaceChildren();
  main.replaceChildren(
    h('h1', {}, 'phigate compliance console'),
    message ? h('p', { role: 'alert' }, message) : '',
    h('p', {}, 'Sign in with your organisation account. The console keeps your session in this tab only.'),
    h('button', { type: 'button', id: 'sign-in', onclick: () => signIn(config).catch((e) => announce(`Sign-in unavailable: ${e.message}`)) }, 'Sign in'),
  );
}

async function show() {
  if (ctx === null) return;
  const allowed = PAGES.filter((p) => ctx.me.roles.includes(p.role));
  const [wanted, query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const page = allowed.find((p) => p.id === wanted) ?? allowed[0];
  nav.replaceChildren(h('ul', {}, allowed.map((p) => h('li', {}, h('a', { href: `#/${p.id}`, 'aria-current': p === page ? 'page' : null }, p.title)))));
  if (page === undefined) {
    main.replaceChildren(h('h1', {}, 'Nothing to show'), h('p', {}, `The console has no pages for your roles (${ctx.me.roles.join(', ') || 'none'}): it serves compliance officers and clinic administrators.`));
    return;
  }
  document.title = `${page.title} · phigate console`;
  // Each page renders into a view of its own: a slower render of a page left since (a click during
  // loading) then fills a detached view instead of overwriting the page now shown.
  const view = h('div', {}, h('p', {}, 'Loading…'));
  main.replaceChildren(view);
  try {
    await page.render(view, ctx, new URLSearchParams(query));
  } catch (err) {
    // api.js has already taken the console back to sign-in.
    if (err.code === 'UNAUTHENTICATED') return;
    view.replaceChildren(h('h1', {}, page.title), h('p', { role: 'alert', class: 'error' }, `This page could not load: ${err.message}`));
  }
  if (view.isConnected) main.focus();
}

async function start() {
  const config = await (await fetch('/console/config.json', { cache: 'no-store' })).json();
  const expired = () => {
    signOut();
    signedOut(config, 'Your session expired. Sign in again.');
  };
  try {
    const expiring = () => announce('Your session ends in 2 minutes: finish or save what you are doing, then sign in again.');
    if (!(await completeSignIn(config, expired, expiring)) || accessToken() === null) return signedOut(config);
  } catch (err) {
    return signedOut(config, `Sign-in failed: ${err.message}`);
  }
  const endpoint = config.graphql;
  let me;
  try {
    ({ me } = await gql(endpoint, 'query ConsoleMe { me { subject roles clinics mfa maxPageSize } }'));
  } catch (err) {
    return signedOut(config, `The gateway refused the sign-in: ${err.message}`);
  }
  ctx = { endpoint, me };
  // Once: every request that finds the token refused after this lands here, however many are in flight.
  onSessionEnd(() => {
    if (ctx !== null) expired();
  });
  sessionBox.replaceChildren(
    h('span', { id: 'who' }, `${me.subject} (${me.roles.join(', ')})`),
    h('span', {}, `until ${new Date(expiresAt() ?? Date.now()).toLocaleTimeString()}`),
    h('button', { type: 'button', onclick: () => (signOut(), signedOut(config, 'You are signed out.')) }, 'Sign out'),
  );
  await show();
}

addEventListener('hashchange', () => void show());
void start();
