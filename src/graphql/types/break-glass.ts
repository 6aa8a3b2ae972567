import type { GrantRow } from '../../db/break-glass.ts';
import { endBreakGlass, listBreakGlass, openBreakGlass, reviewBreakGlass } from '../../records/break-glass.ts';
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
    clinicId: t.exposeID('clinic_id', { nullable: true }),
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
  }),
});

builder.queryFields((t) => ({
  breakGlassGrants: t.field({
    type: [BreakGlassGrant],
    description: "Reviewers: the grants of their clinics, unreviewed first; clinicians: their own.",
    args: { unreviewedOnly: t.arg.boolean() },
    resolve: (_r, args, ctx) => listBreakGlass(ctx, args.unreviewedOnly ?? false),
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
