import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/config.ts';
import { createFieldCipher } from '../../../src/crypto/field-cipher.ts';
import { createAwsKeyProvider } from '../../../src/crypto/keys/aws.ts';
import { assertKeyUsable } from '../../../src/crypto/keys/check-provider.ts';
import { createKeyring } from '../../../src/crypto/keys/keyring.ts';
import { startFakeKms, type FakeKms } from '../../support/fake-kms.ts';
import { failed } from './expect-error.ts';
import { createMemoryKeyStore } from './keyring-contract.ts';

// Issue 14, items 7 and 8, against the loopback KMS endpoint driven by the real @aws-sdk/client-kms.
const credentials = { accessKeyId: 'AKIAFAKEFAKEFAKEFAKE', secretAccessKey: 'fake-secret-access-key' };
const keyId = '1234abcd-12ab-34cd-56ef-1234567890ab';
const P1 = '7f9c1e4a-0000-4000-8000-000000000001';
const P2 = '7f9c1e4a-0000-4000-8000-000000000002';
const at = (id: string) => ({ table: 'patients', column: 'ssn', rowId: id, patientId: id });

let kms: FakeKms;
beforeAll(async () => {
  kms = await startFakeKms();
});
afterAll(async () => kms.close());
beforeEach(async () => kms.fail(null));

const provider = () => createAwsKeyProvider({ keyId, region: 'us-east-1', endpoint: kms.endpoint, credentials });

describe('KMS outage', () => {
  it('cached keys keep working, uncached ones fail closed, readiness says so, and all recovers when the KMS returns', async () => {
    const store = createMemoryKeyStore();
    const writer = createFieldCipher(createKeyring({ provider: provider(), store }));
    const sealedNorth = await writer.encrypt('c-north', at(P1), 'north value');
    const sealedSouth = await writer.encrypt('c-south', at(P2), 'south value');
    await createKeyring({ provider: provider(), store }).blindIndexKey('patients.ssn', 'c-north');

    const keyring = createKeyring({ provider: provider(), store });
    const cipher = createFieldCipher(keyring);
    expect(await cipher.decrypt('c-north', at(P1), sealedNorth)).toBe('north value');
    await keyring.probe();

    await kms.fail('refuse');
    // Cached: no KMS call needed.
    expect(cipher.decrypt('c-north', at(P1), sealedNorth)).toBe('north value');
    expect(await cipher.encrypt('c-north', at(P1), 'written during the outage')).toBeInstanceOf(Buffer);
    // Never unwrapped here: refused, not guessed.
    await failed(() => cipher.decrypt('c-south', at(P2), sealedSouth), 'KEY_UNAVAILABLE', 'kms_error');
    await expect(keyring.probe()).rejects.toMatchObject({ code: 'KEY_UNAVAILABLE' });

    await kms.fail(null);
    await keyring.probe();
    expect(await cipher.decrypt('c-south', at(P2), sealedSouth)).toBe('south value');
  });

  it('a cached key works only until its bound (maximum age), then fails closed while the KMS is down', async () => {
    const store = createMemoryKeyStore();
    const sealed = await createFieldCipher(createKeyring({ provider: provider(), store })).encrypt('c-north', at(P1), 'value');
    const keyring = createKeyring({ provider: provider(), store, cache: { maxAgeMs: 50 } });
    const cipher = createFieldCipher(keyring);
    expect(await cipher.decrypt('c-north', at(P1), sealed)).toBe('value');
    await kms.fail('refuse');
    await new Promise((r) => setTimeout(r, 120));
    await failed(() => cipher.decrypt('c-north', at(P1), sealed), 'KEY_UNAVAILABLE');
    await kms.fail(null);
    expect(await cipher.decrypt('c-north', at(P1), sealed)).toBe('value');
  });

  it('steady state: 1,000 reads and 100 writes of cached keys make no KMS request', async () => {
    const store = createMemoryKeyStore();
    const keyring = createKeyring({ provider: provider(), store });
    const cipher = createFieldCipher(keyring);
    const sealed = await cipher.encrypt('c-north', at(P1), 'value');
    const before = kms.calls.GenerateDataKey + kms.calls.Decrypt;
    for (let i = 0; i < 1000; i++) {
      expect(cipher.decrypt('c-north', at(P1), sealed)).toBe('value');
      if (i % 10 === 0) await cipher.encrypt('c-north', at(P1), 'value');
    }
    expect(kms.calls.GenerateDataKey + kms.calls.Decrypt).toBe(before);
  });
});

describe('production start-up check of the master key', () => {
  it('passes with a usable key', async () => {
    await assertKeyUsable(provider(), 'PHIGATE_KMS_KEY_ID');
  });

  it.each(['refuse', 'http500'] as const)('refuses to start when the KMS %s, naming the variable and no key material', async (mode) => {
    await kms.fail(mode);
    const e = await assertKeyUsable(provider(), 'PHIGATE_KMS_KEY_ID').then(
      () => null,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as ConfigError).variable).toBe('PHIGATE_KMS_KEY_ID');
    expect((e as Error).message).toMatch(/^PHIGATE_KMS_KEY_ID: the aws key service cannot use the master key \(\w+\)/);
    expect((e as Error).message).not.toContain(keyId);
  });
});

describe('master-key rotation with KMS', () => {
  it('wraps an existing data key under another KMS key, with the same context; the old key id cannot open the new wrapping', async () => {
    const next = createAwsKeyProvider({ keyId: 'abcd0000-12ab-34cd-56ef-1234567890ab', region: 'us-east-1', endpoint: kms.endpoint, credentials });
    const context = { purpose: 'data', scope: 'c-north', version: '1' };
    const { plaintext, wrapped } = await provider().generateDataKey(context);
    const rewrapped = await next.wrapDataKey(plaintext, context);
    expect((await next.decryptDataKey(rewrapped, context)).equals(plaintext)).toBe(true);
    await failed(() => provider().decryptDataKey(rewrapped, context), 'KEY_UNAVAILABLE', 'unwrap_failed');
    await failed(() => next.decryptDataKey(rewrapped, { ...context, scope: 'c-south' }), 'KEY_UNAVAILABLE', 'unwrap_failed');
    expect(wrapped.equals(rewrapped)).toBe(false);
  });
});
