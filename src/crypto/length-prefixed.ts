import { PhigateError } from '../errors.ts';

// In unicode-aware mode a paired surrogate is one code point, so this only matches lone halves.
const LONE_SURROGATE = /\p{Cs}/u;

// UTF-8 encoding turns every lone surrogate into U+FFFD, which would make distinct identifiers
// collide; refuse them rather than bind the wrong thing.
function checked(part: string): string {
  if (LONE_SURROGATE.test(part)) {
    throw new PhigateError('BAD_USER_INPUT', 'identifier is not well-formed unicode text', { reason: 'malformed_identifier' });
  }
  return part;
}

/** Bytes `part` takes once length-prefixed (checked when written, not here: once per value is enough). */
export function lengthPrefixedSize(part: string | Uint8Array): number {
  return 4 + (typeof part === 'string' ? Buffer.byteLength(part, 'utf8') : part.byteLength);
}

/**
 * Writes one length-prefixed part at `at` (room for lengthPrefixedSize(part) bytes); returns the
 * next offset. Refuses a lone surrogate before writing anything of that part.
 */
export function writeLengthPrefixed(out: Buffer, at: number, part: string | Uint8Array): number {
  let length: number;
  if (typeof part === 'string') {
    length = out.write(checked(part), at + 4, 'utf8');
  } else {
    out.set(part, at + 4);
    length = part.byteLength;
  }
  out.writeUInt32BE(length, at);
  return at + 4 + length;
}

/**
 * Encodes a list of strings/bytes so that no two different lists share an encoding: each part is
 * its byte length (uint32 BE) followed by its bytes. Plain concatenation would let
 * ('ab', 'c') and ('a', 'bc') authenticate as the same thing.
 */
export function lengthPrefixed(parts: readonly (string | Uint8Array)[]): Buffer {
  let total = 0;
  for (const part of parts) total += lengthPrefixedSize(part);
  const out = Buffer.alloc(total);
  let at = 0;
  for (const part of parts) at = writeLengthPrefixed(out, at, part);
  return out;
}
