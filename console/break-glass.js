// The break-glass review queue: unreviewed grants first, oldest first (the gateway's order), a
// page at a time. A grant's reason and review comment are PHI, each value shown an audited
// disclosure of its patient: the list asks for neither, and a grant's texts are fetched when the
// reviewer opens that grant, to review it or read its review.
import { gql, gqlPartial } from './api.js';
import { age, announce, field, h, table } from './dom.js';
import { pageSize } from './paging.js';

const GRANTS = `query ConsoleGrants($first: Int, $after: String, $before: String) {
  breakGlassGrants(first: $first, after: $after, before: $before) { id cursor actor role patientId clinicId grantedAt expiresAt active revokedAt reviewedAt reviewedBy reviewOutcome }
}`;
const GRANT_TEXTS = `query ConsoleGrantTexts($id: ID!, $reviewed: Boolean!) {
  breakGlassGrants(id: $id) { id reason reviewComment @include(if: $reviewed) }
}`;
const REVIEW = `mutation ConsoleReview($id: ID!, $outcome: String!, $comment: String) { reviewBreakGlass(id: $id, outcome: $outcome, comment: $comment) { id reviewedAt reviewOutcome } }`;
const OUTCOMES = [
  ['justified', 'Justified'],
  ['unjustified', 'Unjustified'],
  ['needs_follow_up', 'Needs follow-up'],
];
const PAGE = 25;

// A text withheld (the patient's key destroyed, or not the reader's to see) is null with an
// error naming it; the rest of the grant still shows.
const withheld = (errors, name) => {
  const e = errors.find((x) => x.path?.[2] === name);
  return `(not shown: ${e?.extensions?.reason ?? e?.extensions?.code ?? 'error'})`;
};

const commentOf = (texts, errors) => {
  if (texts.reviewComment) return `: ${texts.reviewComment}`;
  return errors.some((e) => e.path?.[2] === 'reviewComment') ? ` ${withheld(errors, 'reviewComment')}` : '';
};

/**
 * `params.first`: page size (1 to the gateway's `limit`), so a short queue can still be paged.
 * Whether there is more in the direction a page was read is learnt from one grant past it: read
 * with the page when the limit leaves room for it, else asked for after the page came back full.
 */
export function breakGlassPage(main, endpoint, params, limit) {
  const first = pageSize(params, PAGE, limit);
  const grantsFrom = async (at, n) => (await gql(endpoint, GRANTS, { first: n, ...at })).breakGlassGrants;
  const results = h('div', { id: 'grant-results' });
  const detail = h('section', { id: 'grant-detail', 'aria-label': 'Opened grant' });
  // Where the page shown was read from: null (the start), or after / before a grant's cursor.
  let from = { after: null, before: null };

  const load = async (at) => {
    const backward = at.before !== null;
    const peek = Math.min(first + 1, limit);
    let breakGlassGrants = await grantsFrom(at, peek);
    if (peek === first && breakGlassGrants.length === first) {
      const beyond = await grantsFrom(backward ? { after: null, before: breakGlassGrants[0].cursor } : { after: breakGlassGrants.at(-1).cursor, before: null }, 1);
      breakGlassGrants = backward ? [...beyond, ...breakGlassGrants] : [...breakGlassGrants, ...beyond];
    }
    from = at;
    const more = breakGlassGrants.length > first;
    const grants = backward ? breakGlassGrants.slice(-first) : breakGlassGrants.slice(0, first);
    const hasPrevious = backward ? more : at.after !== null;
    const hasNext = backward || more;
    const waiting = grants.filter((g) => g.reviewedAt === null).length;
    const rows = grants.map((g) => [
      g.reviewedAt === null ? h('strong', {}, 'Unreviewed') : `${g.reviewOutcome} by ${g.reviewedBy}`,
      h('time', { datetime: g.grantedAt, title: g.grantedAt }, age(g.grantedAt)),
      `${g.actor} (${g.role})`,
      g.patientId,
      g.clinicId,
      g.active ? 'live' : g.revokedAt ? 'revoked' : 'expired',
      h('a', { href: `#/audit?${new URLSearchParams({ patientId: g.patientId, actor: g.actor, breakGlassOnly: 'on' })}`, 'aria-label': `Reads under grant ${g.id}` }, 'Reads'),
      h(
        'button',
        { type: 'button', 'aria-label': `${g.reviewedAt === null ? 'Review' : 'Open'} grant ${g.id}`, 'aria-controls': 'grant-detail', onclick: () => void openLater(g) },
        g.reviewedAt === null ? 'Review' : 'Open',
      ),
    ]);
    detail.replaceChildren();
    results.replaceChildren(
      h('p', {}, grants.length === 0 ? 'No break-glass grants in your clinics.' : `${waiting} of the ${grants.length} grants on this page wait for review.`),
      grants.length === 0
        ? ''
        : table('Break-glass grants, unreviewed first', ['Review', 'Age', 'Actor', 'Patient', 'Clinic', 'Grant', 'What was read', 'Reason and review'], rows, (i) => ({
            class: grants[i].reviewedAt === null ? 'unreviewed' : null,
            'data-grant': grants[i].id,
          })),
      h(
        'nav',
        { class: 'pager', 'aria-label': 'Grant pages' },
        hasPrevious && grants.length > 0 ? h('button', { type: 'button', onclick: () => void loadLater({ after: null, before: grants[0].cursor }) }, 'Previous page') : '',
        hasNext && grants.length > 0 ? h('button', { type: 'button', onclick: () => void loadLater({ after: grants.at(-1).cursor, before: null }) }, 'Next page') : '',
      ),
    );
  };
  // After the first render a failure is announced; an ended session has already been handled (api.js).
  const failed = (what) => (err) => err.code !== 'UNAUTHENTICATED' && announce(`${what}: ${err.message}`);
  const loadLater = (at) => load(at).then(() => announce('Grants loaded.'), failed('Grants could not load'));

  // One grant's texts, asked for when the reviewer opens it: its reason, and its comment once reviewed.
  const open = async (grant) => {
    const reviewed = grant.reviewedAt !== null;
    const { data, errors } = await gqlPartial(endpoint, GRANT_TEXTS, { id: grant.id, reviewed });
    const texts = data.breakGlassGrants[0];
    if (texts === undefined) throw new Error('This grant is no longer yours to see.');
    const heading = h('h2', { tabindex: -1 }, `Grant ${grant.id}`);
    detail.replaceChildren(
      heading,
      h('p', {}, `${grant.actor} (${grant.role}), patient ${grant.patientId}, clinic ${grant.clinicId}.`),
      h('h3', {}, 'Reason'),
      h('p', { class: 'grant-reason' }, texts.reason ?? withheld(errors, 'reason')),
      ...(reviewed
        ? [h('h3', {}, 'Review'), h('p', { class: 'grant-review' }, `${grant.reviewOutcome} by ${grant.reviewedBy}${commentOf(texts, errors)}`)]
        : [reviewForm(grant)]),
      h('button', { type: 'button', onclick: () => close(grant) }, 'Close'),
    );
    heading.focus();
  };
  const openLater = (grant) => open(grant).catch(failed('The grant could not open'));
  // Back to the grant's row, its texts gone from the page.
  const close = (grant) => {
    detail.replaceChildren();
    results.querySelector(`tr[data-grant="${grant.id}"] button`)?.focus();
    announce(`Grant ${grant.id} closed.`);
  };

  function reviewForm(grant) {
    const outcome = h('select', { name: 'outcome', required: true }, OUTCOMES.map(([v, t]) => h('option', { value: v }, t)));
    const comment = h('input', { name: 'comment', maxlength: 2000, autocomplete: 'off' });
    return h(
      'form',
      {
        class: 'stack',
        'aria-label': `Review grant ${grant.id}`,
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            await gql(endpoint, REVIEW, { id: grant.id, outcome: outcome.value, comment: comment.value.trim() || null });
            await load(from);
            results.querySelector(`tr[data-grant="${grant.id}"] button`)?.focus();
            announce(`Review recorded for grant ${grant.id}.`);
          } catch (err) {
            announce(`Review not recorded: ${err.message}`);
          }
        },
      },
      field('Outcome', outcome),
      field('Comment', comment),
      h('button', { type: 'submit' }, 'Record review'),
    );
  }

  main.replaceChildren(h('h1', {}, 'Break-glass review'), results, detail);
  return load(from);
}
