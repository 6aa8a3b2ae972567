import { PhigateError } from '../errors.ts';
import type { RequestTransaction } from './transaction.ts';

/**
 * SQL for break-glass grants (schema/migrations/012_break_glass.sql). Row security decides which
 * grants a request sees and may change: its actor's own, and for reviewers those of their clinics.
 */
export interface GrantRow {
  readonly id: string;
  readonly actor: string;
  readonly role: string;
  readonly patient_id: string;
  readonly clinic_id: string | null;
  readonly cross_clinic: boolean;
  /** The legacy plaintext reason of a grant opened before reasons were sealed (066); null once sealed. */
  readonly reason: string | null;
  /** The reason sealed under the patient's key (AAD: break_glass_grants, reason, the grant's id). */
  readonly reason_sealed: Buffer | null;
  readonly granted_at: Date;
  readonly expires_at: Date;
  readonly revoked_at: Date | null;
  readonly revoked_by: string | null;
  readonly reviewed_at: Date | null;
  readonly reviewed_by: string | null;
  readonly review_outcome: string | null;
  /** Legacy plaintext, as `reason`. */
  readonly review_comment: string | null;
  readonly review_comment_sealed: Buffer | null;
  /** Live by the database clock at the time of the statement. */
  readonly active: boolean;
}

const GRANT_COLUMNS = `id, actor, role, patient_id, clinic_id, cross_clinic, reason, reason_sealed, granted_at, expires_at, revoked_at, revoked_by,
  reviewed_at, reviewed_by, review_outcome, review_comment, review_comment_sealed, (revoked_at IS NULL AND expires_at > clock_timestamp()) AS active`;

/** Serialises one actor's grant openings across replicas for the rest of the transaction, so a daily limit holds. */
export async function grantsInLastDay(tx: RequestTransaction): Promise<number> {
  await tx.query(`SELECT pg_advisory_xact_lock(hashtext('phigate.break_glass:' || phigate.ctx_actor()))`);
  const { rows } = await tx.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM phigate.break_glass_grants WHERE actor = phigate.ctx_actor() AND granted_at > clock_timestamp() - interval '24 hours'`,
  );
  return rows[0]!.n;
}

/** Whether row security shows the patient right now, and in which clinic. */
export async function visiblePatientClinic(tx: RequestTransaction, patientId: string): Promise<string | null> {
  const { rows } = await tx.query<{ clinic_id: string }>('SELECT clinic_id FROM phigate.patients WHERE id = $1', [patientId]);
  return rows[0]?.clinic_id ?? null;
}

export interface NewGrant {
  readonly role: string;
  readonly patientId: string;
  readonly crossClinic: boolean;
  readonly requestId: string;
  readonly minutes: number;
}

/**
 * The grant's times come from the database clock, the one clock every replica shares; its clinic
 * is the patient's, bound by the database at insert (schema/migrations/034_break_glass_clinic.sql).
 * Row security refuses (42501) a patient that does not exist and one beyond reach alike.
 * The reason follows (sealReason): it is sealed under the key of the clinic the database binds here.
 */
export async function insertGrant(tx: RequestTransaction, g: NewGrant): Promise<GrantRow> {
  const { rows } = await tx.query<GrantRow>(
    `INSERT INTO phigate.break_glass_grants (actor, role, patient_id, cross_clinic, request_id, expires_at)
     VALUES (phigate.ctx_actor(), $1, $2, $3, $4, clock_timestamp() + make_interval(mins => $5::int)) RETURNING ${GRANT_COLUMNS}`,
    [g.role, g.patientId, g.crossClinic, g.requestId, g.minutes],
  );
  return rows[0]!;
}

/** Writes the sealed reason of a grant this transaction just opened (once: schema/migrations/066_break_glass_sealed_text.sql). */
export async function sealReason(tx: RequestTransaction, id: string, sealed: Buffer): Promise<GrantRow> {
  const { rows } = await tx.query<GrantRow>(
    `UPDATE phigate.break_glass_grants SET reason_sealed = $2 WHERE id = $1 AND reason_sealed IS NULL RETURNING ${GRANT_COLUMNS}`,
    [id, sealed],
  );
  if (rows.length !== 1) throw new PhigateError('INTERNAL', 'The grant could not be recorded.', { reason: 'grant_reason_unwritten' });
  return rows[0]!;
}

export async function grantById(tx: RequestTransaction, id: string): Promise<GrantRow | null> {
  const { rows } = await tx.query<GrantRow>(`SELECT ${GRANT_COLUMNS} FROM phigate.break_glass_grants WHERE id = $1`, [id]);
  return rows[0] ?? null;
}

/** Ends a live grant now; null when there is no such grant this request may end, or it already ended. */
export async function endGrant(tx: RequestTransaction, id: string): Promise<GrantRow | null> {
  const { rows } = await tx.query<GrantRow>(
    `UPDATE phigate.break_glass_grants SET revoked_at = clock_timestamp(), revoked_by = phigate.ctx_actor()
     WHERE id = $1 AND revoked_at IS NULL AND expires_at > clock_timestamp() RETURNING ${GRANT_COLUMNS}`,
    [id],
  );
  return rows[0] ?? null;
}

/** Records a review; null when there is no such grant this request may review, or it was reviewed already. */
export async function reviewGrant(tx: RequestTransaction, id: string, outcome: string, comment: Buffer | null): Promise<GrantRow | null> {
  const { rows } = await tx.query<GrantRow>(
    `UPDATE phigate.break_glass_grants
     SET reviewed_at = clock_timestamp(), reviewed_by = phigate.ctx_actor(), review_outcome = $2, review_comment_sealed = $3
     WHERE id = $1 AND reviewed_at IS NULL RETURNING ${GRANT_COLUMNS}`,
    [id, outcome, comment],
  );
  return rows[0] ?? null;
}

/** Unreviewed first, oldest first: the review queue. */
export async function listGrants(tx: RequestTransaction, unreviewedOnly: boolean, limit: number): Promise<GrantRow[]> {
  const { rows } = await tx.query<GrantRow>(
    `SELECT ${GRANT_COLUMNS} FROM phigate.break_glass_grants WHERE ($1::boolean IS FALSE OR reviewed_at IS NULL)
     ORDER BY (reviewed_at IS NULL) DESC, granted_at, id LIMIT $2`,
    [unreviewedOnly, limit],
  );
  return rows;
}
