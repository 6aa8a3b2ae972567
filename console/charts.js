// Charts drawn here as inline SVG (no library, nothing fetched), each with the same numbers as a
// table for those who do not see it: one patient's accesses over time, and denied fields over time.
// Times are bucketed in UTC, as the audit trail records them.
import { gql } from './api.js';
import { announce, field, formValues, h, table } from './dom.js';

const DISCLOSURES = `query ConsoleChartDisclosures($patientId: ID!, $since: String, $until: String) {
  disclosures(patientId: $patientId, since: $since, until: $until) { disclosedAt breakGlass }
}`;
const DENIED = `query ConsoleChartDenied($since: String, $first: Int, $after: String) {
  auditEvents(action: "denied", since: $since, first: $first, after: $after) {
    edges { node { occurredAt } }
    pageInfo { endCursor hasNextPage }
  }
}`;
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** Denied fields counted at most: 20 pages of 100. Beyond that the chart says it is cut short. */
const DENIED_PAGES = 20;
const DENIED_PAGE = 100;

/** The bucket width for a span: hours up to two days, days up to two months, weeks beyond. */
export function stepFor(spanMs) {
  if (spanMs <= 2 * DAY) return HOUR;
  if (spanMs <= 62 * DAY) return DAY;
  return 7 * DAY;
}

/** Counts of `times` (ms) per `step`-wide bucket from `start` (rounded down to the step) to `end`. */
export function bucketize(times, start, end, step) {
  const first = Math.floor(start / step) * step;
  const n = Math.max(1, Math.ceil((end - first) / step));
  const counts = new Array(n).fill(0);
  for (const t of times) {
    const i = Math.floor((t - first) / step);
    if (i >= 0 && i < n) counts[i]++;
  }
  return counts.map((count, i) => ({ start: first + i * step, count }));
}

/** The axis's short label: the hour alone, with its date where the day changes; the month and day otherwise. */
function tickLabel(ms, step, previous) {
  const iso = new Date(ms).toISOString();
  if (step !== HOUR) return iso.slice(5, 10);
  const hour = `${iso.slice(11, 13)}:00`;
  return previous === null || new Date(previous).toISOString().slice(0, 10) !== iso.slice(0, 10) ? `${iso.slice(5, 10)} ${hour}` : hour;
}

export function bucketLabel(ms, step) {
  const iso = new Date(ms).toISOString();
  if (step === HOUR) return `${iso.slice(0, 10)} ${iso.slice(11, 13)}:00`;
  return step === DAY ? iso.slice(0, 10) : `week of ${iso.slice(0, 10)}`;
}

const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : String(c));
  return el;
}

/**
 * A bar chart of `bins` ({ start, count }) and its table alternative. `id` names the figure for
 * tests and links; `unit` is what a bar counts ("accesses").
 */
export function barChart(id, title, bins, step, unit) {
  const W = 720;
  const H = 240;
  const left = 44;
  const bottom = 44;
  const top = 12;
  const plotW = W - left - 8;
  const plotH = H - top - bottom;
  const max = Math.max(1, ...bins.map((b) => b.count));
  const barW = plotW / bins.length;
  const total = bins.reduce((sum, b) => sum + b.count, 0);
  const label = `${title}: ${total} ${unit} in ${bins.length} ${step === HOUR ? 'hours' : step === DAY ? 'days' : 'weeks'}, at most ${max} in one`;
  // At most about eight time labels fit under the axis; the table has them all.
  const every = Math.max(1, Math.ceil(bins.length / 7));
  const svg = s(
    'svg',
    { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label, class: 'chart', focusable: 'false' },
    s('line', { x1: left, y1: top + plotH, x2: left + plotW, y2: top + plotH, class: 'axis' }),
    s('line', { x1: left, y1: top, x2: left, y2: top + plotH, class: 'axis' }),
    s('text', { x: left - 6, y: top + 4, 'text-anchor': 'end', class: 'tick' }, String(max)),
    s('text', { x: left - 6, y: top + plotH, 'text-anchor': 'end', class: 'tick' }, '0'),
    ...bins.map((b, i) => {
      const hgt = (b.count / max) * plotH;
      return s(
        'rect',
        { x: left + i * barW + barW * 0.1, y: top + plotH - hgt, width: Math.max(1, barW * 0.8), height: hgt, class: 'bar' },
        s('title', {}, `${bucketLabel(b.start, step)}: ${b.count}`),
      );
    }),
    ...bins
      .map((b, i) => [b, i])
      .filter(([, i]) => i % every === 0)
      .map(([b, i]) => s('text', { x: left + i * barW + barW / 2, y: top + plotH + 16, 'text-anchor': 'middle', class: 'tick' }, tickLabel(b.start, step, i === 0 ? null : bins[i - every].start))),
  );
  return h(
    'figure',
    { id, class: 'chart-figure' },
    h('figcaption', {}, label),
    svg,
    h('details', {}, h('summary', {}, `${title} as a table`), table(title, [step === HOUR ? 'Hour (UTC)' : step === DAY ? 'Day (UTC)' : 'Week (UTC)', unit[0].toUpperCase() + unit.slice(1)], bins.map((b) => [bucketLabel(b.start, step), String(b.count)]))),
  );
}

const dayOrNull = (v) => (v ? new Date(v).toISOString() : null);

export function chartsPage(main, endpoint) {
  const accessOut = h('div', { id: 'access-chart' });
  const accessForm = h(
    'form',
    { class: 'filters', 'aria-labelledby': 'access-heading', onsubmit: (e) => (e.preventDefault(), void run(drawAccesses, 'Accesses chart')) },
    field('Patient id', h('input', { name: 'patientId', required: true, autocomplete: 'off' })),
    field('From', h('input', { name: 'since', type: 'date' })),
    field('Until', h('input', { name: 'until', type: 'date' })),
    h('button', { type: 'submit' }, 'Chart accesses'),
  );
  const deniedOut = h('div', { id: 'denied-chart' });
  const deniedForm = h(
    'form',
    { class: 'filters', 'aria-labelledby': 'denied-heading', onsubmit: (e) => (e.preventDefault(), void run(drawDenied, 'Denied-field chart')) },
    field('Period', h('select', { name: 'days' }, h('option', { value: '1' }, 'Last 24 hours, by hour'), h('option', { value: '7' }, 'Last 7 days, by day'), h('option', { value: '30' }, 'Last 30 days, by day'))),
    h('button', { type: 'submit' }, 'Chart denied fields'),
  );
  const run = (draw, what) => draw().catch((err) => err.code !== 'UNAUTHENTICATED' && announce(`${what} failed: ${err.message}`));

  async function drawAccesses() {
    const v = formValues(accessForm);
    const { disclosures } = await gql(endpoint, DISCLOSURES, { patientId: v.patientId, since: dayOrNull(v.since), until: dayOrNull(v.until) });
    const times = disclosures.map((d) => Date.parse(d.disclosedAt));
    if (times.length === 0) {
      accessOut.replaceChildren(h('p', {}, `No accesses of patient ${v.patientId} in this range.`));
      return announce('No accesses to chart.');
    }
    const end = v.until ? Date.parse(String(v.until)) : Date.now();
    // At least the day before the end, so that a few recent accesses stand against a quiet background.
    const start = v.since ? Date.parse(String(v.since)) : Math.min(end - DAY, ...times);
    const step = stepFor(end - start);
    accessOut.replaceChildren(barChart('access-figure', `Accesses of patient ${v.patientId}`, bucketize(times, start, end, step), step, 'accesses'));
    announce(`${times.length} accesses charted.`);
  }

  async function drawDenied() {
    const days = Number(formValues(deniedForm).days);
    const end = Date.now();
    const start = end - days * DAY;
    const times = [];
    let after = null;
    let more = true;
    for (let i = 0; i < DENIED_PAGES && more; i++) {
      const { auditEvents } = await gql(endpoint, DENIED, { since: new Date(start).toISOString(), first: DENIED_PAGE, after });
      for (const e of auditEvents.edges) times.push(Date.parse(e.node.occurredAt));
      ({ endCursor: after, hasNextPage: more } = auditEvents.pageInfo);
    }
    const step = days === 1 ? HOUR : DAY;
    deniedOut.replaceChildren(
      barChart('denied-figure', 'Denied fields', bucketize(times, start, end, step), step, 'denied fields'),
      more ? h('p', { role: 'note' }, `Only the newest ${times.length} denied fields are counted; choose a shorter period to see all.`) : '',
    );
    announce(`${times.length} denied fields charted.`);
  }

  main.replaceChildren(
    h('h1', {}, 'Charts'),
    h('h2', { id: 'access-heading' }, "One patient's accesses over time"),
    h('p', {}, 'Each access is one request that showed something of the patient (its accounting of disclosures).'),
    accessForm,
    accessOut,
    h('h2', { id: 'denied-heading' }, 'Denied fields over time'),
    h('p', {}, 'Fields refused to the people and partners of your clinics; a spike is someone reaching past their role.'),
    deniedForm,
    deniedOut,
  );
  return run(drawDenied, 'Denied-field chart');
}
