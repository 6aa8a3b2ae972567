import { describe, expect, it } from 'vitest';
import type { AuditAction, AuditEvent } from '../../../src/audit/event.ts';
import { unaudited } from '../../../src/records/phi-budget.ts';

const event = (action: AuditAction): AuditEvent => ({
  action,
  typeName: 'Patient',
  field: 'givenName',
  patientId: '00000000-0000-4000-8000-000000000001',
  recordId: null,
  role: 'registrar',
  purpose: 'healthcare_operations',
  breakGlass: false,
});

describe('unaudited: PHI counted that no audit event accounts for', () => {
  it('nothing counted: nothing to account for, events or not', () => {
    expect(unaudited({ rows: 0, values: 0 }, [], 0)).toBe(false);
    expect(unaudited({ rows: 0, values: 0 }, [event('denied')], 0)).toBe(false);
  });

  it('values counted and an event that shows one: accounted for', () => {
    for (const action of ['read', 'masked', 'search'] as const) expect(unaudited({ rows: 1, values: 3 }, [event('denied'), event(action)], 0)).toBe(false);
  });

  it('values counted with no event at all, or only events that show nothing (a write\'s own rows, refusals): unaccounted', () => {
    expect(unaudited({ rows: 1, values: 1 }, [], 0)).toBe(true);
    expect(unaudited({ rows: 2, values: 5 }, [event('update'), event('denied'), event('limited')], 0)).toBe(true);
    // A row counted without a value is never made by the budget; were it, it is no excuse.
    expect(unaudited({ rows: 1, values: 0 }, [], 3)).toBe(true);
  });

  it('values that failed to open each leave an error and are excused by it, and only as many as there are errors', () => {
    expect(unaudited({ rows: 4, values: 8 }, [], 8)).toBe(false);
    expect(unaudited({ rows: 4, values: 8 }, [], 7)).toBe(true);
  });
});
