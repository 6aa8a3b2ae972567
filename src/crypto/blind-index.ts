import { createHmac, hkdfSync } from 'node:crypto';
import { PhigateError } from '../errors.ts';
import { lengthPrefixed } from './length-prefixed.ts';
import { isZeroFilled } from './zero-filled.ts';

/** The columns searchable by exact match; each gets its own key so indexes cannot be correlated across columns. */
export type BlindIndexColumn = 'patients.ssn' | 'patients.mrn';

const HKDF_SALT = Buffer.from('phigate/blind-index/v1', 'utf8');

/**
 * NFKC folds compatibility forms (fullwidth digits and separators, no-break spaces) onto ASCII.
 * Digits of other scripts (Arabic-Indic, Devanagari...) survive NFKC and are then refused, so a
 * lookalike never silently matches a stored number.
 */
export function normaliseSsn(input: string): string {
  const digits = input.normalize('NFKC').replace(/[\s.-]/g, '');
  if (!/^[0-9]{9}$/.test(digits)) {
    throw new PhigateError('BAD_USER_INPUT', 'ssn must contain 9 digits', { reason: 'invalid_ssn' });
  }
  return digits;
}

/**
 * The character check runs before upper-casing: toUpperCase maps some non-ASCII letters onto
 * ASCII (dotless 'ı' to 'I', 'ß' to 'SS'), which would let a lookalike match another record.
 */
export function normaliseMrn(input: string): string {
  const mrn = input.normalize('NFKC').trim();
  if (!/^[A-Za-z0-9-]{1,32}$/.test(mrn)) {
    throw new PhigateError('BAD_USER_INPUT', 'mrn must be 1 to 32 letters, digits or hyphens', { reason: 'invalid_mrn' });
  }
  return mrn.toUpperCase();
}

/** A 32-byte HMAC key for one column of one clinic, derived from the blind-index root key. */
export function deriveBlindIndexKey(rootKey: Buffer, column: BlindIndexColumn, scope: string): Buffer {
  // A root zero-filled by the keyring's cache after the caller's hit (an await apart) would give
  // column keys, and digests of every identifier, that anyone can recompute.
  if (rootKey.length < 32 || isZeroFilled(rootKey)) {
    throw new PhigateError('KEY_UNAVAILABLE', 'blind index root key is not usable', { reason: 'invalid_key' });
  }
  const info = lengthPrefixed(['phigate/blind-index-key', column, scope]);
  // 1024 bytes is node's limit for HKDF info; a clinic id never comes near it legitimately.
  if (scope === '' || info.length > 1024) {
    throw new PhigateError('BAD_USER_INPUT', 'clinic id is empty or too long', { reason: 'malformed_identifier' });
  }
  return Buffer.from(hkdfSync('sha256', rootKey, HKDF_SALT, info, 32));
}

/** The searchable token for an already-normalised value: HMAC-SHA256, 32 bytes. */
export function blindIndex(columnKey: Buffer, normalised: string): Buffer {
  if (columnKey.length !== 32) {
    throw new PhigateError('KEY_UNAVAILABLE', 'blind index key is not usable', { reason: 'invalid_key' });
  }
  return createHmac('sha256', columnKey).update(normalised, 'utf8').digest();
}
