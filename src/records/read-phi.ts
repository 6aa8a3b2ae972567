import type { Attributes } from '@opentelemetry/api';
import type { AuditAction, AuditEvent } from '../audit/event.ts';
import type { PhiRowFacts } from '../db/patients.ts';
import { PhigateError } from '../errors.ts';
import { fieldVerdict, type FieldVerdict } from '../policy/decide.ts';
import { MASKERS } from '../policy/mask.ts';
import { inSpan, tracing } from '../telemetry/tracing.ts';
import type { RequestScope } from './scope.ts';

/** A PHI field of the schema: the policy's name for it and the column its values live in. Made once per field. */
export interface PhiField {
  readonly typeName: 'Patient' | 'Encounter';
  readonly field: string;
  /** `${typeName}.${field}`, the policy's name for the field. */
  readonly name: string;
  readonly table: 'patients' | 'encounters';
  readonly column: string;
}

/**
 * The facts an event shares with every other value of its field under one verdict: the contract's
 * fields but the patient and the record. Made once per (verdict, action), not once per value.
 */
interface PhiEventKind {
  readonly action: AuditAction;
  readonly typeName: string;
  readonly field: string;
  readonly role: string | null;
  readonly purpose: string;
  readonly breakGlass: boolean;
  readonly grantId: string | null;
}

/**
 * The one object a PHI value costs: its audit event, as its kind and the row's patient and record.
 * A read's events are held until its audit batch commits, under load long enough to be promoted
 * to the old generation: three fields each instead of the contract's nine halve what a page's
 * ~1,200 events hold there (bench/README.md, branch pagegc). The contract's fields are getters,
 * so every reader of AuditEvent reads it as it reads any other event.
 */
class PhiEvent implements AuditEvent {
  readonly kind: PhiEventKind;
  readonly patientId: string;
  readonly recordId: string | null;
  constructor(kind: PhiEventKind, patientId: string, recordId: string | null) {
    this.kind = kind;
    this.patientId = patientId;
    this.recordId = recordId;
  }
  get action(): AuditAction {
    return this.kind.action;
  }
  get typeName(): string {
    return this.kind.typeName;
  }
  get field(): string {
    return this.kind.field;
  }
  get role(): string | null {
    return this.kind.role;
  }
  get purpose(): string {
    return this.kind.purpose;
  }
  get breakGlass(): boolean {
    return this.kind.breakGlass;
  }
  get grantId(): string | null {
    return this.kind.grantId;
  }
}

// Span attributes of each PHI field, made once: readPhi runs for every value of a page.
const fieldAttributes = new Map<string, Attributes>();
function attributesOf(field: PhiField): Attributes {
  let attributes = fieldAttributes.get(field.name);
  if (attributes === undefined) fieldAttributes.set(field.name, (attributes = { 'phigate.field': field.name }));
  return attributes;
}

// The kinds of a verdict (itself made once per field, clinic and standing: src/policy/decide.ts),
// by action; the field is checked on every hit, so a verdict object shared by two fields could
// only cost a new kind, never lend one field's name to another's event.
const kindsOf = new WeakMap<FieldVerdict, Partial<Record<AuditAction, PhiEventKind>>>();

const newKind = (field: PhiField, verdict: FieldVerdict, action: AuditAction, grantId: string | null): PhiEventKind => ({
  action,
  typeName: field.typeName,
  field: field.field,
  role: verdict.recordedRole,
  purpose: verdict.purpose,
  breakGlass: verdict.breakGlass,
  grantId,
});

function kindOf(field: PhiField, verdict: FieldVerdict, action: AuditAction, grantId: string | null): PhiEventKind {
  // A grant's id is the row's: break-glass reads are rare, each gets a kind of its own.
  if (grantId !== null) return newKind(field, verdict, action, grantId);
  let kinds = kindsOf.get(verdict);
  if (kinds === undefined) kindsOf.set(verdict, (kinds = {}));
  const kind = kinds[action];
  if (kind !== undefined && kind.field === field.field && kind.typeName === field.typeName) return kind;
  return (kinds[action] = newKind(field, verdict, action, grantId));
}

const grantIdOf = (row: PhiRowFacts, verdict: FieldVerdict): string | null => (verdict.breakGlass ? (row.grant?.id ?? null) : null);
const recordIdOf = (row: PhiRowFacts): string | null => (row.rowId === row.patientId ? null : row.rowId);

function eventOf(field: PhiField, row: PhiRowFacts, verdict: FieldVerdict, action: AuditAction): PhiEvent {
  return new PhiEvent(kindOf(field, verdict, action, grantIdOf(row, verdict)), row.patientId, recordIdOf(row));
}

const shownAs = (verdict: FieldVerdict): AuditAction => (verdict.effect === 'mask' ? 'masked' : 'read');

// Recorded once shown, so that a value that failed to decrypt or mask leaves no event saying it was
// shown (unshown() records its refusal instead).
function shown(scope: RequestScope, field: PhiField, verdict: FieldVerdict, event: AuditEvent, plain: string): string {
  let value = plain;
  if (verdict.effect === 'mask') {
    const mask = MASKERS[field.name];
    // The policy loader refuses `mask` without a masker; this guards against a bypassed loader.
    if (!mask) throw new PhigateError('INTERNAL', 'The field cannot be masked.', { reason: 'no_masker' });
    value = mask(plain);
  }
  scope.audit.add(event);
  return value;
}

/**
 * Decide, then count against the principal's PHI limits: a denial is audited and thrown here, a
 * value past the limits counted and thrown, so that nothing past this point is shown that was not
 * allowed and counted.
 */
function admit(scope: RequestScope, field: PhiField, row: PhiRowFacts): FieldVerdict {
  const verdict = tracing()
    ? inSpan('phigate.policy', attributesOf(field), () => fieldVerdict(scope.policy, scope.principal, row, field.name))
    : fieldVerdict(scope.policy, scope.principal, row, field.name);
  if (verdict.effect === 'deny') {
    scope.audit.add(eventOf(field, row, verdict, 'denied'));
    throw new PhigateError('FIELD_DENIED', `You may not see ${field.name}.`);
  }
  const capped = scope.budget.take(row.patientId);
  if (capped !== null) {
    // Not an event per value withheld: the budget counts them, and the request is refused whole
    // with one `limited` event that says how many (src/http/plugins/use-request-transaction.ts).
    const per = capped === 'phi_minute_cap' ? 'minute' : 'request';
    throw new PhigateError('RATE_LIMITED', `Your limit of PHI per ${per} is reached; ${field.name} is withheld.`, { reason: capped, http: null });
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
 * Synchronous when the data key is cached, as it is in steady state: a page of 1,200 values then
 * costs no promise per value, no closure unless tracing is on, and one object (its event).
 */
export function readPhi(scope: RequestScope, field: PhiField, row: PhiRowFacts, ciphertext: Buffer | null | undefined): string | null | Promise<string | null> {
  const verdict = admit(scope, field, row);
  try {
    if (ciphertext === undefined) throw notFetched();
    const event = eventOf(field, row, verdict, shownAs(verdict));
    // An empty field is shown as empty: audited like a value, since it too says something about the patient.
    if (ciphertext === null) {
      scope.audit.add(event);
      return null;
    }
    const plain = tracing()
      ? inSpan('phigate.decrypt', attributesOf(field), () => scope.cipher.decryptAt(row.clinicId, field.table, field.column, row.rowId, row.patientId, ciphertext, row.key))
      : scope.cipher.decryptAt(row.clinicId, field.table, field.column, row.rowId, row.patientId, ciphertext, row.key);
    return plain instanceof Promise
      ? plain.then((p) => shown(scope, field, verdict, event, p)).catch((e: unknown) => unshown(scope, field, row, verdict, e))
      : shown(scope, field, verdict, event, plain);
  } catch (e) {
    return unshown(scope, field, row, verdict, e);
  }
}

// Error codes and reasons are ours (src/errors.ts and the throwers'), never a client's or a
// cause's text; the pattern is the audit table's for details, so nothing else can reach it.
const DETAIL = /^[a-z0-9_:.-]{1,64}$/;
export function refusalDetail(err: unknown): string {
  if (!(err instanceof PhigateError)) return 'internal';
  const detail = `${err.code.toLowerCase()}${err.reason ? `:${err.reason}` : ''}`;
  return DETAIL.test(detail) ? detail : err.code.toLowerCase();
}

/**
 * A value admitted (so charged) that then failed: its ciphertext did not open (altered, moved to
 * another row or column, sealed under another key version, its key shredded) or its key could not
 * be had. Nothing is shown; the refusal is recorded for that field, with the reason's code and
 * never a byte of the value, and is written with the request's other events. It owes no disclosure
 * event (events-missing.ts): the charge is excused and the error stands in the answer.
 */
function unshown(scope: RequestScope, field: PhiField, row: PhiRowFacts, verdict: FieldVerdict, err: unknown): never {
  scope.budget.failed(row.patientId);
  // A plain event: its detail is its own (kinds are shared), and refusals are rare.
  const kind = kindOf(field, verdict, 'refused', grantIdOf(row, verdict));
  scope.audit.add({ ...kind, patientId: row.patientId, recordId: recordIdOf(row), detail: refusalDetail(err) });
  throw err;
}

/** A plaintext PHI value the shred erased (src/records/shred-patient.ts): answered as a shredded ciphertext is. */
export const ERASED: unique symbol = Symbol('erased');

/**
 * A PHI value the database holds in plaintext (an encounter's date, which it must order by; a kind
 * written before kinds were encrypted): the same decision, limits and audit as readPhi, with
 * nothing to decrypt.
 */
export function readPlainPhi(scope: RequestScope, field: PhiField, row: PhiRowFacts, value: string | null | undefined | typeof ERASED): string | null {
  const verdict = admit(scope, field, row);
  try {
    if (value === undefined) throw notFetched();
    if (value === ERASED) throw new PhigateError('KEY_UNAVAILABLE', "The key of this patient's data was destroyed.", { reason: 'shredded' });
    const event = eventOf(field, row, verdict, shownAs(verdict));
    if (value === null) {
      scope.audit.add(event);
      return null;
    }
    return shown(scope, field, verdict, event, value);
  } catch (e) {
    return unshown(scope, field, row, verdict, e);
  }
}
