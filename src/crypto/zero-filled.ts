const ZERO_KEY = Buffer.alloc(32);

/**
 * Whether a 32-byte key is all zeros: what is left of a key the keyring let go (it zero-fills an
 * evicted key's Buffer, which a caller that got it before an await may still hold). Such a key is
 * never used to seal, wrap or derive, and a failure to open under it is said as such (invalid_key).
 */
export const isZeroFilled = (key: Buffer): boolean => key.equals(ZERO_KEY);
