import { createHmac, randomBytes, randomUUID, type KeyObject } from 'node:crypto';

/**
 * `phg_<key id>_<secret>`: the id is a UUID (looked up, never secret), the secret 32 random bytes
 * (256 bits) in base64url. The prefix lets secret scanners recognise a leaked key.
 */
const FORMAT = /^phg_([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;
const SECRET_BYTES = 32;

export interface MintedKey {
  readonly id: string;
  readonly secret: string;
  /** What the partner sends; shown once, never stored. */
  readonly key: string;
}

export function mintApiKey(): MintedKey {
  const id = randomUUID();
  const secret = randomBytes(SECRET_BYTES).toString('base64url');
  return { id, secret, key: `phg_${id}_${secret}` };
}

/** null when the credential is not shaped like a key at all. */
export function parseApiKey(credential: string): { id: string; secret: string } | null {
  const m = FORMAT.exec(credential);
  return m ? { id: m[1] as string, secret: m[2] as string } : null;
}

/**
 * What is stored: HMAC-SHA256 under the pepper over the id and the secret (a hash cannot move to
 * another key's row). One string, unambiguous because neither a UUID nor base64url has a `:`;
 * callers pass only a parsed or minted id and secret.
 */
export function apiKeyHash(pepper: KeyObject, id: string, secret: string): Buffer {
  return createHmac('sha256', pepper).update(`phigate/api-key/v1:${id}:${secret}`).digest();
}
