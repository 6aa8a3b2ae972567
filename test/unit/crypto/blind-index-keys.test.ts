import { randomBytes } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { blindIndex } from '../../../src/crypto/blind-index.ts';
import { createKeyring, type KeyCacheBounds } from '../../../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../../../src/crypto/keys/local.ts';
import type { KeyProvider } from '../../../src/crypto/keys/provider.ts';
import { PhigateError } from '../../../src/errors.ts';
import { failed } from './expect-error.ts';
import { createMemoryKeyStore } from './keyring-contract.ts';

// keyring.blindIndexAt keeps each clinic's column key beside the index key it is derived from:
// derived once, dropped and zero-filled with that key (age, uses, room), never handed out.

// Every column key the keyring derives, as it derived it: to see whether its bytes were zero-filled.
const derived = vi.hoisted(() => [] as Buffer[]);
vi.mock('../../../src/crypto/blind-index.ts', async (original) => {
  const real = await original<typeof import('../../../src/crypto/blind-index.ts')>();
  return {
    ...real,
    deriveBlindIndexKey: (...args: Parameters<typeof real.deriveBlindIndexKey>) => {
      const key = real.deriveBlindIndexKey(...args);
      derived.push(key);
      return key;
    },
  };
});

const SSN = '123456789';
const zeroed = (key: Buffer): boolean => key.equals(Buffer.alloc(key.length));

/** A keyring whose key service can be switched off, with the index root created; nothing derived yet. */
async function setup(cache: Partial<KeyCacheBounds> = {}) {
  const real = createLocalKeyProvider(randomBytes(32));
  let down = false;
  const outage = (): never => {
    throw new PhigateError('KEY_UNAVAILABLE', 'injected outage', { reason: 'kms_error' });
  };
  const provider: KeyProvider = {
    name: real.name,
    keyRef: real.keyRef,
    generateDataKey: async (context) => (down ? outage() : real.generateDataKey(context)),
    decryptDataKey: async (wrapped, context) => (down ? outage() : real.decryptDataKey(wrapped, context)),
    wrapDataKey: async (plaintext, context) => (down ? outage() : real.wrapDataKey(plaintext, context)),
  };
  const store = createMemoryKeyStore();
  // The root is made by another replica (the seed): this keyring starts cold.
  await createKeyring({ provider, store }).blindIndexKey('patients.ssn', 'c-north');
  const keyring = createKeyring({ provider, store, cache });
  derived.length = 0;
  return { keyring, provider, store, kmsDown: (d: boolean) => (down = d) };
}

/** What a search must find: the HMAC under the column key derived afresh by a keyring of its own. */
async function expected(s: Awaited<ReturnType<typeof setup>>, column: 'patients.ssn' | 'patients.mrn', clinic: string, version: number, value: string) {
  const key = await createKeyring({ provider: s.provider, store: s.store }).blindIndexKeyAt(column, clinic, version);
  return blindIndex(key, value);
}

describe('blind-index column keys kept beside their index key', () => {
  it('derives a column key once: later searches are synchronous, derive nothing and ask no key service', async () => {
    const s = await setup();
    const first = await s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN);
    expect(first.equals(await expected(s, 'patients.ssn', 'c-north', 1, SSN))).toBe(true);
    // The cold first call derived one key for its answer and zero-filled it; the second keeps one.
    expect(s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN)).toBeInstanceOf(Buffer);
    const kms = s.keyring.stats.kmsCalls;
    const count = derived.length;
    for (let i = 0; i < 100; i++) {
      const again = s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN);
      expect(again).toBeInstanceOf(Buffer);
      expect((again as Buffer).equals(first)).toBe(true);
    }
    expect(derived.length).toBe(count);
    expect(s.keyring.stats.kmsCalls).toBe(kms);
  });

  it('keeps one key per column and clinic: none answers for another', async () => {
    const s = await setup();
    const cases = [
      ['patients.ssn', 'c-north'],
      ['patients.mrn', 'c-north'],
      ['patients.ssn', 'c-south'],
    ] as const;
    for (const [column, clinic] of cases) await s.keyring.blindIndexAt(column, clinic, 1, SSN);
    const digests = await Promise.all(cases.map(([column, clinic]) => s.keyring.blindIndexAt(column, clinic, 1, SSN)));
    expect(new Set(digests.map((d) => d.toString('hex'))).size).toBe(3);
    for (const [i, [column, clinic]] of cases.entries()) expect(digests[i]!.equals(await expected(s, column, clinic, 1, SSN))).toBe(true);
  });

  it("a clinic's rotated index version has its own key; version 1 stays the root's", async () => {
    const s = await setup();
    await s.keyring.ensureIndexKey('c-north', 2);
    await s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN);
    await s.keyring.blindIndexAt('patients.ssn', 'c-north', 2, SSN);
    const v1 = await s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN);
    const v2 = await s.keyring.blindIndexAt('patients.ssn', 'c-north', 2, SSN);
    expect(v1.equals(v2)).toBe(false);
    expect(v1.equals(await expected(s, 'patients.ssn', 'c-north', 1, SSN))).toBe(true);
    expect(v2.equals(await expected(s, 'patients.ssn', 'c-north', 2, SSN))).toBe(true);
    // A version the clinic has no key of is refused, cached neighbours or not.
    await failed(() => s.keyring.blindIndexAt('patients.ssn', 'c-north', 3, SSN), 'KEY_UNAVAILABLE', 'key_not_found');
    await failed(() => s.keyring.blindIndexAt('patients.ssn', 'c-north', 0, SSN), 'KEY_UNAVAILABLE', 'key_not_found');
  });

  it('past the index key maximum age, its column keys are zero-filled with it; the key service is asked again', async () => {
    const s = await setup({ maxAgeMs: 30 });
    await s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN);
    const digest = await s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN);
    const kept = derived.at(-1)!;
    expect(zeroed(kept)).toBe(false);
    await new Promise((r) => setTimeout(r, 60));
    s.kmsDown(true);
    // Fail closed: no column key outlives the root it came from.
    await failed(() => s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN), 'KEY_UNAVAILABLE', 'kms_error');
    expect(zeroed(kept)).toBe(true);
    s.kmsDown(false);
    const kms = s.keyring.stats.kmsCalls;
    expect((await s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN)).equals(digest)).toBe(true);
    expect(s.keyring.stats.kmsCalls).toBe(kms + 1);
  });

  it('each search is a use of the index key: past its maximum uses the column keys go with it', async () => {
    const s = await setup({ maxUses: 4 });
    await s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN);
    await s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN);
    const kept = derived.at(-1)!;
    for (let i = 0; i < 3; i++) expect(s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN)).toBeInstanceOf(Buffer);
    expect(zeroed(kept)).toBe(false);
    const kms = s.keyring.stats.kmsCalls;
    const fifth = s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN);
    expect(fifth).toBeInstanceOf(Promise);
    expect(zeroed(kept)).toBe(true);
    await fifth;
    expect(s.keyring.stats.kmsCalls).toBe(kms + 1);
  });

  it('an index key pushed out of the cache takes its column keys with it', async () => {
    const s = await setup({ maxEntries: 2 });
    await s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN);
    await s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN);
    const kept = derived.at(-1)!;
    await s.keyring.writeKey('c-south');
    await s.keyring.writeKey('c-east');
    expect(zeroed(kept)).toBe(true);
    s.kmsDown(true);
    await failed(() => s.keyring.blindIndexAt('patients.ssn', 'c-north', 1, SSN), 'KEY_UNAVAILABLE', 'kms_error');
  });

  it('keeps at most maxEntries column keys per index key: the rest are derived, used and zero-filled each time', async () => {
    const s = await setup({ maxEntries: 2 });
    for (const clinic of ['c-1', 'c-2', 'c-3']) {
      await s.keyring.blindIndexAt('patients.ssn', clinic, 1, SSN);
      await s.keyring.blindIndexAt('patients.ssn', clinic, 1, SSN);
    }
    // Cold call of c-1 (zeroed), kept c-1, kept c-2, then c-3 twice past the bound.
    expect(derived.map(zeroed)).toEqual([true, false, false, true, true]);
    const digest = s.keyring.blindIndexAt('patients.ssn', 'c-3', 1, SSN) as Buffer;
    expect(digest.equals(await expected(s, 'patients.ssn', 'c-3', 1, SSN))).toBe(true);
  });
});
