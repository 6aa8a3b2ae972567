import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAwsKeyProvider } from '../../../src/crypto/keys/aws.ts';
import { startFakeKms } from '../../support/fake-kms.ts';
import type { FakeKms } from '../../support/fake-kms.ts';
import { rejected } from './expect-error.ts';
import { describeKeyring } from './keyring-contract.ts';

// Static fake credentials: the SDK signs requests with them; the fake only checks a signature is present.
const credentials = { accessKeyId: 'AKIAFAKEFAKEFAKEFAKE', secretAccessKey: 'fake-secret-access-key' };
const keyId = '1234abcd-12ab-34cd-56ef-1234567890ab';
const context = { purpose: 'data', scope: 'clinic-a', version: '1' };

const providerFor = (kms: FakeKms, id = keyId) => createAwsKeyProvider({ keyId: id, region: 'us-east-1', endpoint: kms.endpoint, credentials });

describe('createAwsKeyProvider against a KMS-protocol server', () => {
  let kms: FakeKms;
  beforeAll(async () => {
    kms = await startFakeKms();
  });
  afterAll(async () => {
    await kms.close();
  });
  beforeEach(async () => {
    await kms.fail(null);
  });

  it('generates a data key and unwraps it with the same encryption context', async () => {
    const provider = providerFor(kms);
    expect(provider.name).toBe('aws');
    expect(provider.keyRef).toBe(keyId);
    const before = { ...kms.calls };
    const { plaintext, wrapped } = await provider.generateDataKey(context);
    expect(plaintext.length).toBe(32);
    expect(wrapped.equals(plaintext)).toBe(false);
    expect((await provider.decryptDataKey(wrapped, { ...context })).equals(plaintext)).toBe(true);
    expect(kms.calls.GenerateDataKey).toBe(before.GenerateDataKey + 1);
    expect(kms.calls.Decrypt).toBe(before.Decrypt + 1);
  });

  it('maps a context mismatch to KEY_UNAVAILABLE, keeping the KMS error only as the cause', async () => {
    const provider = providerFor(kms);
    const { wrapped } = await provider.generateDataKey(context);
    const e = await rejected(provider.decryptDataKey(wrapped, { ...context, scope: 'clinic-b' }), 'KEY_UNAVAILABLE', 'unwrap_failed');
    expect((e.cause as Error).name).toBe('InvalidCiphertextException');
    expect(e.message).not.toContain('InvalidCiphertext');
  });

  it('refuses a data key wrapped under another master key', async () => {
    const { wrapped } = await providerFor(kms, 'other-key').generateDataKey(context);
    await rejected(providerFor(kms).decryptDataKey(wrapped, context), 'KEY_UNAVAILABLE', 'unwrap_failed');
  });

  it('maps HTTP 500 to KEY_UNAVAILABLE after a bounded retry', async () => {
    const provider = providerFor(kms);
    const before = kms.calls.GenerateDataKey;
    await kms.fail('http500');
    await rejected(provider.generateDataKey(context), 'KEY_UNAVAILABLE', 'kms_error');
    expect(kms.calls.GenerateDataKey - before).toBe(2);
  });

  it('fails fast with KEY_UNAVAILABLE when the server refuses connections', async () => {
    const provider = providerFor(kms);
    await kms.fail('refuse');
    const started = Date.now();
    await rejected(provider.generateDataKey(context), 'KEY_UNAVAILABLE', 'kms_error');
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('gives up on a server that never answers instead of hanging', async () => {
    const provider = providerFor(kms);
    await kms.fail('hang');
    const started = Date.now();
    await rejected(provider.generateDataKey(context), 'KEY_UNAVAILABLE', 'kms_error');
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('works again once the server is back', async () => {
    const provider = providerFor(kms);
    await kms.fail('refuse');
    await rejected(provider.generateDataKey(context), 'KEY_UNAVAILABLE');
    await kms.fail(null);
    expect((await provider.generateDataKey(context)).plaintext.length).toBe(32);
  });
});

describeKeyring('aws (real SDK, KMS-protocol server)', async () => {
  const kms = await startFakeKms();
  return {
    provider: providerFor(kms),
    breakKms: () => kms.fail('http500'),
    repairKms: () => kms.fail(null),
    remoteCalls: () => kms.calls.GenerateDataKey + kms.calls.Decrypt,
    close: () => kms.close(),
  };
});
