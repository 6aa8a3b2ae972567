/**
 * Non-secret key/value pairs bound to a wrapped key: unwrapping succeeds only with the exact same
 * context, so a wrapped key copied to another clinic, purpose or version is useless.
 */
export type EncryptionContext = Readonly<Record<string, string>>;

/** The context every wrapped key of phigate is bound to: what it is for, whose, which version. */
export const keyContext = (purpose: string, scope: string, version: number): EncryptionContext => ({ purpose, scope, version: String(version) });

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
  /** Wraps an existing data key under this master key: master-key rotation re-wraps, it never re-encrypts rows. */
  wrapDataKey(plaintext: Buffer, context: EncryptionContext): Promise<Buffer>;
}
