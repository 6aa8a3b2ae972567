import { randomBytes } from 'node:crypto';
import { PhigateError } from '../errors.ts';
import { openText, sealGcm } from './aead.ts';
import { lengthPrefixed, lengthPrefixedSize, writeLengthPrefixed } from './length-prefixed.ts';
import { isZeroFilled } from './zero-filled.ts';

/** A clinic's unwrapped data key. `key` is 32 bytes and must never leave the process. */
export interface DataKey {
  /** The clinic id the key belongs to. */
  readonly scope: string;
  readonly version: number;
  readonly key: Buffer;
}

/**
 * One patient's unwrapped key (`key`), wrapped in the database by the clinic data key that
 * `scope` and `version` name. Values sealed under it carry both versions in their header, so
 * destroying the patient's wrapped keys leaves every one of them unreadable (crypto-shredding).
 */
export interface PatientKey extends DataKey {
  readonly patientId: string;
  readonly patientVersion: number;
}

export const isPatientKey = (key: DataKey): key is PatientKey => (key as PatientKey).patientId !== undefined;

/** Which keys a ciphertext needs: the clinic key version and, for per-patient values, the patient key version. */
export interface SealedUnder {
  readonly version: number;
  readonly patientVersion: number | null;
}

/** Where a ciphertext lives; bound into it so it cannot be moved elsewhere and still open. */
export interface FieldAad {
  readonly table: string;
  readonly column: string;
  readonly rowId: string;
}

const FORMAT_V1 = 0x01;
const FORMAT_V2 = 0x02;
/** Written over a shredded patient's live values: says why there is nothing, and opens nothing. */
const FORMAT_SHREDDED = 0x00;
const HEADER_BYTES = 1 + 4;
const HEADER_V2_BYTES = 1 + 4 + 4;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const MAX_KEY_VERSION = 0xffff_ffff;
const AAD_LABEL = 'phigate/field/v1';
const AAD_LABEL_V2 = 'phigate/field/v2';

/** The value a shredded patient's columns hold: any read of it is KEY_UNAVAILABLE, reason `shredded`. */
export const SHREDDED_VALUE: Buffer = Buffer.from([FORMAT_SHREDDED, ...Buffer.from('shredded', 'latin1')]);
// Lone surrogates would be silently replaced by U+FFFD and the value would not round-trip.
const LONE_SURROGATE = /\p{Cs}/u;

function keyUnavailable(reason: 'decrypt_failed' | 'malformed_ciphertext' | 'invalid_key' | 'shredded', cause?: unknown): PhigateError {
  const message =
    reason === 'malformed_ciphertext' ? 'encrypted field is malformed'
    : reason === 'invalid_key' ? 'data key is not usable'
    : reason === 'shredded' ? "the key of this patient's data was destroyed"
    : 'encrypted field could not be decrypted';
  return new PhigateError('KEY_UNAVAILABLE', message, { reason, cause });
}

// A cached key is zero-filled when the cache evicts it: a caller still holding it must fail, never
// seal under (or appear to open with) thirty-two zero bytes.
// openText refuses a zero key itself, so opening does not compare the key here once per value.
function checkKey(key: DataKey, forSealing: boolean): void {
  if (key.key.length !== 32 || !Number.isInteger(key.version) || key.version < 1 || key.version > MAX_KEY_VERSION || (forSealing && isZeroFilled(key.key))) {
    throw keyUnavailable('invalid_key');
  }
  if (isPatientKey(key) && (!Number.isInteger(key.patientVersion) || key.patientVersion < 1 || key.patientVersion > MAX_KEY_VERSION)) {
    throw keyUnavailable('invalid_key');
  }
}

// The header goes into the AAD as well as the explicit fields, so editing any header byte
// breaks the tag even if a later format were to parse the header differently.
//   AAD = lengthPrefixed([AAD_LABEL, header, table, column, rowId, scope, version(, patientId, patientVersion)])
// The parts before the row id depend only on the key versions and the column, those after it only
// on the key: both are encoded once and the AAD is written into one reused buffer (setAAD consumes
// it before returning). With a key per patient, parts per (key, column) were allocated for nearly
// every value of a page and kept while the key stayed cached.
interface AfterParts {
  readonly scope: string;
  readonly version: number;
  readonly patientId: string | null;
  readonly patientVersion: number | null;
  readonly bytes: Buffer;
}
// table -> column -> clinic key version -> patient key version (0: a clinic key) -> the parts before the row id.
const beforeParts = new Map<string, Map<string, Map<number, Map<number, Buffer>>>>();
// Keyed by the key's bytes (the keyring hands out a new DataKey object per call but the same
// cached Buffer, and an entry goes when the key leaves the keyring's cache). The parts remember
// the scope and versions they encode: the same bytes under another scope get parts of their own.
const afterParts = new WeakMap<Buffer, AfterParts>();
let scratch = Buffer.alloc(512);

/**
 * One column of one table as its values' AAD names it, made once per column (aadColumn): it keeps
 * the parts before the row id for the key versions its last value was sealed under, so that the
 * values of a page, nearly all under the same versions, skip the four lookups of beforeParts.
 */
export interface AadColumn {
  readonly table: string;
  readonly column: string;
  /** The key versions `before` was encoded for (patient version 0: a clinic key). */
  version: number;
  patientVersion: number;
  before: Buffer | null;
}

const aadColumns = new Map<string, Map<string, AadColumn>>();

/** The AadColumn of `table`.`column`: the same object for every call with the same names. */
export function aadColumn(table: string, column: string): AadColumn {
  let byColumn = aadColumns.get(table);
  if (byColumn === undefined) aadColumns.set(table, (byColumn = new Map()));
  let found = byColumn.get(column);
  if (found === undefined) byColumn.set(column, (found = { table, column, version: 0, patientVersion: -1, before: null }));
  return found;
}

function headerFor(key: DataKey): Buffer {
  if (isPatientKey(key)) {
    const header = Buffer.alloc(HEADER_V2_BYTES);
    header.writeUInt8(FORMAT_V2, 0);
    header.writeUInt32BE(key.version, 1);
    header.writeUInt32BE(key.patientVersion, 5);
    return header;
  }
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt8(FORMAT_V1, 0);
  header.writeUInt32BE(key.version, 1);
  return header;
}

function beforeFor(key: DataKey, column: AadColumn): Buffer {
  const patientVersion = isPatientKey(key) ? key.patientVersion : 0;
  if (column.before !== null && column.version === key.version && column.patientVersion === patientVersion) return column.before;
  let byColumn = beforeParts.get(column.table);
  if (!byColumn) beforeParts.set(column.table, (byColumn = new Map()));
  let byVersion = byColumn.get(column.column);
  if (!byVersion) byColumn.set(column.column, (byVersion = new Map()));
  let byPatientVersion = byVersion.get(key.version);
  if (!byPatientVersion) byVersion.set(key.version, (byPatientVersion = new Map()));
  let before = byPatientVersion.get(patientVersion);
  if (!before) {
    before = lengthPrefixed([patientVersion === 0 ? AAD_LABEL : AAD_LABEL_V2, headerFor(key), column.table, column.column]);
    byPatientVersion.set(patientVersion, before);
  }
  column.version = key.version;
  column.patientVersion = patientVersion;
  column.before = before;
  return before;
}

// The DataKey the last value's parts after the row id were found for: a row's key is one cached
// object (the keyring's entry, held by the row), its scope and versions read-only, so the next
// value under the same object skips the WeakMap and the four comparisons. The one object kept here
// outlives its cache entry at most until the next value; the keyring zero-fills its bytes on eviction.
let lastKey: DataKey | null = null;
let lastAfter: Buffer | null = null;

function afterFor(key: DataKey): Buffer {
  if (key === lastKey) return lastAfter!;
  const patient = isPatientKey(key) ? key : null;
  let parts = afterParts.get(key.key);
  if (
    !parts ||
    parts.scope !== key.scope ||
    parts.version !== key.version ||
    parts.patientId !== (patient?.patientId ?? null) ||
    parts.patientVersion !== (patient?.patientVersion ?? null)
  ) {
    parts = {
      scope: key.scope,
      version: key.version,
      patientId: patient?.patientId ?? null,
      patientVersion: patient?.patientVersion ?? null,
      bytes: patient
        ? lengthPrefixed([key.scope, String(key.version), patient.patientId, String(patient.patientVersion)])
        : lengthPrefixed([key.scope, String(key.version)]),
    };
    afterParts.set(key.key, parts);
  }
  lastKey = key;
  lastAfter = parts.bytes;
  return parts.bytes;
}

// What the scratch holds after the parts before the row id, as the last AAD written left it: the
// row id (length-prefixed) and the parts after it, at [heldAt, heldEnd). A row's values (a
// patient's eight fields) share both and differ in the column, so the next value of the same row
// and key moves those bytes to follow its own parts instead of writing them again.
let heldRowId: string | null = null;
let heldAfter: Buffer | null = null;
let heldAt = 0;
let heldEnd = 0;

/** Writes the AAD of one value to the start of `scratch` (which the next call overwrites): its length. */
function aadFor(key: DataKey, column: AadColumn, rowId: string): number {
  const before = beforeFor(key, column);
  const after = afterFor(key);
  const at = before.length;
  if (rowId === heldRowId && after === heldAfter) {
    const end = at + heldEnd - heldAt;
    if (scratch.length >= end) {
      if (at !== heldAt) scratch.copyWithin(at, heldAt, heldEnd);
      scratch.set(before, 0);
      heldAt = at;
      heldEnd = end;
      return end;
    }
  }
  // Row ids are UUIDs: ASCII, written here a byte a character. Buffer's UTF-8 path costs a
  // byte-length call, a write call and the lone-surrogate check per value, which ASCII cannot hold.
  const asciiSize = at + 4 + rowId.length + after.length;
  if (scratch.length < asciiSize) scratch = Buffer.alloc(asciiSize * 2);
  const idAt = at + 4;
  for (let i = 0; i < rowId.length; i++) {
    const c = rowId.charCodeAt(i);
    if (c > 0x7f) return aadOfAnyRowId(before, rowId, after);
    scratch[idAt + i] = c;
  }
  scratch.set(before, 0);
  scratch.writeUInt32BE(rowId.length, at);
  scratch.set(after, idAt + rowId.length);
  heldRowId = rowId;
  heldAfter = after;
  heldAt = at;
  heldEnd = asciiSize;
  return asciiSize;
}

function aadOfAnyRowId(before: Buffer, rowId: string, after: Buffer): number {
  heldRowId = null;
  const size = before.length + lengthPrefixedSize(rowId) + after.length;
  if (scratch.length < size) scratch = Buffer.alloc(size * 2);
  scratch.set(before, 0);
  const at = writeLengthPrefixed(scratch, before.length, rowId);
  scratch.set(after, at);
  return size;
}

/**
 * Encrypts one field value with AES-256-GCM under `key`, bound to its table, column, row and clinic
 * key version, and for a patient key also to the patient and the patient key version.
 */
export function sealField(key: DataKey, aad: FieldAad, plaintext: string): Buffer {
  checkKey(key, true);
  if (LONE_SURROGATE.test(plaintext)) {
    throw new PhigateError('BAD_USER_INPUT', 'value is not well-formed unicode text', { reason: 'malformed_text' });
  }
  const header = headerFor(key);
  const nonce = randomBytes(NONCE_BYTES);
  // A short string's bytes land in Node's shared allocation pool, which later Buffers reuse
  // without clearing: wiped once sealed, so the value's plaintext does not outlive the call there.
  const plain = Buffer.from(plaintext, 'utf8');
  try {
    const aadLength = aadFor(key, aadColumn(aad.table, aad.column), aad.rowId);
    return Buffer.concat([header, nonce, sealGcm(key.key, nonce, scratch.subarray(0, aadLength), plain)]);
  } finally {
    plain.fill(0);
  }
}

/**
 * The length of a well-formed ciphertext's header (its format's), so that its key versions can be
 * read at 1 and, past 5 bytes, at 5; throws KEY_UNAVAILABLE (shredded, malformed) as sealedUnder does.
 */
export function headerBytesOf(ciphertext: Buffer): number {
  const format = ciphertext.length > 0 ? ciphertext[0]! : -1;
  if (format === FORMAT_SHREDDED && ciphertext.equals(SHREDDED_VALUE)) throw keyUnavailable('shredded');
  const headerBytes = format === FORMAT_V2 ? HEADER_V2_BYTES : HEADER_BYTES;
  if ((format !== FORMAT_V1 && format !== FORMAT_V2) || ciphertext.length < headerBytes + NONCE_BYTES + TAG_BYTES) {
    throw keyUnavailable('malformed_ciphertext');
  }
  if (ciphertext.readUInt32BE(1) < 1 || (headerBytes === HEADER_V2_BYTES && ciphertext.readUInt32BE(5) === 0)) throw keyUnavailable('malformed_ciphertext');
  return headerBytes;
}

/** The clinic key version of a ciphertext headerBytesOf accepted. */
export const clinicVersionOf = (ciphertext: Buffer): number => ciphertext.readUInt32BE(1);

/** The patient key version of a ciphertext headerBytesOf accepted, null for one sealed under a clinic key. */
export const patientVersionOf = (ciphertext: Buffer, headerBytes: number): number | null => (headerBytes === HEADER_V2_BYTES ? ciphertext.readUInt32BE(5) : null);

/** The keys a ciphertext was sealed under, so the caller can fetch them. */
export function sealedUnder(ciphertext: Buffer): SealedUnder {
  const headerBytes = headerBytesOf(ciphertext);
  return { version: clinicVersionOf(ciphertext), patientVersion: patientVersionOf(ciphertext, headerBytes) };
}

/** The clinic key version a ciphertext was sealed under. */
export function keyVersionOf(ciphertext: Buffer): number {
  return sealedUnder(ciphertext).version;
}

/**
 * Decrypts a value sealed by `sealField`; any tampering, or a different place or key, fails.
 * `under` is `sealedUnder(ciphertext)` when the caller has read it already to fetch the key.
 */
export function openField(key: DataKey, aad: FieldAad, ciphertext: Buffer, under: SealedUnder = sealedUnder(ciphertext)): string {
  return openAt(key, aadColumn(aad.table, aad.column), aad.rowId, ciphertext, under.version, under.patientVersion);
}

/**
 * openField for a value of `column` in row `rowId`, its versions read by the caller (headerBytesOf,
 * clinicVersionOf, patientVersionOf): a page's values make no AAD or versions object each.
 */
export function openAt(key: DataKey, column: AadColumn, rowId: string, ciphertext: Buffer, version: number, patientVersion: number | null): string {
  checkKey(key, false);
  // The AAD would catch these too; checking first keeps the failure cheap and explicit.
  if (version !== key.version || patientVersion !== (isPatientKey(key) ? key.patientVersion : null)) throw keyUnavailable('decrypt_failed');
  let plain: string | null;
  try {
    // The format byte was checked and the versions equal the key's: the header in the AAD is the
    // ciphertext's own. One call opens, checks and decodes the value, reading the IV, body and tag
    // in place and the AAD from the scratch.
    const aadLength = aadFor(key, column, rowId);
    plain = openText(key.key, ciphertext, patientVersion === null ? HEADER_BYTES : HEADER_V2_BYTES, scratch, aadLength);
  } catch (e) {
    if (e instanceof PhigateError) throw e;
    throw keyUnavailable('decrypt_failed', e);
  }
  if (plain !== null) return plain;
  // A key the keyring wiped while this caller held it opens nothing: said as such.
  throw keyUnavailable(isZeroFilled(key.key) ? 'invalid_key' : 'decrypt_failed');
}
