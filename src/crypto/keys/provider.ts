/**
 * Non-secret key/value pairs bound to a wrapped key: unwrapping succeeds only with the exact same
 * context, so a wrapped key copied to another clinic, purpose or version is useless.
 */
export type EncryptionContext = Readonly<Record<string, string>>;

/**
 * A key-management service that wraps (encrypts) data keys under a master key it never reveals.
 * Every failure rejects with PhigateError('KEY_UNAVAILABLE'); the underlying error is the `cause`.
 */
export interface KeyProvider {
  readonly name: 'local' | 'aws';
  /** Which master key wraps: 'local:<fingerprint>' or the AWS key id/ARN. Stored with each wrapped key. */
  readonly keyRef: string;
  /** A fresh 32-byte data key, in the clear and wrapped under the master key with `context`. */
  generateDataKey(context: EncryptionContext): Promise<{ plaintext: Buffer; wrapped: Buffer }>;
  decryptDataKey(wrapped: Buffer, context: EncryptionContext): Promise<Buffer>;
}
