import type { AuditEvent } from '../audit/event.ts';
import type { BlindIndexColumn } from '../crypto/blind-index.ts';
import { searchByBlindIndex, type EncounterPhiColumn, type EncounterWindow, type PatientPageRead, type PatientRow, type SearchResult } from '../db/patients.ts';
import { PhigateError } from '../errors.ts';
import { knownRoles, purposeFor, searchRole } from '../policy/decide.ts';
import { identifierIndexes, normaliseIdentifier } from './identifiers.ts';
import type { RequestScope } from './scope.ts';

const SEARCHES = {
  ssn: { column: 'patients.ssn', index: 'ssn_bidx', field: 'patientBySsn', policyName: 'Patient.ssn' },
  mrn: { column: 'patients.mrn', index: 'mrn_bidx', field: 'patientByMrn', policyName: 'Patient.mrn' },
} as const satisfies Record<string, { column: BlindIndexColumn; index: string; field: string; policyName: string }>;

export type IdentifierKind = keyof typeof SEARCHES;

/** How a search ended, as its audit row says (`detail` is `<kind>:<outcome>`). */
type Outcome = 'hit' | 'miss' | 'ambiguous' | 'refused' | 'limited' | 'failed';

// The outcomes that tell the principal something, each after budget.search() charged the search.
const DISCLOSED = /:(hit|miss|ambiguous)$/;

/** Whether `event` is the audit event of a search that was charged and answered (not refused or limited). */
export const disclosesSearch = (event: AuditEvent): boolean => event.action === 'search' && typeof event.detail === 'string' && DISCLOSED.test(event.detail);

/** The patient a search found and, when the search was asked to read them, its encounters (a page of that one row). */
export interface SearchHit {
  readonly row: PatientRow;
  readonly encounters: PatientPageRead | null;
}

/**
 * Finds a patient by an identifier. Confirming that someone is a patient is itself a disclosure, so
 * every search leaves one `search` audit row with its outcome (never the identifier), whether it
 * found the patient, nothing, or was refused; it needs a role that sees the identifier in full; it
 * counts as a PHI value against the principal's caps, and against the principal's searches per
 * minute. No refusal depends on what the search found, so none says anything about the identifier.
 * With `encounters` (PHI columns and a window), the patient's encounters are read in the search's statement.
 */
export async function searchPatient(scope: RequestScope, kind: IdentifierKind, raw: string, encounters: { readonly columns: readonly EncounterPhiColumn[]; readonly window: EncounterWindow } | null = null): Promise<SearchHit | null> {
  const search = SEARCHES[kind];
  const normalised = normaliseIdentifier(search.column, raw);
  const { policy, principal } = scope;
  const role = searchRole(policy, principal, search.policyName);
  const roleName = role?.name ?? knownRoles(policy, principal)[0]?.name ?? null;
  const audit = (outcome: Outcome, patientId: string | null = null) =>
    scope.audit.add({
      action: 'search',
      typeName: 'Query',
      field: search.field,
      patientId,
      recordId: null,
      role: roleName,
      purpose: purposeFor(policy, principal, roleName),
      breakGlass: false,
      detail: `${kind}:${outcome}`,
    });

  if (role === null) {
    audit('refused');
    // MFA_REQUIRED only where signing in with MFA would let the search run.
    throw !principal.mfa && searchRole(policy, { ...principal, mfa: true }, search.policyName)
      ? new PhigateError('MFA_REQUIRED', 'This requires a sign-in with multi-factor authentication.')
      : new PhigateError('FORBIDDEN', `You may not search by ${kind}.`);
  }
  let result: SearchResult;
  try {
    const indexes = await identifierIndexes(scope.keyring, search.column, principal.clinics, normalised);
    result = await searchByBlindIndex(scope.tx, search.index, indexes, scope.searchQuota, { kind: principal.kind, subject: principal.subject }, scope.searchesPerMinute, encounters);
  } catch (err) {
    // A search that could not be counted or run (its quota's database, the lookup, a key) was
    // still asked for: it is traced like any other, and the answer is the failure's.
    audit('failed');
    throw err;
  }
  // Both limits are checked before the result is looked at: a refusal says the same for a hit and
  // a miss. The searches per minute first, so that a search they refuse is not charged as a value.
  if (!result.allowed) {
    audit('limited');
    throw new PhigateError('RATE_LIMITED', 'Your searches per minute are used up; retry when the minute ends.', {
      reason: 'search_rate',
      http: { status: 429, headers: { 'Retry-After': String(result.retryAfterSeconds) } },
    });
  }
  // The PHI caps are known once the request's first statement has answered (phi-minute.ts).
  const capped = scope.budget.search();
  if (capped !== null) {
    audit('limited');
    const per = capped === 'phi_minute_cap' ? 'minute' : 'request';
    throw new PhigateError('RATE_LIMITED', `Your limit of PHI per ${per} is reached; the search result is withheld.`, { reason: capped, http: null });
  }
  if (result.rows.length > 1) {
    audit('ambiguous');
    throw new PhigateError('BAD_USER_INPUT', 'More than one patient matches; use patient(id).');
  }
  const row = result.rows[0];
  if (row === undefined) {
    audit('miss');
    return null;
  }
  scope.budget.found(row.id);
  audit('hit', row.id);
  return { row, encounters: result.encountersOf === null ? null : { rows: result.rows, encountersOf: result.encountersOf } };
}
