import type { Attributes } from '@opentelemetry/api';
import type { AuditAction } from '../audit/event.ts';
import { PhigateError } from '../errors.ts';
import { fieldVerdict, type FieldVerdict, type RowFacts } from '../policy/decide.ts';
import { MASKERS } from '../policy/mask.ts';
import { inSpan, tracing } from '../telemetry/tracing.ts';
import type { RequestScope } from './scope.ts';

export interface PhiRef {
  readonly typeName: 'Patient' | 'Encounter';
  readonly field: string;
  /** `${typeName}.${field}`, the policy's name for the field: made once per field, not per value. */
  readonly name: string;
  readonly table: 'patients' | 'encounters';
  readonly column: string;
  readonly rowId: string;
  readonly patientId: string;
  readonly row: RowFacts;
}

// Span attributes of each PHI field, made once: readPhi runs for every value of a page.
const fieldAttributes = new Map<string, Attributes>();
function attributesOf(ref: PhiRef): Attributes {
  let attributes = fieldAttributes.get(ref.name);
  if (attributes === undefined) fieldAttributes.set(ref.name, (attributes = { 'phigate.field': ref.name }));
  return attributes;
}

function record(scope: RequestScope, ref: PhiRef, verdict: FieldVerdict, action: AuditAction): void {
  scope.audit.add({
    action,
    typeName: ref.typeName,
    field: ref.field,
    patientId: ref.patientId,
    recordId: ref.rowId === ref.patientId ? null : ref.rowId,
    role: verdict.recordedRole,
    purpose: verdict.purpose,
    breakGlass: verdict.breakGlass,
    grantId: verdict.breakGlass ? (ref.row.grant?.id ?? null) : null,
  });
}

function shown(scope: RequestScope, ref: PhiRef, verdict: FieldVerdict, plain: string): string {
  let value = plain;
  if (verdict.effect === 'mask') {
    const mask = MASKERS[ref.name];
    // The policy loader refuses `mask` without a masker; this guards against a bypassed loader.
    if (!mask) throw new PhigateError('INTERNAL', 'The field cannot be masked.', { reason: 'no_masker' });
    value = mask(plain);
  }
  record(scope, ref, verdict, verdict.effect === 'mask' ? 'masked' : 'read');
  return value;
}

// An empty field is shown as empty: audited like a value, since it too says something about the patient.
function empty(scope: RequestScope, ref: PhiRef, verdict: FieldVerdict): null {
  record(scope, ref, verdict, verdict.effect === 'mask' ? 'masked' : 'read');
  return null;
}

/**
 * Decide, then count against the principal's PHI limits: the refusals of both are audited and
 * thrown here, so that nothing past this point is shown that was not allowed and counted.
 */
function admit(scope: RequestScope, ref: PhiRef): FieldVerdict {
  const verdict = tracing()
    ? inSpan('phigate.policy', attributesOf(ref), () => fieldVerdict(scope.policy, scope.principal, ref.row, ref.name))
    : fieldVerdict(scope.policy, scope.principal, ref.row, ref.name);
  if (verdict.effect === 'deny') {
    record(scope, ref, verdict, 'denied');
    throw new PhigateError('FIELD_DENIED', `You may not see ${ref.name}.`);
  }
  const capped = scope.budget.take(ref.patientId);
  if (capped !== null) {
    record(scope, ref, verdict, 'limited');
    const per = capped === 'phi_minute_cap' ? 'minute' : 'request';
    // No HTTP status: the rest of the answer stands, as it does around a denied field.
    throw new PhigateError('RATE_LIMITED', `Your limit of PHI per ${per} is reached; ${ref.name} is withheld.`, { reason: capped, http: null });
  }
  return verdict;
}

// `undefined` is a column the read left out because the principal could be shown it in no row
// (src/graphql/phi-field.ts, encounterColumnsFor); admit() then refuses it first. Allowed yet not
// fetched would be a bug: it fails, rather than pass for an empty value.
const notFetched = () => new PhigateError('INTERNAL', 'The field was not loaded.', { reason: 'column_not_fetched' });

/**
 * The one path by which a PHI value leaves the database: decide, count it against the principal's
 * PHI limits, and only then decrypt; mask when the policy says so; record an audit event either
 * way. A denied field, or one past a limit, is never decrypted.
 * Audit events are buffered and written before the response leaves.
 * Synchronous when the data key is cached, as it is in steady state: a page of 800 values then
 * costs no promise per value, and no closure either unless tracing is on.
 */
export function readPhi(scope: RequestScope, ref: PhiRef, ciphertext: Buffer | null | undefined): string | null | Promise<string | null> {
  const verdict = admit(scope, ref);
  try {
    if (ciphertext === undefined) throw notFetched();
    if (ciphertext === null) return empty(scope, ref, verdict);
    // The ref names its table, column and row: it is the AAD, with no object made per value.
    const plain = tracing()
      ? inSpan('phigate.decrypt', attributesOf(ref), () => scope.cipher.decrypt(ref.row.clinicId, ref, ciphertext))
      : scope.cipher.decrypt(ref.row.clinicId, ref, ciphertext);
    return plain instanceof Promise ? plain.then((p) => shown(scope, ref, verdict, p)).catch((e: unknown) => unshown(scope, ref, e)) : shown(scope, ref, verdict, plain);
  } catch (e) {
    return unshown(scope, ref, e);
  }
}

/** A value admitted (so charged) that then failed: nothing shown, no event owed (events-missing.ts). */
function unshown(scope: RequestScope, ref: PhiRef, err: unknown): never {
  scope.budget.failed(ref.patientId);
  throw err;
}

/**
 * A PHI value the database holds in plaintext (an encounter's date, which it must order by; a kind
 * written before kinds were encrypted): the same decision, limits and audit as readPhi, with
 * nothing to decrypt.
 */
export function readPlainPhi(scope: RequestScope, ref: PhiRef, value: string | null | undefined): string | null {
  const verdict = admit(scope, ref);
  try {
    if (value === undefined) throw notFetched();
    if (value === null) return empty(scope, ref, verdict);
    return shown(scope, ref, verdict, value);
  } catch (e) {
    return unshown(scope, ref, e);
  }
}
