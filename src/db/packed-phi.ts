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
 * column would only pay the packing. The value travels as base64 (fromPgBase64,
 * src/db/pg-base64.ts), not bytea's hex: Node decodes it for a seventh of the instructions its hex
 * takes, which saves the gateway about twice what PostgreSQL's base64 costs over its hex
 * (bench/README.md, branch b64).
 */
export function packPhi(columns: readonly string[]): string {
  if (columns.length === 0) throw new TypeError('packPhi: no columns');
  return `${asBase64(columns.length === 1 ? columns[0]! : `array_send(ARRAY[${columns.join(', ')}])`)} AS phi`;
}

/** A bytea expression as the text fromPgBase64 reads. */
export const asBase64 = (bytes: string): string => `encode(${bytes}, 'base64')`;

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
  checkElements(packed, HEADER_BYTES, count);
}

/** Refuses unless exactly `count` elements (int32 length, -1 for NULL, then the bytes) fill `packed` from `at` on. */
function checkElements(packed: Buffer, at: number, count: number): void {
  for (let n = count; n > 0; n--) {
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
 * The number of rows of a two-dimensional packed value: `array_send` of a two-dimensional bytea
 * array (ARRAY(SELECT ARRAY[c1, ..., cN] ...)) of rows of `width` values, or of an empty one when
 * there are no rows. Anything else is refused rather than read as ciphertext.
 */
function checkPackedRows(packed: Buffer | null, width: number): number {
  if (packed === null) throw malformed('null');
  if (packed.length < EMPTY_BYTES || packed.readUInt32BE(8) !== BYTEA_OID) throw malformed('header');
  const dimensions = packed.readInt32BE(0);
  if (dimensions === 0) {
    if (packed.length !== EMPTY_BYTES) throw malformed('trailing');
    return 0;
  }
  if (dimensions !== 2 || packed.length < ROWS_HEADER_BYTES) throw malformed('header');
  const count = packed.readInt32BE(12);
  if (count < 1 || packed.readInt32BE(16) !== 1 || packed.readInt32BE(20) !== width || packed.readInt32BE(24) !== 1) throw malformed('header');
  checkElements(packed, ROWS_HEADER_BYTES, count * width);
  return count;
}

/**
 * The values of a two-dimensional packed value, checked whole (checkPackedRows), then read
 * one after another, row by row: each as the text, uuid or view its reader asks for, so that a
 * value read as text or as a uuid costs its string alone, not a Buffer view and a row array
 * besides (a page's encounters: ~1,600 views and 400 arrays, bench/README.md, branch gw24).
 */
export class PackedRows {
  readonly count: number;
  readonly #packed: Buffer;
  #at = ROWS_HEADER_BYTES;
  #length = 0;
  constructor(packed: Buffer | null, width: number) {
    this.count = checkPackedRows(packed, width);
    this.#packed = packed!;
  }
  /** Where the next value's bytes start, and moves past it; its length is left in `#length`. */
  #next(): number {
    const packed = this.#packed;
    // The constructor checked every length against the value's end, and the reader asks for at
    // most count x width values: this can only be passed the end by a reader's bug.
    if (this.#at + 4 > packed.length) throw malformed('short');
    const length = packed.readInt32BE(this.#at);
    const start = this.#at + 4;
    this.#length = length;
    this.#at = length === NULL_LENGTH ? start : start + length;
    return start;
  }
  /** The next value as a view of the packed value, or null. */
  nextView(): Buffer | null {
    const start = this.#next();
    return this.#length === NULL_LENGTH ? null : this.#packed.subarray(start, start + this.#length);
  }
  /** The next value as UTF-8 text (textsend's bytes), or null. */
  nextText(): string | null {
    const start = this.#next();
    return this.#length === NULL_LENGTH ? null : this.#packed.toString('utf8', start, start + this.#length);
  }
  /** The next value as a uuid (uuid_send's 16 bytes) in PostgreSQL's text form; refused when NULL or of another length. */
  nextUuid(): string {
    const start = this.#next();
    if (this.#length !== 16) throw malformed('uuid');
    return uuidAt(this.#packed, start);
  }
}

// Lower-case hex of each byte, and a scratch the uuid's 36 characters are written to: read out as
// one flat string of 36 bytes, where hex, five slices and a template made a cons string of ~250
// bytes, held as the encounter's id and row id until the page's audit commit.
const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, '0'));
const HEX_HIGH = Uint8Array.from(HEX, (h) => h.charCodeAt(0));
const HEX_LOW = Uint8Array.from(HEX, (h) => h.charCodeAt(1));
const UUID_TEXT = Buffer.alloc(36, 0x2d);
// Where each of the 16 bytes goes in the text form 8-4-4-4-12 (the dashes stay where they were put).
const UUID_AT = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

function uuidAt(bytes: Buffer, start: number): string {
  for (let i = 0; i < 16; i++) {
    const b = bytes[start + i]!;
    const at = UUID_AT[i]!;
    UUID_TEXT[at] = HEX_HIGH[b]!;
    UUID_TEXT[at + 1] = HEX_LOW[b]!;
  }
  return UUID_TEXT.toString('latin1', 0, 36);
}
