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
 * What the request charged to its budget, for the check that its events account for every charge
 * (events-missing.ts): live counts, read once the request has ended.
 */
export interface Charges {
  /** Every value charged: fields and searches. */
  readonly values: number;
  /** Of those, searches by an identifier. */
  readonly searches: number;
  /** Of those, fields that failed before they were shown (failed()). */
  readonly failed: number;
  /** Per patient, the fields charged and not failed: each must have its read or masked event. */
  readonly owed: ReadonlyMap<string, { readonly fields: number }>;
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
   * withholds it, or null. Once one value is withheld, every later one is too (`over`): the request
   * is refused whole, so nothing more is worth decrypting. Throws once the request has ended, so
   * that an execution abandoned on timeout or shutdown decrypts nothing more.
   */
  take(patientId: string): CapReason | null;
  /**
   * Counts one value of `patientId` that the policy's row limits do not govern: a break-glass
   * grant's reason or review comment, which its own rule decides (src/policy/grant-text.ts) and the
   * listing's bound caps (a compliance reviewer sees no rows and has no limits). It is owed its
   * read event like every value, and charged to the principal's minute when it has one.
   */
  disclose(patientId: string): void;
  /**
   * A value of `patientId` that take() or disclose() counted and that then failed (its key unavailable): it
   * shows nothing and leaves its error in the answer instead of an event. It stays charged.
   */
  failed(patientId: string): void;
  /**
   * Counts one search by an identifier as one value, before it runs, and refuses it unless a row
   * is left as well: were the row checked only on a hit, the refusal would tell hit from miss.
   */
  search(): CapReason | null;
  /** The patient a search found, counted as a row shown (its fields count as usual). */
  found(patientId: string): void;
  end(): void;
  /**
   * The limit the request went past, when a value or search was withheld: the request is then
   * refused whole (src/http/plugins/use-request-transaction.ts), with `withheld` in its one
   * `limited` event. Null while the request stays within its limits.
   */
  readonly over: CapReason | null;
  /** Values and searches withheld since the request went past its limit. */
  readonly withheld: number;
  readonly used: { readonly rows: number; readonly values: number };
  readonly charges: Charges;
}

const NOTHING: Allowance = { rows: 0, values: 0, rowsReason: 'phi_request_cap', valuesReason: 'phi_request_cap' };

/**
 * One per request: a class, so that the budget is one object and its methods are shared, where
 * a closure per method cost every request a dozen functions (~1.9 KB allocated a read by id).
 */
class Budget implements PhiBudget {
  private allowance = NOTHING;
  // The rows shown, each with its fields owed an event: one map for both, one lookup per value
  // (a counter object per row, so that a value is counted without writing the map again).
  readonly owed = new Map<string, { fields: number }>();
  values = 0;
  searches = 0;
  failures = 0;
  over: CapReason | null = null;
  withheld = 0;
  private ended = false;
  readonly charges: Charges = new LiveCharges(this);

  allow(next: Allowance): void {
    this.allowance = next;
  }
  take(patientId: string): CapReason | null {
    this.assertOpen();
    if (this.over !== null) return this.withhold(this.over);
    const row = this.owed.get(patientId);
    if (row === undefined && this.owed.size >= this.allowance.rows) return this.withhold(this.allowance.rowsReason);
    if (this.values >= this.allowance.values) return this.withhold(this.allowance.valuesReason);
    if (row === undefined) this.owed.set(patientId, { fields: 1 });
    else row.fields++;
    this.values++;
    return null;
  }
  disclose(patientId: string): void {
    this.assertOpen();
    const row = this.owed.get(patientId);
    if (row === undefined) this.owed.set(patientId, { fields: 1 });
    else row.fields++;
    this.values++;
  }
  failed(patientId: string): void {
    const row = this.owed.get(patientId);
    // Only what take() counted can fail; anything else is not excused.
    if (row === undefined || row.fields === 0) return;
    row.fields--;
    this.failures++;
  }
  search(): CapReason | null {
    this.assertOpen();
    if (this.over !== null) return this.withhold(this.over);
    if (this.owed.size >= this.allowance.rows) return this.withhold(this.allowance.rowsReason);
    if (this.values >= this.allowance.values) return this.withhold(this.allowance.valuesReason);
    this.values++;
    this.searches++;
    return null;
  }
  found(patientId: string): void {
    if (!this.owed.has(patientId)) this.owed.set(patientId, { fields: 0 });
  }
  end(): void {
    this.ended = true;
  }
  get used(): { readonly rows: number; readonly values: number } {
    return { rows: this.owed.size, values: this.values };
  }
  private withhold(reason: CapReason): CapReason {
    this.over ??= reason;
    this.withheld++;
    return this.over;
  }
  private assertOpen(): void {
    if (this.ended) throw new PhigateError('INTERNAL', 'The request has ended.', { reason: 'request_ended' });
  }
}

/** The budget's counts as Charges reads them: live, read once the request has ended. */
class LiveCharges implements Charges {
  private readonly budget: Budget;
  constructor(budget: Budget) {
    this.budget = budget;
  }
  get values(): number {
    return this.budget.values;
  }
  get searches(): number {
    return this.budget.searches;
  }
  get failed(): number {
    return this.budget.failures;
  }
  get owed(): ReadonlyMap<string, { readonly fields: number }> {
    return this.budget.owed;
  }
}

export function createPhiBudget(): PhiBudget {
  return new Budget();
}
