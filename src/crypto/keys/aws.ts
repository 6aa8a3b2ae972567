import { DecryptCommand, EncryptCommand, GenerateDataKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import type { KMSClientConfig } from '@aws-sdk/client-kms';
import { PhigateError } from '../../errors.ts';
import type { KeyProvider } from './provider.ts';

const KEY_BYTES = 32;

export interface AwsKeyProviderOptions {
  readonly keyId: string;
  readonly region: string;
  /** A KMS-compatible endpoint (e.g. LocalStack); null for the AWS default for the region. */
  readonly endpoint: string | null;
  /** Defaults to the SDK's credential chain (environment, instance or task role...). */
  readonly credentials?: KMSClientConfig['credentials'];
}

// The SDK falls back to console for some handler warnings; nothing from it may reach stdout.
const silent = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

function unavailable(e: unknown): PhigateError {
  // Only a ciphertext or context that KMS refuses is a key problem; anything else is the service.
  const name = e instanceof Error ? e.name : '';
  const unwrap = name === 'InvalidCiphertextException' || name === 'IncorrectKeyException';
  return new PhigateError('KEY_UNAVAILABLE', unwrap ? 'wrapped data key could not be unwrapped' : 'key service request failed', {
    reason: unwrap ? 'unwrap_failed' : 'kms_error',
    cause: e,
  });
}

function keyBytes(plaintext: Uint8Array | undefined): Buffer {
  if (!plaintext || plaintext.length !== KEY_BYTES) {
    throw new PhigateError('KEY_UNAVAILABLE', 'key service returned an unusable data key', { reason: 'kms_error' });
  }
  const key = Buffer.from(plaintext);
  // The SDK's copy would otherwise linger in memory until collected.
  plaintext.fill(0);
  return key;
}

/** Data keys generated and unwrapped by AWS KMS under `keyId`; the master key never leaves KMS. */
export function createAwsKeyProvider(opts: AwsKeyProviderOptions): KeyProvider {
  // Every request that needs an uncached key waits on KMS, so a hung connection must fail fast
  // rather than pile requests up. A custom endpoint is local or in-VPC, where retries buy little.
  const client = new KMSClient({
    region: opts.region,
    ...(opts.endpoint !== null ? { endpoint: opts.endpoint, maxAttempts: 2 } : {}),
    ...(opts.credentials !== undefined ? { credentials: opts.credentials } : {}),
    logger: silent,
    requestHandler: {
      connectionTimeout: opts.endpoint !== null ? 1_000 : 3_000,
      requestTimeout: opts.endpoint !== null ? 2_000 : 10_000,
      throwOnRequestTimeout: true,
      logger: silent,
    },
  });

  return {
    name: 'aws',
    keyRef: opts.keyId,
    async generateDataKey(context) {
      let out;
      try {
        out = await client.send(new GenerateDataKeyCommand({ KeyId: opts.keyId, KeySpec: 'AES_256', EncryptionContext: context }));
      } catch (e) {
        throw unavailable(e);
      }
      const plaintext = keyBytes(out.Plaintext);
      if (!out.CiphertextBlob || out.CiphertextBlob.length === 0) {
        plaintext.fill(0);
        throw new PhigateError('KEY_UNAVAILABLE', 'key service returned no wrapped data key', { reason: 'kms_error' });
      }
      return { plaintext, wrapped: Buffer.from(out.CiphertextBlob) };
    },
    async wrapDataKey(plaintext, context) {
      let out;
      try {
        out = await client.send(new EncryptCommand({ KeyId: opts.keyId, Plaintext: plaintext, EncryptionContext: context }));
      } catch (e) {
        throw unavailable(e);
      }
      if (!out.CiphertextBlob || out.CiphertextBlob.length === 0) {
        throw new PhigateError('KEY_UNAVAILABLE', 'key service returned no wrapped data key', { reason: 'kms_error' });
      }
      return Buffer.from(out.CiphertextBlob);
    },
    async decryptDataKey(wrapped, context) {
      let out;
      try {
        // KeyId pins the master key: KMS refuses a ciphertext made under any other key.
        out = await client.send(new DecryptCommand({ KeyId: opts.keyId, CiphertextBlob: wrapped, EncryptionContext: context }));
      } catch (e) {
        throw unavailable(e);
      }
      return keyBytes(out.Plaintext);
    },
  };
}
