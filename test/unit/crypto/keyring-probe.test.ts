import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createKeyring } from '../../../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../../../src/crypto/keys/local.ts';
import type { KeyProvider } from '../../../src/crypto/keys/provider.ts';
import { createMemoryKeyStore } from './keyring-contract.ts';

// The readiness probe of the key provider: it proves a replica can open data, and it must never
// create a key (a probe on an empty database would otherwise mint the blind-index root).

describe('keyring.probe', () => {
  it('creates nothing and calls no KMS when no key is stored yet', async () => {
    const store = createMemoryKeyStore();
    const keyring = createKeyring({ provider: createLocalKeyProvider(randomBytes(32)), store });
    await keyring.probe();
    expect(store.records()).toEqual([]);
    expect(keyring.stats).toEqual({ kmsCalls: 0, cacheHits: 0, cacheMisses: 0, evictions: 0, zeroedKeyRetries: 0 });
  });

  it('unwraps the blind-index root once on a cold replica, then answers from the cache without counting', async () => {
    const provider = createLocalKeyProvider(randomBytes(32));
    const store = createMemoryKeyStore();
    await createKeyring({ provider, store }).blindIndexKey('patients.ssn', 'c-north');
    const replica = createKeyring({ provider, store });
    await replica.probe();
    await replica.probe();
    expect(replica.stats).toEqual({ kmsCalls: 1, cacheHits: 0, cacheMisses: 1, evictions: 0, zeroedKeyRetries: 0 });
    expect(store.records()).toHaveLength(1);
  });

  it('fails while the key provider cannot unwrap, and while the key store is unreachable', async () => {
    const provider = createLocalKeyProvider(randomBytes(32));
    const store = createMemoryKeyStore();
    await createKeyring({ provider, store }).blindIndexKey('patients.ssn', 'c-north');
    const broken: KeyProvider = { ...provider, decryptDataKey: () => Promise.reject(new Error('kms down')) };
    await expect(createKeyring({ provider: broken, store }).probe()).rejects.toThrow();
    store.failing = true;
    await expect(createKeyring({ provider, store }).probe()).rejects.toMatchObject({ code: 'KEY_UNAVAILABLE' });
  });
});
