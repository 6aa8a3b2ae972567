import { PhigateError } from '../errors.ts';

// In unicode-aware mode a paired surrogate is one code point, so this only matches lone halves.
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Encodes a list of strings/bytes so that no two different lists share an encoding: each part is
 * its byte length (uint32 BE) followed by its bytes. Plain concatenation would let
 * ('ab', 'c') and ('a', 'bc') authenticate as the same thing.
 */
export function lengthPrefixed(parts: readonly (string | Uint8Array)[]): Buffer {
  // Built once per decrypted field: measure, then write into one buffer.
  let total = 0;
  for (const part of parts) {
    // UTF-8 encoding turns every lone surrogate into U+FFFD, which would make distinct
    // identifiers collide; refuse them rather than bind the wrong thing.
    if (typeof part === 'string' && LONE_SURROGATE.test(part)) {
      throw new PhigateError('BAD_USER_INPUT', 'identifier is not well-formed unicode text', { reason: 'malformed_identifier' });
    }
    total += 4 + (typeof part === 'string' ? Buffer.byteLength(part, 'utf8') : part.byteLength);
  }
  const out = Buffer.alloc(total);
  let at = 0;
  for (const part of parts) {
    let length: number;
    if (typeof part === 'string') {
      length = out.write(part, at + 4, 'utf8');
    } else {
      out.set(part, at + 4);
      length = part.byteLength;
    }
    out.writeUInt32BE(length, at);
    at += 4 + length;
  }
  return out;
}
