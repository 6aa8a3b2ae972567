// The alerts list: the audit events the alert sweep writes (action 'alert', detail 'kind:observed'),
// newest first. Who and how many, never a value.
import { gql } from './api.js';
import { announce, field, formValues, h, table } from './dom.js';
import { pageSize } from './paging.js';

const ALERTS = `query ConsoleAlerts($since: String, $until: String, $first: Int, $after: String) {
  auditEvents(action: "alert", since: $since, until: $until, first: $first, after: $after) {
    edges { node { id occurredAt actor actorKind detail } }
    pageInfo { endCursor hasNextPage }
  }
}`;
const PAGE = 25;

/** What each sweep rule counted, in the reviewer's words (src/audit/alert-sweep.ts), and the retention override. */
const plural = (n, one, many) => `${n} ${n === '1' ? one : many}`;
const KINDS = {
  bulk_read: ['Bulk reads', (n) => `${plural(n, 'patient', 'patients')} read in one minute`],
  denied_spike: ['Denied-field spike', (n) => `${plural(n, 'field', 'fields')} denied in one minute`],
  off_hours: ['Reads outside working hours', (n) => `${plural(n, 'read', 'reads')} that day`],
  // Not the sweep's: `phigate audit retain --below-six-years` (src/cli/audit-evidence.ts).
  retention_below_floor: ['Audit retention under six years', (n) => `audit events older than ${plural(n, 'day', 'days')} removed`],
};

/** `detail` as the sweep writes it; an unknown kind is shown as it came, not hidden. */
export function describeAlert(detail) {
  const [kind = '', observed = ''] = String(detail ?? '').split(':');
  const known = KINDS[kind];
  return known ? { kind: known[0], what: known[1](observed) } : { kind: kind || 'alert', what: observed };
}

const isoOrNull = (v) => (v ? new Date(v).toISOString() : null);

/** `params.first`: page size (1 to the gateway's `limit`), so a short list can still be paged. */
export function alertsPage(main, endpoint, params, limit) {
  const first = pageSize(params, PAGE, limit);
  const results = h('div', { id: 'alert-results' });
  // The cursors of the pages before this one: keyset paging only goes forward, so back is a stack.
  let trail = [];
  const form = h(
    'form',
    { class: 'filters', onsubmit: (e) => (e.preventDefault(), (trail = []), void loadLater(null)) },
    field('From', h('input', { name: 'since', type: 'datetime-local' })),
    field('Until', h('input', { name: 'until', type: 'datetime-local' })),
    h('button', { type: 'submit' }, 'Show alerts'),
  );
  const load = async (after) => {
    const v = formValues(form);
    const { auditEvents } = await gql(endpoint, ALERTS, { since: isoOrNull(v.since), until: isoOrNull(v.until), first, after });
    const alerts = auditEvents.edges.map((e) => e.node);
    const rows = alerts.map((a) => {
      const { kind, what } = describeAlert(a.detail);
      return [
        h('time', { datetime: a.occurredAt }, a.occurredAt),
        kind,
        what,
        `${a.actor} (${a.actorKind})`,
        h('a', { href: `#/audit?${new URLSearchParams({ actor: a.actor })}`, 'aria-label': `Audit events of ${a.actor}` }, 'Events'),
      ];
    });
    const page = trail.length + 1;
    results.replaceChildren(
      alerts.length === 0 ? h('p', {}, 'No alerts in this range.') : table(`Alerts, page ${page}, newest first`, ['Raised', 'Alert', 'What was counted', 'Who', 'Audit trail'], rows, (i) => ({ 'data-alert': alerts[i].id })),
      h(
        'nav',
        { class: 'pager', 'aria-label': 'Alert pages' },
        trail.length > 0 ? h('button', { type: 'button', onclick: () => void loadLater(trail.pop() ?? null) }, 'Previous page') : '',
        h('span', {}, `Page ${page}`),
        auditEvents.pageInfo.hasNextPage ? h('button', { type: 'button', onclick: () => (trail.push(after), void loadLater(auditEvents.pageInfo.endCursor)) }, 'Next page') : '',
      ),
    );
    announce(`Alerts page ${page}: ${alerts.length} shown.`);
  };
  // After the first render a failure is announced; an ended session has already been handled (api.js).
  const loadLater = (after) => load(after).catch((err) => err.code !== 'UNAUTHENTICATED' && announce(`Alerts could not load: ${err.message}`));
  main.replaceChildren(
    h('h1', {}, 'Alerts'),
    h('p', {}, 'Raised by the alert sweep from the audit trail: bulk reads, denied-field spikes and reads outside working hours. Break-glass grants are in the review queue.'),
    form,
    results,
  );
  return load(null);
}
