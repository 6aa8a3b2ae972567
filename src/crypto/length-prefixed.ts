import { PhigateError } from '../errors.ts';

// In unicode-aware mode a paired surrogate is one code point, so this only matches lone halves.
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Encodes a list of strings/bytes so that no two different lists share an encoding: each part is
 * its byte length (uint32 BE) followed by its bytes. Plain concatenation would let
 * ('ab', 'c') and ('a', 'bc') authenticate as the same thing.
 */
export function lengthPrefixed(parts: readonly (string | Uint8Array)[]): Buffer {
  const chunks: Buffer[] = [];
  for (const part of parts) {
    // UTF-8 encoding turns every lone surrogate into U+FFFD, which would make distinct
    // identifiers collide; refuse them rather than bind the wrong thing.
    if (typeof part === 'string' && LONE_SURROGATE.test(part)) {
      throw new PhigateError('BAD_USER_INPUT', 'identifier is not well-formed unicode text', { reason: 'malformed_identifier' });
    }
    const bytes = typeof part === 'string' ? Buffer.from(part, 'utf8') : Buffer.from(part);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length);
    chunks.push(length, bytes);
  }
  return Buffer.concat(chunks);
}
