import { PhigateError } from '../errors.ts';

const EQUALS = 0x3d;
const NEWLINE = 0x0a;
// PostgreSQL's base64 (src/backend/utils/adt/encode.c): a newline after every 76 characters of
// full groups, none after a padded last group.
const LINE = 76;
const GROUPS_PER_LINE = LINE / 4;

// Each character's 6 bits, for the last one before the padding, whose bits past the bytes must be 0.
const SEXTET = new Int8Array(128).fill(-1);
for (const [i, c] of [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'].entries()) SEXTET[c.charCodeAt(0)] = i;

const malformed = () => new PhigateError('INTERNAL', 'The request could not be completed.', { reason: 'packed_phi_base64' });

/** The length of PostgreSQL's `encode(bytes, 'base64')` of `n` bytes. */
export const pgBase64Length = (n: number): number => 4 * Math.ceil(n / 3) + Math.floor(Math.floor(n / 3) / GROUPS_PER_LINE);

/**
 * The bytes of `encode(bytes, 'base64')` as PostgreSQL sends it; NULL as null. Node's decoder
 * passes over what is not base64 rather than refusing it, so the text is held to PostgreSQL's
 * exact layout instead: its length for the bytes decoded, its padding, a newline at every line's
 * end. n bytes take at least 4n/3 characters of the alphabet, which with the padding are all the
 * characters left beside the newlines: a character passed over, or an `=` stopped at, leaves a
 * length or padding that does not match, and the value is refused. So are base64url's `-` and
 * `_`, which Node takes for `+` and `/`, and a last group whose
 * unused bits are not 0, which PostgreSQL never sends and Node would decode as if they were.
 */
export function fromPgBase64(text: string | null): Buffer | null {
  if (text === null) return null;
  const bytes = Buffer.from(text, 'base64');
  const n = bytes.length;
  const end = text.length;
  if (end !== pgBase64Length(n)) throw malformed();
  const pad = (3 - (n % 3)) % 3;
  if ((pad > 0) !== (text.charCodeAt(end - 1) === EQUALS) || (pad === 2) !== (text.charCodeAt(end - 2) === EQUALS)) throw malformed();
  // One text per value: a last character with bits set past the bytes decodes as if they were 0.
  if (pad > 0 && (SEXTET[text.charCodeAt(end - 1 - pad)]! & (pad === 1 ? 0x03 : 0x0f)) !== 0) throw malformed();
  for (let at = LINE; at < end; at += LINE + 1) if (text.charCodeAt(at) !== NEWLINE) throw malformed();
  // Node reads base64url's two characters as `+` and `/`: PostgreSQL sends neither.
  if (text.includes('-') || text.includes('_')) throw malformed();
  return bytes;
}
