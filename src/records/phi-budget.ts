import type { AuditEvent } from '../audit/event.ts';
import { PhigateError } from '../errors.ts';

/** Which limit stopped a value: the request's own, or what was left of the principal's minute. */
export type CapReason = 'phi_request_cap' | 'phi_minute_cap';

export const isCapReason = (reason: unknown): reason is CapReason => reason === 'phi_request_cap' || reason === 'phi_minute_cap';

export interface Allowance {
  readonly rows: number;
  readonly values: number;
  readonly rowsReason: CapReason;
  readonly valuesReason: CapReason;
}

/**
 * How many patient rows and PHI values this request may still show (policies/default.yaml,
 * `limits`). A row counts with the first value shown of that patient; a value is one field shown,
 * masked or not. Denied fields show nothing and count nothing.
 */
export interface PhiBudget {
  /** Set once per request by the limits plugin; until then nothing may be shown. */
  allow(allowance: Allowance): void;
  /**
   * Counts one value of `patientId`, to be called before it is decrypted. Returns the limit that
   * withholds it, or null. Throws once the request has ended, so that an execution abandoned on
   * timeout or shutdown decrypts nothing more.
   */
  take(patientId: string): CapReason | null;
  /**
   * Counts one search by an identifier as one value, before it runs, and refuses it unless a row
   * is left as well: were the row checked only on a hit, the refusal would tell hit from miss.
   */
  search(): CapReason | null;
  /** The patient a search found, counted as a row shown (its fields count as usual). */
  found(patientId: string): void;
  end(): void;
  readonly used: { readonly rows: number; readonly values: number };
}

const NOTHING: Allowance = { rows: 0, values: 0, rowsReason: 'phi_request_cap', valuesReason: 'phi_request_cap' };

export function createPhiBudget(): PhiBudget {
  let allowance = NOTHING;
  const rows = new Set<string>();
  let values = 0;
  let ended = false;
  const assertOpen = () => {
    if (ended) throw new PhigateError('INTERNAL', 'The request has ended.', { reason: 'request_ended' });
  };
  return {
    allow(next) {
      allowance = next;
    },
    take(patientId) {
      assertOpen();
      const newRow = !rows.has(patientId);
      if (newRow && rows.size >= allowance.rows) return allowance.rowsReason;
      if (values >= allowance.values) return allowance.valuesReason;
      rows.add(patientId);
      values++;
      return null;
    },
    search() {
      assertOpen();
      if (rows.size >= allowance.rows) return allowance.rowsReason;
      if (values >= allowance.values) return allowance.valuesReason;
      values++;
      return null;
    },
    found(patientId) {
      rows.add(patientId);
    },
    end() {
      ended = true;
    },
    get used() {
      return { rows: rows.size, values };
    },
  };
}

const showsPhi = (event: AuditEvent): boolean => event.action === 'read' || event.action === 'masked' || event.action === 'search';

/**
 * Whether the request counted PHI that no audit event accounts for: values (or a row) were taken
 * from its budget, which only happens right before they are shown, yet none of its events shows a
 * value or a search. A value that failed to open (KEY_UNAVAILABLE) was taken but shows nothing and
 * leaves one error in the answer instead, so it is excused by that error; anything beyond means a
 * path showed PHI without recording it, and the answer must not leave.
 */
export function unaudited(used: { readonly rows: number; readonly values: number }, events: readonly AuditEvent[], answerErrors: number): boolean {
  if (used.rows === 0 && used.values === 0) return false;
  if (events.some(showsPhi)) return false;
  return used.values === 0 || used.values > answerErrors;
}
