// Audit search and one patient's accounting of disclosures (HIPAA 164.528): facts about accesses,
// never a PHI value.
import { gql } from './api.js';
import { announce, download, field, formValues, h, table } from './dom.js';
import { textPdf } from './pdf.js';

const EVENTS = `query ConsoleAudit($patientId: ID, $actor: String, $action: String, $breakGlassOnly: Boolean, $since: String, $until: String, $first: Int, $after: String) {
  auditEvents(patientId: $patientId, actor: $actor, action: $action, breakGlassOnly: $breakGlassOnly, since: $since, until: $until, first: $first, after: $after) {
    edges { node { id occurredAt actor actorKind role purpose action typeName field patientId breakGlass requestId } }
    pageInfo { endCursor hasNextPage }
  }
}`;
const DISCLOSURES = `query ConsoleDisclosures($patientId: ID!, $since: String, $until: String) {
  disclosures(patientId: $patientId, since: $since, until: $until) { disclosedAt actor actorKind role purpose fields maskedFields searches breakGlass requestId }
}`;
const PAGE = 50;

const isoOrNull = (v) => (v ? new Date(v).toISOString() : null);

/**
 * `prefill`: filter values to start with and search at once (the review queue's "Reads" link);
 * `limit`: the gateway's page limit.
 */
export function auditPage(main, endpoint, prefill, limit) {
  const first = Math.min(PAGE, limit);
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
        first,
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
      const headers = ['Disclosed at', 'To', 'Kind', 'Role', 'Purpose', 'Fields shown', 'Fields masked', 'Searches', 'Break-glass', 'Request'];
      const rows = disclosures.map((d) => [d.disclosedAt, d.actor, d.actorKind, d.role ?? '', d.purpose, d.fields.join(' '), d.maskedFields.join(' '), d.searches.join(' '), d.breakGlass ? 'yes' : 'no', d.requestId]);
      const title = `Accounting of disclosures for patient ${v.patientId}`;
      const range = `${v.since || 'the start of the audit trail'} to ${v.until || 'now'}`;
      const produced = `${rows.length} disclosure${rows.length === 1 ? '' : 's'} from ${range}; produced ${new Date().toISOString()}.`;
      const file = `disclosures-${v.patientId}`;
      results.replaceChildren(
        h('h2', {}, title),
        h('p', {}, produced),
        h(
          'p',
          { class: 'no-print actions' },
          h('button', { type: 'button', onclick: () => print() }, 'Print'),
          h('button', { type: 'button', onclick: () => download(`${file}.csv`, 'text/csv', csv(headers, rows)) }, 'Export CSV'),
          h('button', { type: 'button', onclick: () => download(`${file}.pdf`, 'application/pdf', textPdf(title, [produced, '', ...disclosures.flatMap(pdfEntry)])) }, 'Export PDF'),
        ),
        table('Disclosures', headers, rows),
      );
      announce(`${rows.length} disclosures listed.`);
    } catch (err) {
      announce(`Accounting failed: ${err.message}`);
    }
  };
  main.replaceChildren(h('h1', {}, 'Accounting of disclosures'), form, results);
}

// A cell a spreadsheet would take for a formula (=, +, -, @) is kept as text by a leading quote.
const csvCell = (v) => {
  const text = /^[=+\-@]/.test(String(v)) ? `'${v}` : String(v);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
};
const csv = (headers, rows) => [headers, ...rows].map((r) => r.map(csvCell).join(',')).join('\r\n') + '\r\n';

/** One disclosure as the PDF's lines: who, when, why, then what was shown. */
function pdfEntry(d) {
  return [
    `${d.disclosedAt}  ${d.actor} (${d.actorKind}${d.role ? `, ${d.role}` : ''})  purpose ${d.purpose}${d.breakGlass ? '  BREAK-GLASS' : ''}  request ${d.requestId}`,
    d.fields.length > 0 ? `    shown: ${d.fields.join(' ')}` : null,
    d.maskedFields.length > 0 ? `    masked: ${d.maskedFields.join(' ')}` : null,
    d.searches.length > 0 ? `    found by: ${d.searches.join(' ')}` : null,
    '',
  ].filter((l) => l !== null);
}
