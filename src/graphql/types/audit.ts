import type { AuditEventRow, DisclosureRow } from '../../db/audit-views.ts';
import { encodeAuditCursor, listAuditEvents, listDisclosures, type AuditEventPage } from '../../records/compliance.ts';
import { builder } from '../builder.ts';

const iso = (d: Date) => d.toISOString();

export const AuditEvent = builder.objectRef<AuditEventRow>('AuditEvent').implement({
  description: 'One audit event: who did what to which record, when and why. Ids and codes only, never a PHI value.',
  fields: (t) => ({
    id: t.exposeID('id'),
    occurredAt: t.string({ resolve: (e) => iso(e.occurred_at) }),
    requestId: t.exposeString('request_id'),
    actor: t.exposeString('actor'),
    actorKind: t.exposeString('actor_kind', { description: 'user, partner, system or anonymous' }),
    credentialId: t.exposeString('credential_id', { nullable: true, description: "A partner's API key id." }),
    role: t.exposeString('role', { nullable: true }),
    purpose: t.exposeString('purpose'),
    breakGlass: t.exposeBoolean('break_glass'),
    grantId: t.exposeID('grant_id', { nullable: true }),
    clientAddr: t.exposeString('client_addr', { nullable: true }),
    action: t.exposeString('action'),
    typeName: t.exposeString('type_name'),
    field: t.exposeString('field', { nullable: true }),
    patientId: t.exposeID('patient_id', { nullable: true }),
    recordId: t.exposeID('record_id', { nullable: true }),
    detail: t.exposeString('detail', { nullable: true, description: 'A code saying how it ended or why (ssn:miss, denied:daily_limit, bulk_read:57, ...).' }),
    clinicId: t.exposeID('clinic_id', { nullable: true, description: "The clinic of the event's patient; null when it names no patient." }),
  }),
});

const AuditEventEdge = builder.objectRef<AuditEventRow>('AuditEventEdge').implement({
  fields: (t) => ({
    cursor: t.string({ resolve: (e) => encodeAuditCursor(e.id) }),
    node: t.field({ type: AuditEvent, resolve: (e) => e }),
  }),
});

const AuditPageInfo = builder.objectRef<AuditEventPage>('AuditPageInfo').implement({
  fields: (t) => ({
    hasNextPage: t.exposeBoolean('hasNextPage'),
    endCursor: t.string({ nullable: true, resolve: (page) => (page.rows.length ? encodeAuditCursor(page.rows.at(-1)!.id) : null) }),
  }),
});

export const AuditEventConnection = builder.objectRef<AuditEventPage>('AuditEventConnection').implement({
  fields: (t) => ({
    edges: t.field({ type: [AuditEventEdge], resolve: (page) => page.rows }),
    pageInfo: t.field({ type: AuditPageInfo, resolve: (page) => page }),
  }),
});

export const Disclosure = builder.objectRef<DisclosureRow>('Disclosure').implement({
  description: "One entry of a patient's accounting of disclosures (HIPAA 164.528): one request that showed something of the patient.",
  fields: (t) => ({
    disclosedAt: t.string({ resolve: (d) => iso(d.disclosed_at) }),
    requestId: t.exposeString('request_id'),
    actor: t.exposeString('actor', { description: 'The user, or for a partner (actorKind partner) the partner.' }),
    actorKind: t.exposeString('actor_kind'),
    credentialId: t.exposeString('credential_id', { nullable: true, description: "The partner's API key id." }),
    role: t.exposeString('role', { nullable: true }),
    purpose: t.exposeString('purpose'),
    breakGlass: t.exposeBoolean('break_glass'),
    grantId: t.exposeID('grant_id', { nullable: true }),
    clientAddr: t.exposeString('client_addr', { nullable: true }),
    fields: t.exposeStringList('fields', { description: 'Fields whose values were shown (Patient.mrn, Encounter.notes, ...).' }),
    maskedFields: t.exposeStringList('masked_fields', { description: 'Fields shown masked.' }),
    searches: t.exposeStringList('searches', { description: 'Lookups that found the patient (ssn:hit, mrn:hit).' }),
    events: t.exposeInt('events', { description: 'Audit events the entry sums up.' }),
  }),
});

builder.queryFields((t) => ({
  auditEvents: t.field({
    type: AuditEventConnection,
    description: 'The audit trail of your clinics, newest first (readAuditTrail). Events without a patient belong to every clinic.',
    args: {
      patientId: t.arg.id(),
      actor: t.arg.string(),
      action: t.arg.string(),
      breakGlassOnly: t.arg.boolean(),
      since: t.arg.string({ description: 'ISO 8601 date-time, inclusive.' }),
      until: t.arg.string({ description: 'ISO 8601 date-time, exclusive.' }),
      first: t.arg.int(),
      after: t.arg.string(),
    },
    resolve: (_r, args, ctx) => listAuditEvents(ctx, { ...args, patientId: args.patientId == null ? null : String(args.patientId) }, ctx.maxPageSize),
  }),
  disclosures: t.field({
    type: [Disclosure],
    description: "The accounting of disclosures of one patient of your clinics (HIPAA 164.528), newest first (readAuditTrail).",
    args: { patientId: t.arg.id({ required: true }), since: t.arg.string(), until: t.arg.string() },
    resolve: (_r, args, ctx) => listDisclosures(ctx, String(args.patientId), args.since, args.until),
  }),
}));
