import type { AuditAction } from '../audit/event.ts';
import { auditEventPage, disclosuresOf, type AuditEventRow, type DisclosureRow } from '../db/audit-views.ts';
import { PhigateError } from '../errors.ts';
import { roleFor } from '../policy/decide.ts';
import type { RolePolicy } from '../policy/types.ts';
import type { RequestScope } from './scope.ts';
import * as v from './validate.ts';

/**
 * The compliance views: the audit trail of the reader's clinics, page by page, and one patient's
 * accounting of disclosures. Ids, codes and times only, never a PHI value; every query is itself
 * an audit event (`view`).
 */
const ACTIONS: readonly AuditAction[] = [
  'read', 'masked', 'denied', 'create', 'update', 'key', 'limited', 'search', 'refused', 'break_glass', 'review', 'api_key', 'alert', 'view',
];
const MAX_ACTOR = 200;
const DEFAULT_PAGE = 50;
// A patient's accounting is answered whole or not at all: past this, the reader narrows the dates.
export const MAX_DISCLOSURES = 1000;

const bad = (message: string) => new PhigateError('BAD_USER_INPUT', message);

function readerRole(scope: RequestScope): RolePolicy {
  const { role, held } = roleFor(scope.policy, scope.principal, (r) => r.operations.has('readAuditTrail'));
  if (role) return role;
  throw held.length > 0
    ? new PhigateError('MFA_REQUIRED', 'Reading the audit trail requires a sign-in with multi-factor authentication.')
    : new PhigateError('FORBIDDEN', 'You may not read the audit trail.');
}

function period(since: string | null | undefined, until: string | null | undefined): { since: Date | null; until: Date | null } {
  const from = since == null ? null : v.timestamp('since', since);
  const to = until == null ? null : v.timestamp('until', until);
  if (from !== null && to !== null && from.getTime() >= to.getTime()) throw bad('since must be before until.');
  return { since: from, until: to };
}

function viewed(scope: RequestScope, role: RolePolicy, field: 'auditEvents' | 'disclosures', patientId: string | null, rows: number): void {
  scope.audit.add({
    action: 'view',
    typeName: 'Query',
    field,
    patientId,
    recordId: null,
    role: role.name,
    purpose: role.purpose,
    breakGlass: false,
    detail: `rows:${rows}`,
  });
}

export const encodeAuditCursor = (id: string): string => Buffer.from(`audit:${id}`).toString('base64url');
const decodeAuditCursor = (cursor: string): bigint | null => {
  const m = /^audit:([1-9][0-9]{0,18})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  return m ? BigInt(m[1]!) : null;
};

export interface AuditEventArgs {
  readonly patientId?: string | null;
  readonly actor?: string | null;
  readonly action?: string | null;
  readonly breakGlassOnly?: boolean | null;
  readonly since?: string | null;
  readonly until?: string | null;
  readonly first?: number | null;
  readonly after?: string | null;
}

export interface AuditEventPage {
  readonly rows: AuditEventRow[];
  readonly hasNextPage: boolean;
}

/** Newest first; a page ends where the previous one did (keyset on id), so new events never shift it. */
export async function listAuditEvents(scope: RequestScope, args: AuditEventArgs, maxPageSize: number): Promise<AuditEventPage> {
  const role = readerRole(scope);
  const first = args.first ?? Math.min(DEFAULT_PAGE, maxPageSize);
  if (!Number.isInteger(first) || first < 1 || first > maxPageSize) throw bad(`first must be between 1 and ${maxPageSize}.`);
  const before = args.after == null ? null : decodeAuditCursor(args.after);
  if (args.after != null && before === null) throw bad('after is not a cursor this API issued.');
  const action = args.action ?? null;
  if (action !== null && !ACTIONS.includes(action as AuditAction)) throw bad(`action must be one of ${ACTIONS.join(', ')}.`);
  const patientId = args.patientId == null ? null : v.id('patientId', args.patientId);
  const actor = args.actor == null ? null : v.text('actor', args.actor, MAX_ACTOR);
  const rows = await auditEventPage(
    scope.tx,
    { patientId, actor, action, breakGlassOnly: args.breakGlassOnly ?? false, ...period(args.since, args.until), before },
    first + 1,
  );
  const page = rows.slice(0, first);
  viewed(scope, role, 'auditEvents', patientId, page.length);
  return { rows: page, hasNextPage: rows.length > first };
}

/** The HIPAA 164.528 accounting of one patient of the reader's clinics, newest first. */
export async function listDisclosures(scope: RequestScope, rawPatientId: string, since: string | null | undefined, until: string | null | undefined): Promise<DisclosureRow[]> {
  const role = readerRole(scope);
  const patientId = v.id('patientId', rawPatientId);
  const range = period(since, until);
  const rows = await disclosuresOf(scope.tx, patientId, range.since, range.until, MAX_DISCLOSURES + 1);
  if (rows === null) throw bad('There is no patient with this id in your clinics.');
  if (rows.length > MAX_DISCLOSURES) throw bad(`More than ${MAX_DISCLOSURES} disclosures match; narrow since and until.`);
  viewed(scope, role, 'disclosures', patientId, rows.length);
  return rows;
}
