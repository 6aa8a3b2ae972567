import type { AuditEvent } from '../audit/event.ts';
import type { Charges } from './phi-budget.ts';
import { disclosesSearch } from './search.ts';

/**
 * Whether the request's audit events fail to account, one for one, for what it charged to its PHI
 * budget. A value is charged right before it is shown, so each charge must have its disclosure
 * event: every field charged its `read` or `masked` event (an empty value too: it is shown, as
 * empty) naming the same patient, every search charged its answered `search` event (hit, miss,
 * ambiguous). Denied and limited fields are never charged, and their events account for nothing;
 * a field that failed after its charge (budget.failed: its key unavailable) owes no disclosure
 * event, its error stands in the answer and its `refused` event accounts for nothing. Any difference, fewer events or more, means some path showed
 * or recorded PHI other than as it was counted, and the answer must not leave.
 */
export function eventsMissing(charges: Charges, events: readonly AuditEvent[]): boolean {
  let searches = 0;
  let fields = 0;
  // Per patient as well as in total, so that an event naming another patient than the value it
  // stands for is caught too. A request's events come in runs of one patient (a row's fields
  // resolve together): the map is touched once a run, not once an event.
  const shown = new Map<string, number>();
  let current: string | null = null;
  let run = 0;
  for (const e of events) {
    if (e.action === 'read' || e.action === 'masked') {
      if (e.patientId === null) return true;
      fields++;
      if (e.patientId !== current) {
        if (current !== null) shown.set(current, (shown.get(current) ?? 0) + run);
        current = e.patientId;
        run = 0;
      }
      run++;
    } else if (e.action === 'search' && disclosesSearch(e)) {
      searches++;
    }
  }
  if (current !== null) shown.set(current, (shown.get(current) ?? 0) + run);
  if (searches !== charges.searches || fields !== charges.values - charges.searches - charges.failed) return true;
  // Equal sums and every patient's count equal: no patient short, none over.
  for (const [patientId, owed] of charges.owed) if ((shown.get(patientId) ?? 0) !== owed.fields) return true;
  return false;
}
