import type { RequestTransaction } from './transaction.ts';

/**
 * The compliance views' SQL (schema/migrations/015_compliance_views.sql). The gateway role cannot
 * select audit rows; these SECURITY DEFINER functions read them for a request whose context holds
 * an audit-reading role, within its clinics.
 */
export interface AuditEventRow {
  readonly id: string;
  readonly occurred_at: Date;
  readonly request_id: string;
  readonly actor: string;
  readonly actor_kind: string;
  readonly role: string | null;
  readonly purpose: string;
  readonly break_glass: boolean;
  readonly client_addr: string | null;
  readonly action: string;
  readonly type_name: string;
  readonly field: string | null;
  readonly patient_id: string | null;
  readonly record_id: string | null;
  readonly detail: string | null;
  readonly grant_id: string | null;
  readonly credential_id: string | null;
  /** The clinic the event is attributed to: its patient's; null for events without a patient. */
  readonly clinic_id: string | null;
}

export interface AuditEventFilter {
  readonly patientId: string | null;
  readonly actor: string | null;
  readonly action: string | null;
  readonly breakGlassOnly: boolean;
  readonly since: Date | null;
  readonly until: Date | null;
  /** Events with smaller ids than this one (the cursor of the previous page). */
  readonly before: bigint | null;
}

export async function auditEventPage(tx: RequestTransaction, f: AuditEventFilter, limit: number): Promise<AuditEventRow[]> {
  const { rows } = await tx.query<AuditEventRow>(
    'SELECT * FROM phigate.compliance_audit_events($1, $2, $3, $4, $5, $6, $7, $8)',
    [f.patientId, f.actor, f.action, f.breakGlassOnly, f.since, f.until, f.before?.toString() ?? null, limit],
  );
  return rows;
}

export interface DisclosureRow {
  readonly disclosed_at: Date;
  readonly request_id: string;
  readonly actor: string;
  readonly actor_kind: string;
  readonly credential_id: string | null;
  readonly role: string | null;
  readonly purpose: string;
  readonly break_glass: boolean;
  readonly grant_id: string | null;
  readonly client_addr: string | null;
  readonly fields: string[];
  readonly masked_fields: string[];
  readonly searches: string[];
  readonly events: number;
}

/** The patient's accounting, newest first; null when the patient is not one of the request's clinics (or none at all). */
export async function disclosuresOf(tx: RequestTransaction, patientId: string, since: Date | null, until: Date | null, limit: number): Promise<DisclosureRow[] | null> {
  const scope = await tx.query<{ in_scope: boolean }>('SELECT phigate.compliance_patient_in_scope($1) AS in_scope', [patientId]);
  if (!scope.rows[0]!.in_scope) return null;
  const { rows } = await tx.query<DisclosureRow>('SELECT * FROM phigate.compliance_disclosures($1, $2, $3, $4)', [patientId, since, until, limit]);
  return rows;
}
