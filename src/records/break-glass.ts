import type { AuditEvent, AuditRequest } from '../audit/event.ts';
import type { Alerts } from '../audit/alerts.ts';
import type { BreakGlassSettings } from '../config.ts';
import { endGrant, grantById, grantsInLastDay, insertGrant, listGrants, reviewGrant, sealReason, visiblePatientClinic, type GrantRow } from '../db/break-glass.ts';
import { PhigateError } from '../errors.ts';
import { EMERGENCY_PURPOSE, roleFor } from '../policy/decide.ts';
import type { RolePolicy } from '../policy/types.ts';
import { grantQueueQuery, type GrantQueueArgs } from './grant-queue.ts';
import { grantTextAad, GRANT_TEXTS } from './grant-text.ts';
import type { RequestScope } from './scope.ts';
import * as v from './validate.ts';

/** What break-glass needs beyond an ordinary request: its settings, the alert channel, and a hook run once the request committed. */
export interface BreakGlassScope extends RequestScope {
  /** The facts every audit row of this request repeats, for a refusal recorded outside its transaction. */
  readonly auditRequest: AuditRequest;
  readonly breakGlass: BreakGlassSettings;
  readonly alerts: Alerts;
  afterCommit(fn: () => void): void;
}

export const REVIEW_OUTCOMES = ['justified', 'unjustified', 'needs_follow_up'] as const;
const MAX_REASON = 1000;
const MAX_COMMENT = 2000;
// Row security refusing the grant: the patient does not exist, or lies beyond the policy's reach.
const INSUFFICIENT_PRIVILEGE = '42501';
const CHECK_VIOLATION = '23514';

// One answer whether the patient does not exist or lies beyond the grant's reach: breaking the
// glass must not become a way to learn which ids are patients elsewhere.
const UNAVAILABLE = 'There is no patient with this id that you may break the glass for.';

function event(action: 'break_glass' | 'review', detail: string, grant: { id: string | null; patientId: string | null; role: string | null }): AuditEvent {
  const breakGlass = action === 'break_glass';
  return {
    action,
    typeName: 'BreakGlassGrant',
    field: null,
    patientId: grant.patientId,
    // grant_id is set on break-glass events alone (the grant's opening, refusal and end); a review
    // is about the grant, which it names as its record (docs/audit-log.md, "`break_glass` and `grant_id`").
    recordId: breakGlass ? null : grant.id,
    role: grant.role,
    purpose: breakGlass ? EMERGENCY_PURPOSE : 'healthcare_operations',
    breakGlass,
    detail,
    grantId: breakGlass ? grant.id : null,
  };
}

/**
 * A refused attempt is itself evidence: it is recorded outside the request's transaction, which
 * rolls back, and the refusal is then thrown.
 */
async function refuse(scope: BreakGlassScope, error: PhigateError, patientId: string | null, role: string | null): Promise<never> {
  await scope.recorder.record(scope.auditRequest, [event('break_glass', `denied:${error.reason ?? 'refused'}`, { id: null, patientId, role })]);
  throw error;
}

/**
 * Opens an emergency grant on one patient: fresh MFA, a reason, a daily limit, a patient within
 * the policy's reach that the clinician cannot already see. Row security then shows that patient
 * to this actor alone until the grant ends by the database clock. The grant is a high-severity
 * audit event, and an alert leaves once it is committed.
 */
export async function openBreakGlass(scope: BreakGlassScope, rawPatientId: string, rawReason: string): Promise<GrantRow> {
  const patientId = v.id('patientId', rawPatientId);
  const { principal, policy, breakGlass: settings } = scope;
  // A partner's key is no clinician: it never breaks the glass.
  if (principal.kind !== 'user') {
    return refuse(scope, new PhigateError('BREAK_GLASS_DENIED', 'Your role may not break the glass.', { reason: 'role' }), patientId, null);
  }
  const { role, held } = roleFor(policy, principal, (r) => r.operations.has('breakGlass'));
  if (held.length === 0) {
    return refuse(scope, new PhigateError('BREAK_GLASS_DENIED', 'Your role may not break the glass.', { reason: 'role' }), patientId, null);
  }
  const authAge = principal.authTime === null ? null : Math.floor(Date.now() / 1000) - principal.authTime;
  if (!role || !principal.mfa || authAge === null || authAge > settings.maxAuthAgeSeconds) {
    const minutes = Math.round(settings.maxAuthAgeSeconds / 60);
    const error = new PhigateError(
      'MFA_REQUIRED',
      `Breaking the glass needs a multi-factor sign-in within the last ${minutes} minutes${authAge === null ? ' (your token has no auth_time)' : ''}; sign in again.`,
      { reason: 'stale_auth' },
    );
    return refuse(scope, error, patientId, held[0]!.name);
  }
  const reason = v.text('reason', rawReason, MAX_REASON);
  if ([...reason].length < settings.minReasonLength) {
    const error = new PhigateError('BREAK_GLASS_DENIED', `Give a reason of at least ${settings.minReasonLength} characters: why this patient, why now.`, { reason: 'reason_too_short' });
    return refuse(scope, error, patientId, role.name);
  }
  if ((await visiblePatientClinic(scope.tx, patientId)) !== null) {
    const error = new PhigateError('BREAK_GLASS_DENIED', 'You can already see this patient; no emergency access is needed.', { reason: 'already_permitted' });
    return refuse(scope, error, patientId, role.name);
  }
  if ((await grantsInLastDay(scope.tx)) >= settings.dailyLimit) {
    const error = new PhigateError('BREAK_GLASS_DENIED', `You have opened ${settings.dailyLimit} emergency grants in the last 24 hours; ask a colleague or your privacy officer.`, { reason: 'daily_limit' });
    return refuse(scope, error, patientId, role.name);
  }
  let grant: GrantRow;
  try {
    grant = await insertGrant(scope.tx, {
      role: role.name,
      patientId,
      crossClinic: policy.breakGlass.reach === 'all_clinics',
      requestId: scope.requestId,
      minutes: settings.grantMinutes,
    });
  } catch (err) {
    if ((err as { code?: string }).code !== INSUFFICIENT_PRIVILEGE) throw err;
    return refuse(scope, new PhigateError('BREAK_GLASS_DENIED', UNAVAILABLE, { reason: 'patient_unavailable' }), patientId, role.name);
  }
  // In place, the grant shows its patient, in the grant's clinic, which the database took from the
  // patient (never null: grants_insert refuses a grant without one). The reason is PHI: sealed
  // under that patient's key, bound to this grant, in the same transaction.
  const { id } = grant;
  grant = await sealReason(scope.tx, id, await sealGrantText(scope, grant, 'reason', reason));
  scope.audit.add(event('break_glass', 'granted', { id, patientId, role: role.name }));
  scope.afterCommit(() =>
    scope.alerts.send({
      kind: 'break_glass',
      severity: 'high',
      requestId: scope.requestId,
      actor: principal.subject,
      patientId,
      grantId: id,
      expiresAt: grant.expires_at.toISOString(),
    }, scope.log),
  );
  return grant;
}

/** Ends a live grant early: its actor may, and so may a reviewer of its clinic. */
export async function endBreakGlass(scope: RequestScope, rawId: string): Promise<GrantRow> {
  const id = v.id('id', rawId);
  const ended = await endGrant(scope.tx, id);
  if (!ended) {
    const seen = await grantById(scope.tx, id);
    throw new PhigateError('BAD_USER_INPUT', seen ? 'This grant has already ended.' : 'There is no grant with this id that you may end.');
  }
  scope.audit.add(event('break_glass', 'revoked', { id, patientId: ended.patient_id, role: ended.role }));
  return ended;
}

/** A grant's text sealed under its patient's key, bound to the grant's row and the text's column. */
function sealGrantText(scope: RequestScope, grant: GrantRow, column: (typeof GRANT_TEXTS)[keyof typeof GRANT_TEXTS]['column'], text: string): Promise<Buffer> {
  return scope.cipher.encrypt(grant.clinic_id, grantTextAad(grant.id, grant.patient_id, column), text);
}

function reviewerRole(scope: RequestScope): RolePolicy {
  const { role, held } = roleFor(scope.policy, scope.principal, (r) => r.operations.has('reviewBreakGlass'));
  if (role) return role;
  throw held.length > 0
    ? new PhigateError('MFA_REQUIRED', 'Reviewing emergency access requires a sign-in with multi-factor authentication.')
    : new PhigateError('FORBIDDEN', 'You may not review emergency access.');
}

/** A reviewer's verdict on a grant of its clinics; once per grant, never by the grant's own actor. */
export async function reviewBreakGlass(scope: RequestScope, rawId: string, rawOutcome: string, rawComment: string | null | undefined): Promise<GrantRow> {
  const role = reviewerRole(scope);
  const id = v.id('id', rawId);
  const outcome = REVIEW_OUTCOMES.find((o) => o === rawOutcome);
  if (outcome === undefined) throw new PhigateError('BAD_USER_INPUT', `outcome must be one of ${REVIEW_OUTCOMES.join(', ')}.`);
  const comment = rawComment == null ? null : v.text('comment', rawComment, MAX_COMMENT);
  let sealed: Buffer | null = null;
  if (comment !== null) {
    // Sealed under the key of the grant's patient, so the grant must be one this request sees.
    const grant = await grantById(scope.tx, id);
    if (!grant) throw new PhigateError('BAD_USER_INPUT', 'There is no grant with this id that you may review.');
    sealed = await sealGrantText(scope, grant, 'review_comment', comment);
  }
  let reviewed: GrantRow | null;
  try {
    reviewed = await reviewGrant(scope.tx, id, outcome, sealed);
  } catch (err) {
    if ((err as { code?: string }).code === CHECK_VIOLATION) throw new PhigateError('FORBIDDEN', 'Nobody reviews their own emergency access.');
    throw err;
  }
  if (!reviewed) {
    const seen = await grantById(scope.tx, id);
    throw new PhigateError('BAD_USER_INPUT', seen ? 'This grant has already been reviewed.' : 'There is no grant with this id that you may review.');
  }
  scope.audit.add(event('review', outcome, { id, patientId: reviewed.patient_id, role: role.name }));
  return reviewed;
}

/**
 * Grants this request may see, a page of the review queue at a time or one by id: a reviewer's
 * clinics' grants, a clinician's own. The listing is itself an audit event; the reason and review
 * comment (PHI) are decided, decrypted and audited one value at a time, when selected
 * (src/records/grant-text.ts), so a list that does not select them discloses none.
 */
export async function listBreakGlass(scope: RequestScope, args: GrantQueueArgs, maxPageSize: number): Promise<GrantRow[]> {
  const { role, held } = roleFor(scope.policy, scope.principal, (r) => r.operations.has('reviewBreakGlass') || r.operations.has('breakGlass'));
  if (!role) {
    throw held.length > 0
      ? new PhigateError('MFA_REQUIRED', 'This requires a sign-in with multi-factor authentication.')
      : new PhigateError('FORBIDDEN', 'You may not list emergency access grants.');
  }
  const q = grantQueueQuery(args, maxPageSize);
  let rows: GrantRow[];
  if (q.kind === 'one') {
    const grant = await grantById(scope.tx, q.id);
    rows = grant === null || (q.unreviewedOnly && grant.reviewed_at !== null) ? [] : [grant];
  } else {
    rows = await listGrants(scope.tx, q);
  }
  scope.audit.add({ ...event('break_glass', 'listed', { id: null, patientId: null, role: role.name }), action: 'view', breakGlass: false, purpose: 'healthcare_operations' });
  return rows;
}
