import type { GrantRow } from '../../db/break-glass.ts';
import { endBreakGlass, listBreakGlass, openBreakGlass, reviewBreakGlass } from '../../records/break-glass.ts';
import { DEFAULT_QUEUE_PAGE, encodeGrantCursor, UNPAGED_LIST } from '../../records/grant-queue.ts';
import { readGrantText } from '../../records/grant-text.ts';
import { builder } from '../builder.ts';

const iso = (d: Date | null) => (d === null ? null : d.toISOString());

export const BreakGlassGrant = builder.objectRef<GrantRow>('BreakGlassGrant').implement({
  description:
    "Emergency access by one clinician to one patient, for a limited time. `reason` and `reviewComment` are PHI: shown only to the grant's clinician and the reviewers of its clinic, each value audited.",
  fields: (t) => ({
    id: t.exposeID('id'),
    actor: t.exposeString('actor'),
    role: t.exposeString('role'),
    patientId: t.exposeID('patient_id'),
    clinicId: t.exposeID('clinic_id', { description: "The patient's clinic, whose reviewers review the grant." }),
    reason: t.string({
      nullable: true,
      description: "The clinician's justification, for the reviewers. Null with FIELD_DENIED for anyone else, with KEY_UNAVAILABLE once the patient's key is shredded.",
      resolve: (g, _a, ctx) => readGrantText(ctx, g, 'reason'),
    }),
    grantedAt: t.string({ resolve: (g) => g.granted_at.toISOString() }),
    expiresAt: t.string({ resolve: (g) => g.expires_at.toISOString() }),
    active: t.exposeBoolean('active', { description: 'Live now, by the database clock.' }),
    revokedAt: t.string({ nullable: true, resolve: (g) => iso(g.revoked_at) }),
    revokedBy: t.exposeString('revoked_by', { nullable: true }),
    reviewedAt: t.string({ nullable: true, resolve: (g) => iso(g.reviewed_at) }),
    reviewedBy: t.exposeString('reviewed_by', { nullable: true }),
    reviewOutcome: t.exposeString('review_outcome', { nullable: true, description: 'justified, unjustified or needs_follow_up' }),
    reviewComment: t.string({ nullable: true, description: 'As reason.', resolve: (g, _a, ctx) => readGrantText(ctx, g, 'reviewComment') }),
    cursor: t.string({
      description: "The grant's place in the review queue as it was listed: pass it to breakGlassGrants as `after` (the grants after it) or `before` (those before it).",
      resolve: (g) => encodeGrantCursor(g),
    }),
  }),
});

builder.queryFields((t) => ({
  breakGlassGrants: t.field({
    type: [BreakGlassGrant],
    description:
      `Reviewers: the grants of their clinics; clinicians: their own. The review queue's order, unreviewed first, oldest first: without paging arguments the first ${UNPAGED_LIST}; with \`first\`, \`after\` or \`before\` a page of \`first\` grants (default ${DEFAULT_QUEUE_PAGE}) at a time; or the one grant \`id\` names. Select \`reason\` and \`reviewComment\` only for the grant being reviewed: each value shown is a disclosure of its patient, audited.`,
    args: {
      unreviewedOnly: t.arg.boolean(),
      id: t.arg.id({ description: 'Only this grant (an empty list when it is not one you may see); not with first, after or before.' }),
      first: t.arg.int({ description: `How many grants, 1 to the gateway's page limit (PHIGATE_MAX_PAGE_SIZE, default 100); default ${DEFAULT_QUEUE_PAGE} when paging with after or before.` }),
      after: t.arg.string({ description: 'A BreakGlassGrant.cursor: the grants after that one in the queue.' }),
      before: t.arg.string({ description: 'A BreakGlassGrant.cursor: the grants just before that one, still in queue order; not with after.' }),
    },
    resolve: (_r, args, ctx) => listBreakGlass(ctx, { ...args, id: args.id == null ? null : String(args.id) }, ctx.maxPageSize),
  }),
}));

builder.mutationFields((t) => ({
  breakGlass: t.field({
    type: BreakGlassGrant,
    description: 'Emergency access to one patient outside your usual scope: needs a recent multi-factor sign-in and a reason; alerts and is reviewed.',
    args: { patientId: t.arg.id({ required: true }), reason: t.arg.string({ required: true }) },
    resolve: (_r, args, ctx) => openBreakGlass(ctx, String(args.patientId), args.reason),
  }),
  revokeBreakGlass: t.field({
    type: BreakGlassGrant,
    description: 'Ends a live grant now (its clinician, or a reviewer of its clinic).',
    args: { id: t.arg.id({ required: true }) },
    resolve: (_r, args, ctx) => endBreakGlass(ctx, String(args.id)),
  }),
  reviewBreakGlass: t.field({
    type: BreakGlassGrant,
    description: 'A reviewer records its verdict on a grant: justified, unjustified or needs_follow_up.',
    args: { id: t.arg.id({ required: true }), outcome: t.arg.string({ required: true }), comment: t.arg.string() },
    resolve: (_r, args, ctx) => reviewBreakGlass(ctx, String(args.id), args.outcome, args.comment),
  }),
}));
