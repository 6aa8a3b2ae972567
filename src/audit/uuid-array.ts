/**
 * A uuid[] parameter in PostgreSQL's binary array format (array_send's layout), which pg sends
 * as a binary parameter because it is a Buffer. PostgreSQL then copies each element's 16 bytes
 * (uuid_recv) where the text form made it scan the literal twice and parse every uuid with 16
 * strtoul calls (uuid_in): the largest part of a page batch's parameters in the writer's profile.
 */

const UUID_OID = 2950;
const HEADER = 20;
const ELEMENT = 20;

const HEX = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) HEX[0x30 + i] = i;
for (let i = 0; i < 6; i++) {
  HEX[0x41 + i] = 10 + i;
  HEX[0x61 + i] = 10 + i;
}

/** Where each byte's two hex digits start in 8-4-4-4-12 form. */
const PAIRS = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/**
 * Writes `id`'s 16 bytes at `at`, or returns false when it is not 8-4-4-4-12 hex digits (either
 * case): isUuid's rule (src/audit/insert.ts), checked in the same pass.
 */
function writeUuid(out: Uint8Array, at: number, id: string): boolean {
  if (id.length !== 36 || id.charCodeAt(8) !== 0x2d || id.charCodeAt(13) !== 0x2d || id.charCodeAt(18) !== 0x2d || id.charCodeAt(23) !== 0x2d) {
    return false;
  }
  for (let b = 0; b < 16; b++) {
    const i = PAIRS[b]!;
    const c = id.charCodeAt(i);
    const d = id.charCodeAt(i + 1);
    // Past 0x7f is never a digit; below, the table says.
    const h = c < 128 ? HEX[c]! : -1;
    const l = d < 128 ? HEX[d]! : -1;
    if ((h | l) < 0) return false;
    out[at + b] = (h << 4) | l;
  }
  return true;
}

/** One uuid in binary form (uuid_send's 16 bytes); throws, naming no value, when `id` is not a uuid. */
export function binaryUuid(id: string): Buffer {
  const out = Buffer.alloc(16);
  if (!writeUuid(out, 0, id)) throw new Error('audit event id is not a uuid');
  return out;
}

/** A 4-byte big-endian integer at `at`. */
function int32(out: Buffer, at: number, v: number): void {
  out[at] = v >>> 24;
  out[at + 1] = (v >>> 16) & 0xff;
  out[at + 2] = (v >>> 8) & 0xff;
  out[at + 3] = v & 0xff;
}

/** Whether the 16 bytes at `at` are `bytes`. */
function sameBytes(out: Uint8Array, at: number, bytes: Uint8Array): boolean {
  for (let b = 0; b < 16; b++) if (out[at + b] !== bytes[b]) return false;
  return true;
}

/**
 * `ids` as a one-dimensional uuid[] from 1 in binary form. A null element is NULL, or `nullAs`
 * when given (an array without NULLs is one PostgreSQL subscripts and slices without walking it);
 * then the answer is null when an element is `nullAs` itself, which could not stand for NULL.
 * Throws, naming no value, when an element is not a uuid. Consecutive equal ids (an encounter's
 * fields) are checked and parsed once. Bytes are stored one by one into a zeroed buffer: Buffer's
 * writeInt32BE and copy cost more than the few stores they make.
 */
export function binaryUuidArray(ids: readonly (string | null)[]): Buffer;
export function binaryUuidArray(ids: readonly (string | null)[], nullAs: string): Buffer | null;
export function binaryUuidArray(ids: readonly (string | null)[], nullAs: string | null = null): Buffer | null {
  const n = ids.length;
  let nulls = 0;
  if (nullAs === null) for (let i = 0; i < n; i++) if (ids[i] === null) nulls++;
  // An empty array has no dimensions: ndim 0, then only the flags and element type.
  const out = Buffer.alloc(n === 0 ? 12 : HEADER + ELEMENT * n - 16 * nulls);
  int32(out, 0, n === 0 ? 0 : 1);
  int32(out, 4, nulls > 0 ? 1 : 0);
  int32(out, 8, UUID_OID);
  if (n === 0) return out;
  int32(out, 12, n);
  int32(out, 16, 1);
  const absent = new Uint8Array(16);
  if (nullAs !== null && !writeUuid(absent, 0, nullAs)) throw new Error('audit event id is not a uuid');
  // The nil uuid (insert.ts's usual stand-in) is what the zeroed buffer already holds.
  const absentIsNil = absent.every((b) => b === 0);
  let at = HEADER;
  let previous: string | null = null;
  let previousAt = 0;
  for (let i = 0; i < n; i++) {
    const id = ids[i]!;
    if (id === null && nullAs === null) {
      int32(out, at, -1);
      at += 4;
      continue;
    }
    out[at + 3] = 16;
    at += 4;
    if (id === null) {
      if (!absentIsNil) for (let b = 0; b < 16; b++) out[at + b] = absent[b]!;
    } else if (id === previous) {
      for (let b = 0; b < 16; b++) out[at + b] = out[previousAt + b]!;
    } else {
      if (!writeUuid(out, at, id)) throw new Error('audit event id is not a uuid');
      if (nullAs !== null && sameBytes(out, at, absent)) return null;
      previous = id;
      previousAt = at;
    }
    at += 16;
  }
  return out;
}
