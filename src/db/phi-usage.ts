import type { Statement } from './transaction.ts';

/** Whose window: the actor the audit trail names. */
export interface UsageOwner {
  readonly kind: 'user' | 'partner';
  readonly subject: string;
}

export interface RowsAndValues {
  readonly rows: number;
  readonly values: number;
}

export interface UsageLeft extends RowsAndValues {
  /** Seconds until the current minute ends, by the database clock. */
  readonly retryAfterSeconds: number;
}

/** SQLSTATE of consume_phi_usage's refusal (schema/migrations/007_phi_usage_at_commit.sql). */
const MINUTE_CAP_SQLSTATE = 'PH429';

/** What is left of the owner's current minute; read without a lock, so it may be spent by others meanwhile. */
export function usageLeftStatement(owner: UsageOwner, cap: RowsAndValues): Statement {
  return {
    text: 'SELECT rows_left, values_left, retry_after_seconds FROM phigate.phi_usage_left($1, $2, $3, $4)',
    values: [owner.kind, owner.subject, cap.rows, cap.values],
  };
}

export function usageLeftFrom(rows: readonly Record<string, unknown>[]): UsageLeft {
  const r = rows[0] as { rows_left: number; values_left: number; retry_after_seconds: number };
  return { rows: r.rows_left, values: r.values_left, retryAfterSeconds: r.retry_after_seconds };
}

/**
 * Charges what the request showed to the owner's current minute, as the request's last statement
 * before COMMIT: the charge commits with the audit rows of what it counts, or not at all.
 */
export function consumeStatement(owner: UsageOwner, shown: RowsAndValues, cap: RowsAndValues): Statement {
  return {
    text: 'SELECT phigate.consume_phi_usage($1, $2, $3, $4, $5, $6)',
    values: [owner.kind, owner.subject, shown.rows, shown.values, cap.rows, cap.values],
  };
}

/**
 * Seconds to wait when `err` is consume_phi_usage's refusal (the minute would go past its cap),
 * else null. The detail is the function's own number, never text from a request.
 */
export function minuteCapRetryAfter(err: unknown): number | null {
  const e = err as { code?: unknown; detail?: unknown } | null;
  if (e?.code !== MINUTE_CAP_SQLSTATE) return null;
  const seconds = Number(e.detail);
  return Number.isInteger(seconds) && seconds >= 1 && seconds <= 60 ? seconds : 60;
}

/** What one read showed, to be charged to its principal's minute by the audit writer. */
export interface PhiCharge extends RowsAndValues {
  readonly owner: UsageOwner;
  readonly cap: RowsAndValues;
}

/** Per charge, in the order given: accepted, or refused with the seconds left in the minute. */
export type ChargeVerdict = { readonly accepted: true } | { readonly accepted: false; readonly retryAfterSeconds: number };

/**
 * Charges a batch's reads in one statement that never raises for a cap (charge_phi_usage,
 * schema/migrations/009_audit_writer.sql): per principal, in order, each charge is accepted while
 * the minute stays within the cap, else refused and charged nothing.
 */
export function chargeBatchStatement(charges: readonly PhiCharge[]): Statement {
  return {
    text: 'SELECT n, accepted, retry_after_seconds FROM phigate.charge_phi_usage($1, $2, $3, $4, $5, $6)',
    values: [
      charges.map((c) => c.owner.kind),
      charges.map((c) => c.owner.subject),
      charges.map((c) => c.rows),
      charges.map((c) => c.values),
      charges.map((c) => c.cap.rows),
      charges.map((c) => c.cap.values),
    ],
  };
}

export function chargeVerdicts(count: number, rows: readonly Record<string, unknown>[]): ChargeVerdict[] {
  // Filled, not `new Array(count)`: array methods skip holes, so a charge without a verdict would pass.
  const verdicts: (ChargeVerdict | undefined)[] = Array.from({ length: count }, () => undefined);
  for (const r of rows as { n: string | number; accepted: boolean; retry_after_seconds: number }[]) {
    const n = Number(r.n);
    if (!Number.isInteger(n) || n < 1 || n > count) throw new Error('a PHI charge verdict names no charge of the batch');
    verdicts[n - 1] = r.accepted ? { accepted: true } : { accepted: false, retryAfterSeconds: r.retry_after_seconds };
  }
  if (verdicts.some((v) => v === undefined)) throw new Error('a PHI charge of the batch has no verdict');
  return verdicts as ChargeVerdict[];
}
