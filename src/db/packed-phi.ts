import { PhigateError } from '../errors.ts';

const BYTEA_OID = 17;
// array_send's header for one dimension: ndim, has-nulls flag, element type, then the dimension's
// length and lower bound, each an int32 (PostgreSQL's src/backend/utils/adt/arrayfuncs.c).
const HEADER_BYTES = 20;
const NULL_LENGTH = -1;

const malformed = (reason: string) => new PhigateError('INTERNAL', 'The request could not be completed.', { reason: `packed_phi_${reason}` });

/**
 * A row's ciphertext columns as one value named `phi`: `array_send(ARRAY[c1, ..., cN])`, the
 * bytea array's binary form, each element its int32 length (-1 for NULL) and its bytes; a lone
 * column as itself. Each value sent as text costs this side a string and a Buffer: packed, a row
 * costs one of each instead of one per column, which saves the gateway more than the packing
 * costs PostgreSQL (~2 K instructions a patient row; bench/README.md, branch pagebin). A lone
 * column would only pay the packing.
 */
export function packPhi(columns: readonly string[]): string {
  if (columns.length === 0) throw new TypeError('packPhi: no columns');
  return columns.length === 1 ? `${columns[0]} AS phi` : `array_send(ARRAY[${columns.join(', ')}]) AS phi`;
}

/**
 * The `count` columns packPhi packed, in order, each a view of `packed`; anything but exactly
 * `count` bytea elements in one dimension is refused rather than read as ciphertext.
 */
export function unpackPhi(packed: Buffer | null, count: number): (Buffer | null)[] {
  if (count === 1) return [packed];
  checkPacked(packed, count);
  const out = new Array<Buffer | null>(count);
  for (let i = 0; i < count; i++) out[i] = packedColumn(packed!, i);
  return out;
}

/**
 * Refuses, as unpackPhi does, anything but exactly `count` (more than one) bytea elements in one
 * dimension whose lengths fill `packed` exactly; makes nothing. A row that keeps its packed value
 * checks it once, then reads each column with packedColumn when it is asked for.
 */
export function checkPacked(packed: Buffer | null, count: number): asserts packed is Buffer {
  if (packed === null) throw malformed('null');
  if (packed.length < HEADER_BYTES) throw malformed('short');
  if (packed.readInt32BE(0) !== 1 || packed.readUInt32BE(8) !== BYTEA_OID || packed.readInt32BE(12) !== count || packed.readInt32BE(16) !== 1) {
    throw malformed('header');
  }
  let at = HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (at + 4 > packed.length) throw malformed('short');
    const length = packed.readInt32BE(at);
    at += 4;
    if (length === NULL_LENGTH) continue;
    if (length < 0 || at + length > packed.length) throw malformed('length');
    at += length;
  }
  if (at !== packed.length) throw malformed('trailing');
}

/** Column `i` of a packed value checkPacked accepted: a view of it, or null. */
export function packedColumn(packed: Buffer, i: number): Buffer | null {
  let at = HEADER_BYTES;
  for (let j = 0; j < i; j++) {
    const length = packed.readInt32BE(at);
    at += 4 + (length === NULL_LENGTH ? 0 : length);
  }
  const length = packed.readInt32BE(at);
  return length === NULL_LENGTH ? null : packed.subarray(at + 4, at + 4 + length);
}

// A two-dimensional array's header: the one-dimension header's fields, then the second dimension's
// length and lower bound; an empty array (no dimensions) sends ndim, flags and element type only.
const ROWS_HEADER_BYTES = 28;
const EMPTY_BYTES = 12;

/**
 * Several rows of `width` bytea values each, sent as one value: `array_send` of a two-dimensional
 * bytea array (ARRAY(SELECT ARRAY[c1, ..., cN] ...)), or of an empty one when there are no rows.
 * Each value a view of `packed`; anything else is refused rather than read as ciphertext.
 */
export function unpackPhiRows(packed: Buffer | null, width: number): (Buffer | null)[][] {
  if (packed === null) throw malformed('null');
  if (packed.length < EMPTY_BYTES || packed.readUInt32BE(8) !== BYTEA_OID) throw malformed('header');
  const dimensions = packed.readInt32BE(0);
  if (dimensions === 0) {
    if (packed.length !== EMPTY_BYTES) throw malformed('trailing');
    return [];
  }
  if (dimensions !== 2 || packed.length < ROWS_HEADER_BYTES) throw malformed('header');
  const count = packed.readInt32BE(12);
  if (count < 1 || packed.readInt32BE(16) !== 1 || packed.readInt32BE(20) !== width || packed.readInt32BE(24) !== 1) throw malformed('header');
  const rows = new Array<(Buffer | null)[]>(count);
  let at = ROWS_HEADER_BYTES;
  for (let r = 0; r < count; r++) {
    const row = new Array<Buffer | null>(width);
    for (let i = 0; i < width; i++) {
      if (at + 4 > packed.length) throw malformed('short');
      const length = packed.readInt32BE(at);
      at += 4;
      if (length === NULL_LENGTH) {
        row[i] = null;
      } else {
        if (length < 0 || at + length > packed.length) throw malformed('length');
        row[i] = packed.subarray(at, at + length);
        at += length;
      }
    }
    rows[r] = row;
  }
  if (at !== packed.length) throw malformed('trailing');
  return rows;
}

/** A uuid as `uuid_send` sends it (16 bytes), in the text form PostgreSQL prints it in. */
export function uuidOfSent(sent: Buffer | null): string {
  if (sent === null || sent.length !== 16) throw malformed('uuid');
  const hex = sent.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
