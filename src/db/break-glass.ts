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
  /** The patient's clinic, bound at insert (034) and required (069). */
  readonly clinic_id: string;
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
  /** granted_at in microseconds since the epoch, exact (a Date keeps milliseconds): the grant's place in the queue. */
  readonly granted_us: string;
}

const GRANT_COLUMNS = `id, actor, role, patient_id, clinic_id, cross_clinic, reason, reason_sealed, granted_at, expires_at, revoked_at, revoked_by,
  reviewed_at, reviewed_by, review_outcome, review_comment, review_comment_sealed, (revoked_at IS NULL AND expires_at > clock_timestamp()) AS active,
  (extract(epoch FROM granted_at) * 1000000)::bigint::text AS granted_us`;

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

/** A grant's place in the review queue: reviewed or not, then granted_at (microseconds since the epoch), then id. */
export interface QueuePosition {
  readonly reviewed: boolean;
  readonly grantedUs: string;
  readonly id: string;
}

export interface QueueRead {
  readonly unreviewedOnly: boolean;
  /** Grants strictly after this place, or (backward) strictly before it; null: from the start. */
  readonly from: QueuePosition | null;
  readonly backward: boolean;
  readonly limit: number;
}

// The queue's order as one row value, so a keyset bound is one comparison and the order one list:
// unreviewed first (false sorts before true), then oldest first, the id breaking ties.
const QUEUE_KEY = '(reviewed_at IS NOT NULL, granted_at, id)';
const queueOrder = (direction: 'ASC' | 'DESC') => ['(reviewed_at IS NOT NULL)', 'granted_at', 'id'].map((c) => `${c} ${direction}`).join(', ');
// `reviewed_at IS NULL` in the form of the queue index's second column, so the index answers it.
const UNREVIEWED = '(reviewed_at IS NOT NULL) < true';
const POSITION = `($2::boolean, timestamptz 'epoch' + $3::bigint * interval '1 microsecond', $4::uuid)`;
// Past either end of the queue: the bound of a page when fewer clinics than the page's size have a grant.
const QUEUE_END = `true, timestamptz 'infinity', uuid 'ffffffff-ffff-ffff-ffff-ffffffffffff'`;
const QUEUE_START = `false, timestamptz '-infinity', uuid '00000000-0000-0000-0000-000000000000'`;

/**
 * One page of the review queue in queue order, whichever way it was read. Row security shows a
 * request the grants of its actor and, to a reviewer, those of its clinics; the statement asks for
 * the same two parts itself, each in queue order from the cursor through the queue index (068),
 * and merges them, so a page never sorts a whole clinic's grants. Row security still decides every
 * row. A backward read takes the `limit` grants just before `from`, then turns them round.
 *
 * The reviewer's part is bounded before it is read: reading `limit` grants of every clinic in the
 * token made a page of a reviewer of 1,000 clinics read 51,000 rows, each costing row security an
 * ANY over the 1,000 clinics (2.2 s of PostgreSQL's CPU; bench/README.md, "left1"). First each clinic's first grant
 * (one row a clinic); the `limit`-th of those in queue order bounds the page, since `limit` grants
 * of distinct clinics lie at or before it (past the queue's end when fewer clinics have a grant).
 * Only clinics whose first grant is at or before that bound have a grant on the page (at most
 * `limit` clinics), and only their grants up to it are read.
 */
export async function listGrants(tx: RequestTransaction, q: QueueRead): Promise<GrantRow[]> {
  const { text, params } = listGrantsStatement(q);
  // The planner prices the statement by clinics it cannot count (a generic plan), at times over
  // jit_above_cost: compiling it then took 35-70 ms of a page that reads in 1-57 (bench/README.md,
  // "left1"). Off for the rest of this transaction only.
  await tx.query(`SELECT set_config('jit', 'off', true)`);
  const { rows } = await tx.query<GrantRow>(text, params);
  return q.backward ? rows.reverse() : rows;
}

/** listGrants' statement and parameters. */
export function listGrantsStatement(q: QueueRead): { text: string; params: unknown[] } {
  const direction = q.backward ? 'DESC' : 'ASC';
  const conditions = [q.unreviewedOnly ? UNREVIEWED : null, q.from === null ? null : `${QUEUE_KEY} ${q.backward ? '<' : '>'} ${POSITION}`].filter((c) => c !== null);
  const where = conditions.map((c) => ` AND ${c}`).join('');
  const part = (test: string) => `SELECT * FROM phigate.break_glass_grants WHERE ${test}${where} ORDER BY ${queueOrder(direction)} LIMIT $1`;
  // At or before the bound, in the direction read: one row comparison, so the queue index reads
  // each clinic's part only up to it.
  const within = (key: string) => `${key} ${q.backward ? '>=' : '<='} (SELECT b.reviewed, b.granted_at, b.id FROM bound b)`;
  const firstsOrder = ['reviewed', 'granted_at', 'id'].map((c) => `${c} ${direction}`).join(', ');
  const params: unknown[] = [q.limit];
  if (q.from !== null) params.push(q.from.reviewed, q.from.grantedUs, q.from.id);
  // DISTINCT: a clinic named twice must count once towards the bound. UNION: a reviewer's own
  // grant in one of its clinics comes once.
  const text = `WITH firsts AS (
       SELECT c.id AS clinic, f.* FROM (SELECT DISTINCT unnest(phigate.ctx_clinics())) AS c(id) CROSS JOIN LATERAL (
         SELECT (reviewed_at IS NOT NULL) AS reviewed, granted_at, id FROM phigate.break_glass_grants
         WHERE phigate.ctx_reviewer() AND clinic_id = c.id${where} ORDER BY ${queueOrder(direction)} LIMIT 1) f
     ), bound AS (
       (SELECT reviewed, granted_at, id FROM firsts ORDER BY ${firstsOrder} OFFSET $1 - 1 LIMIT 1)
       UNION ALL SELECT ${q.backward ? QUEUE_START : QUEUE_END}
       ORDER BY ${firstsOrder} LIMIT 1
     )
     SELECT ${GRANT_COLUMNS} FROM (
       SELECT g.* FROM firsts f CROSS JOIN LATERAL (${part(`phigate.ctx_reviewer() AND clinic_id = f.clinic AND ${within(QUEUE_KEY)}`)}) g
       WHERE ${within('(f.reviewed, f.granted_at, f.id)')}
       UNION (${part('actor = phigate.ctx_actor()')})
     ) g ORDER BY ${queueOrder(direction)} LIMIT $1`;
  return { text, params };
}
