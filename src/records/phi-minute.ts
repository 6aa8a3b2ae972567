import type { Principal } from '../auth/principal.ts';
import { consumeStatement, usageLeftFrom, usageLeftStatement, type PhiCharge, type RowsAndValues } from '../db/phi-usage.ts';
import type { Preamble, Statement } from '../db/transaction.ts';
import type { PhiLimits } from '../policy/types.ts';
import type { PhiBudget } from './phi-budget.ts';

/**
 * One request's share of the principal's per-minute PHI limits (policies/default.yaml, `limits`).
 * What is left of the minute is read with BEGIN, before any record reaches a resolver, and sets
 * the request's budget; what was shown is charged with COMMIT, and the charge refuses the whole
 * request if concurrent requests took the minute past its cap meanwhile: a write's in its own
 * transaction (schema/migrations/007_phi_usage_at_commit.sql), a read's in the audit writer's batch
 * (schema/migrations/009_audit_writer.sql).
 */
export interface PhiMinute {
  /** For the request transaction; undefined when no role of the principal can show PHI. */
  readonly preamble: Preamble | undefined;
  /** Seconds until the minute ends when it was used up before the request began, else null. */
  usedUp(): number | null;
  /** Seconds until the minute read with BEGIN ends; null when none was read. */
  endsIn(): number | null;
  /** The statement that charges `shown` in a write's transaction; null when there is nothing to charge. */
  charge(shown: RowsAndValues): Statement | null;
  /** `shown` for the audit writer to charge with a read's events; null when there is nothing to charge. */
  usage(shown: RowsAndValues): PhiCharge | null;
}

/** `limits` null: no role of the principal reads PHI, so the budget stays at nothing. */
export function phiMinuteFor(principal: Principal, limits: PhiLimits | null, budget: PhiBudget): PhiMinute {
  if (limits === null) return { preamble: undefined, usedUp: () => null, endsIn: () => null, charge: () => null, usage: () => null };
  const cap = { rows: limits.rowsPerMinute, values: limits.phiValuesPerMinute };
  let usedUp: number | null = null;
  let endsIn: number | null = null;
  // Named, not spread: on Node 20 a key added after a spread (`{ ...statement, onRows }`) takes
  // V8 11.3's slow path, ~1-1.5 us a key, once a request.
  const { text, values } = usageLeftStatement(principal, cap);
  return {
    preamble: {
      text,
      values,
      onRows(rows) {
        const left = usageLeftFrom(rows);
        endsIn = left.retryAfterSeconds;
        if (left.rows === 0 || left.values === 0) {
          usedUp = left.retryAfterSeconds;
          budget.allow({ rows: 0, values: 0, rowsReason: 'phi_minute_cap', valuesReason: 'phi_minute_cap' });
          return;
        }
        budget.allow({
          rows: Math.min(left.rows, limits.rowsPerRequest),
          values: Math.min(left.values, limits.phiValuesPerRequest),
          rowsReason: left.rows < limits.rowsPerRequest ? 'phi_minute_cap' : 'phi_request_cap',
          valuesReason: left.values < limits.phiValuesPerRequest ? 'phi_minute_cap' : 'phi_request_cap',
        });
      },
    },
    usedUp: () => usedUp,
    endsIn: () => endsIn,
    charge: (shown) => (shown.rows === 0 && shown.values === 0 ? null : consumeStatement(principal, shown, cap)),
    usage: (shown) => (shown.rows === 0 && shown.values === 0 ? null : { owner: { kind: principal.kind, subject: principal.subject }, rows: shown.rows, values: shown.values, cap }),
  };
}
