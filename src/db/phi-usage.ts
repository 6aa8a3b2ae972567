import type { Pool } from './pool.ts';

/** Whose window: the actor the audit trail names. */
export interface UsageOwner {
  readonly kind: 'user' | 'partner';
  readonly subject: string;
}

export interface RowsAndValues {
  readonly rows: number;
  readonly values: number;
}

export interface Reservation extends RowsAndValues {
  /** The minute the reservation was taken from; what is not used goes back to it. */
  readonly minute: Date;
  /** Seconds until that minute ends, by the database clock. */
  readonly retryAfterSeconds: number;
}

/**
 * Takes up to `want` from the owner's current minute, never past `cap` (see
 * schema/migrations/006_phi_usage.sql). Runs on its own, outside the request's transaction:
 * the reservation must hold for the other replicas at once, not when the request commits.
 */
export async function reservePhiUsage(pool: Pool, owner: UsageOwner, want: RowsAndValues, cap: RowsAndValues): Promise<Reservation> {
  const { rows } = await pool.query<{ window_minute: Date; granted_rows: number; granted_values: number; retry_after_seconds: number }>(
    'SELECT * FROM phigate.reserve_phi_usage($1, $2, $3, $4, $5, $6)',
    [owner.kind, owner.subject, want.rows, want.values, cap.rows, cap.values],
  );
  const r = rows[0]!;
  return { minute: r.window_minute, rows: r.granted_rows, values: r.granted_values, retryAfterSeconds: r.retry_after_seconds };
}

/** Gives back what a request reserved and did not show. */
export async function releasePhiUsage(pool: Pool, owner: UsageOwner, minute: Date, unused: RowsAndValues): Promise<void> {
  if (unused.rows === 0 && unused.values === 0) return;
  await pool.query(
    `UPDATE phigate.phi_usage SET rows_used = greatest(rows_used - $4, 0), values_used = greatest(values_used - $5, 0)
     WHERE actor_kind = $1 AND actor = $2 AND minute = $3`,
    [owner.kind, owner.subject, minute, unused.rows, unused.values],
  );
}
