// The break-glass review queue: unreviewed grants first, oldest first (the gateway's order).
import { gql, gqlPartial } from './api.js';
import { age, announce, field, h, table } from './dom.js';

const GRANTS = `query ConsoleGrants { breakGlassGrants { id actor role patientId clinicId reason grantedAt expiresAt active revokedAt reviewedAt reviewedBy reviewOutcome reviewComment } }`;
const REVIEW = `mutation ConsoleReview($id: ID!, $outcome: String!, $comment: String) { reviewBreakGlass(id: $id, outcome: $outcome, comment: $comment) { id reviewedAt reviewOutcome } }`;
const OUTCOMES = [
  ['justified', 'Justified'],
  ['unjustified', 'Unjustified'],
  ['needs_follow_up', 'Needs follow-up'],
];

// A grant's reason and comment are PHI: null with an error when withheld (the patient's key
// destroyed, or not the reader's to see); the rest of the grant still shows.
const withheld = (errors, i, name) => {
  const e = errors.find((x) => x.path[1] === i && x.path[2] === name);
  return e ? `(not shown: ${e.extensions?.reason ?? e.extensions?.code ?? 'error'})` : '';
};

export async function breakGlassPage(main, endpoint) {
  const { data, errors } = await gqlPartial(endpoint, GRANTS);
  const grants = data.breakGlassGrants;
  const waiting = grants.filter((g) => g.reviewedAt === null).length;
  const rows = grants.map((g, i) => [
    g.reviewedAt === null
      ? h('strong', {}, 'Unreviewed')
      : `${g.reviewOutcome} by ${g.reviewedBy}${g.reviewComment ? `: ${g.reviewComment}` : withheld(errors, i, 'reviewComment') ? ` ${withheld(errors, i, 'reviewComment')}` : ''}`,
    h('time', { datetime: g.grantedAt, title: g.grantedAt }, age(g.grantedAt)),
    `${g.actor} (${g.role})`,
    g.patientId,
    g.clinicId ?? '',
    g.reason ?? withheld(errors, i, 'reason'),
    g.active ? 'live' : g.revokedAt ? 'revoked' : 'expired',
    h('a', { href: `#/audit?${new URLSearchParams({ patientId: g.patientId, actor: g.actor, breakGlassOnly: 'on' })}`, 'aria-label': `Reads under grant ${g.id}` }, 'Reads'),
    g.reviewedAt === null ? reviewForm(g, main, endpoint) : '',
  ]);
  main.replaceChildren(
    h('h1', {}, 'Break-glass review'),
    h('p', {}, `${waiting} grant${waiting === 1 ? '' : 's'} waiting for review, of ${grants.length}.`),
    grants.length === 0
      ? h('p', {}, 'No break-glass grants in your clinics.')
      : table('Break-glass grants, unreviewed first', ['Review', 'Age', 'Actor', 'Patient', 'Clinic', 'Reason', 'Grant', 'What was read', 'Record a review'], rows, (i) => ({
          class: grants[i].reviewedAt === null ? 'unreviewed' : null,
          'data-grant': grants[i].id,
        })),
  );
}

function reviewForm(grant, main, endpoint) {
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
          announce(`Review recorded for grant ${grant.id}.`);
          await breakGlassPage(main, endpoint);
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
