import { describe, expect, it } from 'vitest';
import type { AuditAction, AuditEvent } from '../../../src/audit/event.ts';
import { eventsMissing } from '../../../src/records/events-missing.ts';
import { createPhiBudget, type PhiBudget } from '../../../src/records/phi-budget.ts';

const A = '00000000-0000-4000-8000-00000000000a';
const B = '00000000-0000-4000-8000-00000000000b';

const event = (action: AuditAction, patientId: string | null = A, detail: string | null = null): AuditEvent => ({
  action,
  typeName: action === 'search' ? 'Query' : 'Patient',
  field: action === 'search' ? 'patientByMrn' : 'givenName',
  patientId,
  recordId: null,
  role: 'registrar',
  purpose: 'healthcare_operations',
  breakGlass: false,
  detail,
});

function budget(): PhiBudget {
  const b = createPhiBudget();
  b.allow({ rows: 100, values: 1000, rowsReason: 'phi_request_cap', valuesReason: 'phi_request_cap' });
  return b;
}

/** `n` fields of `patientId` charged. */
const take = (b: PhiBudget, patientId: string, n = 1) => {
  for (let i = 0; i < n; i++) expect(b.take(patientId)).toBeNull();
};

describe('eventsMissing: every charge to the PHI budget has its own disclosure event', () => {
  it('nothing charged: nothing owed, whatever else was recorded', () => {
    expect(eventsMissing(budget().charges, [])).toBe(false);
    expect(eventsMissing(budget().charges, [event('denied'), event('limited'), event('search', null, 'mrn:refused')])).toBe(false);
  });

  it('one read or masked event per field charged, empty values included, denied and limited ones aside', () => {
    const b = budget();
    take(b, A, 3);
    take(b, B, 1);
    expect(eventsMissing(b.charges, [event('read'), event('masked'), event('denied'), event('read'), event('limited', B), event('read', B)])).toBe(false);
  });

  it('some but not all charged fields recorded: missing, whichever are lost', () => {
    const b = budget();
    take(b, A, 2);
    expect(eventsMissing(b.charges, [event('read')])).toBe(true);
    expect(eventsMissing(b.charges, [])).toBe(true);
    // A refusal recorded in place of a disclosure accounts for nothing.
    expect(eventsMissing(b.charges, [event('read'), event('denied')])).toBe(true);
  });

  it('more disclosure events than charges is a difference too', () => {
    const b = budget();
    take(b, A);
    expect(eventsMissing(b.charges, [event('read'), event('read')])).toBe(true);
  });

  it('per patient: an event naming another patient than the value charged', () => {
    const b = budget();
    take(b, A, 2);
    take(b, B, 1);
    expect(eventsMissing(b.charges, [event('read'), event('read', B), event('read', B)])).toBe(true);
    expect(eventsMissing(b.charges, [event('read'), event('read'), event('read', null)])).toBe(true);
    expect(eventsMissing(b.charges, [event('read', B), event('read'), event('masked')])).toBe(false);
  });

  it('a field that failed after its charge owes no event, and only that field', () => {
    const b = budget();
    take(b, A, 2);
    b.failed(A);
    expect(eventsMissing(b.charges, [event('read')])).toBe(false);
    expect(eventsMissing(b.charges, [])).toBe(true);
    // A failure of a patient nothing was charged for excuses nothing.
    const c = budget();
    take(c, A);
    c.failed(B);
    expect(c.charges.failed).toBe(0);
    expect(eventsMissing(c.charges, [])).toBe(true);
    // Nor does a failure past what was charged.
    take(c, B);
    c.failed(B);
    c.failed(B);
    expect(c.charges.failed).toBe(1);
    expect(eventsMissing(c.charges, [event('read')])).toBe(false);
  });

  it('a search charged needs its answered search event; refused and limited ones are not charged and do not count', () => {
    const b = budget();
    expect(b.search()).toBeNull();
    b.found(A);
    expect(eventsMissing(b.charges, [event('search', A, 'mrn:hit')])).toBe(false);
    expect(eventsMissing(b.charges, [event('search', null, 'mrn:limited')])).toBe(true);
    expect(eventsMissing(b.charges, [])).toBe(true);
    for (const outcome of ['miss', 'ambiguous']) expect(eventsMissing(b.charges, [event('search', null, `ssn:${outcome}`)])).toBe(false);
    // The found patient's fields are charged and owed as any other's.
    take(b, A);
    expect(eventsMissing(b.charges, [event('search', A, 'mrn:hit')])).toBe(true);
    expect(eventsMissing(b.charges, [event('search', A, 'mrn:hit'), event('read')])).toBe(false);
  });
});
