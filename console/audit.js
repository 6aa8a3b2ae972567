// Audit search and one patient's accounting of disclosures (HIPAA 164.528): facts about accesses,
// never a PHI value.
import { gql } from './api.js';
import { announce, field, formValues, h, table } from './dom.js';

const EVENTS = `query ConsoleAudit($patientId: ID, $actor: String, $action: String, $breakGlassOnly: Boolean, $since: String, $until: String, $first: Int, $after: String) {
  auditEvents(patientId: $patientId, actor: $actor, action: $action, breakGlassOnly: $breakGlassOnly, since: $since, until: $until, first: $first, after: $after) {
    edges { node { id occurredAt actor actorKind role purpose action typeName field patientId breakGlass requestId } }
    pageInfo { endCursor hasNextPage }
  }
}`;
const DISCLOSURES = `query ConsoleDisclosures($patientId: ID!, $since: String, $until: String) {
  disclosures(patientId: $patientId, since: $since, until: $until) { disclosedAt actor actorKind role purpose fields maskedFields breakGlass requestId }
}`;
const PAGE = 50;

const isoOrNull = (v) => (v ? new Date(v).toISOString() : null);

/** `prefill`: filter values to start with and search at once (the review queue's "Reads" link). */
export function auditPage(main, endpoint, prefill = new URLSearchParams()) {
  const results = h('div', { id: 'audit-results' });
  const form = h(
    'form',
    { class: 'filters', onsubmit: (e) => (e.preventDefault(), search(null)) },
    field('Patient id', h('input', { name: 'patientId', autocomplete: 'off', value: prefill.get('patientId') })),
    field('Actor', h('input', { name: 'actor', autocomplete: 'off', value: prefill.get('actor') })),
    field('Action', h('input', { name: 'action', autocomplete: 'off', value: prefill.get('action') })),
    field('From', h('input', { name: 'since', type: 'datetime-local' })),
    field('Until', h('input', { name: 'until', type: 'datetime-local' })),
    h('label', {}, h('input', { name: 'breakGlassOnly', type: 'checkbox', checked: prefill.get('breakGlassOnly') === 'on' }), ' Break-glass only'),
    h('button', { type: 'submit' }, 'Search'),
  );
  const search = async (after) => {
    const v = formValues(form);
    try {
      const { auditEvents } = await gql(endpoint, EVENTS, {
        patientId: v.patientId || null,
        actor: v.actor || null,
        action: v.action || null,
        breakGlassOnly: v.breakGlassOnly === 'on',
        since: isoOrNull(v.since),
        until: isoOrNull(v.until),
        first: PAGE,
        after,
      });
      const events = auditEvents.edges.map((e) => e.node);
      results.replaceChildren(
        table('Audit events', ['Time', 'Actor', 'Role', 'Purpose', 'Action', 'Field', 'Patient', 'Break-glass', 'Request'], events.map((e) => [e.occurredAt, `${e.actor} (${e.actorKind})`, e.role ?? '', e.purpose, e.action, e.field ? `${e.typeName}.${e.field}` : e.typeName, e.patientId ?? '', e.breakGlass ? 'yes' : 'no', e.requestId])),
        auditEvents.pageInfo.hasNextPage ? h('button', { type: 'button', onclick: () => search(auditEvents.pageInfo.endCursor) }, 'Next page') : '',
      );
      announce(`${events.length} audit events shown.`);
    } catch (err) {
      announce(`Search failed: ${err.message}`);
    }
  };
  main.replaceChildren(h('h1', {}, 'Audit search'), form, results);
  if ([...prefill.keys()].length > 0) void search(null);
}

export function disclosuresPage(main, endpoint) {
  const results = h('div', { id: 'disclosure-results' });
  const form = h(
    'form',
    { class: 'filters', onsubmit: (e) => (e.preventDefault(), load()) },
    field('Patient id', h('input', { name: 'patientId', required: true, autocomplete: 'off' })),
    field('From', h('input', { name: 'since', type: 'date' })),
    field('Until', h('input', { name: 'until', type: 'date' })),
    h('button', { type: 'submit' }, 'Produce accounting'),
  );
  const load = async () => {
    const v = formValues(form);
    try {
      const { disclosures } = await gql(endpoint, DISCLOSURES, { patientId: v.patientId, since: isoOrNull(v.since), until: isoOrNull(v.until) });
      const headers = ['Disclosed at', 'To', 'Kind', 'Role', 'Purpose', 'Fields shown', 'Fields masked', 'Break-glass', 'Request'];
      const rows = disclosures.map((d) => [d.disclosedAt, d.actor, d.actorKind, d.role ?? '', d.purpose, d.fields.join(' '), d.maskedFields.join(' '), d.breakGlass ? 'yes' : 'no', d.requestId]);
      results.replaceChildren(
        h('h2', {}, `Accounting of disclosures for patient ${v.patientId}`),
        h('p', {}, `${rows.length} disclosure${rows.length === 1 ? '' : 's'}; produced ${new Date().toISOString()}.`),
        h('p', { class: 'no-print' }, h('button', { type: 'button', onclick: () => print() }, 'Print'), ' ', h('button', { type: 'button', onclick: () => downloadCsv(`disclosures-${v.patientId}.csv`, headers, rows) }, 'Export CSV')),
        table('Disclosures', headers, rows),
      );
      announce(`${rows.length} disclosures listed.`);
    } catch (err) {
      announce(`Accounting failed: ${err.message}`);
    }
  };
  main.replaceChildren(h('h1', {}, 'Accounting of disclosures'), form, results);
}

const csvCell = (v) => (/[",\n\r]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));

function downloadCsv(name, headers, rows) {
  const text = [headers, ...rows].map((r) => r.map(csvCell).join(',')).join('\r\n');
  const url = URL.createObjectURL(new Blob([text], { type: 'text/csv' }));
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
