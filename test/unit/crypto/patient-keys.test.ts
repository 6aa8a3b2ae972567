import { createDecipheriv, randomBytes, type Decipher } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { SHREDDED_VALUE, openField, sealField, sealedUnder, type DataKey } from '../../../src/crypto/envelope.ts';
import { createFieldCipher } from '../../../src/crypto/field-cipher.ts';
import { createKeyring } from '../../../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../../../src/crypto/keys/local.ts';
import { newPatientKey, openPatientKey } from '../../../src/crypto/patient-key.ts';
import { failed, thrown } from './expect-error.ts';
import { createMemoryKeyStore } from './keyring-contract.ts';

const clinicKey: DataKey = { scope: 'c-north', version: 3, key: randomBytes(32) };
const P1 = '7f9c1e4a-0000-4000-8000-000000000001';
const P2 = '7f9c1e4a-0000-4000-8000-000000000002';
const aad = { table: 'patients', column: 'ssn', rowId: P1, patientId: P1 };

function setup(cache = {}) {
  const store = createMemoryKeyStore();
  const keyring = createKeyring({ provider: createLocalKeyProvider(randomBytes(32)), store, cache });
  return { store, keyring, cipher: createFieldCipher(keyring) };
}

describe('per-patient keys', () => {
  it('gives each opened key memory of its own: a cached key keeps no shared Buffer pool slab alive', () => {
    const { key, wrapped } = newPatientKey(clinicKey, P1, 2);
    const opened = openPatientKey(clinicKey, P1, 2, wrapped);
    expect(opened.key.equals(key.key)).toBe(true);
    expect(opened.key.byteOffset).toBe(0);
    expect(opened.key.buffer.byteLength).toBe(32);
  });

  it('seal under a patient key: the header names both versions, and the value is bound to the patient', () => {
    const { key, wrapped } = newPatientKey(clinicKey, P1, 2);
    const sealed = sealField(key, aad, '123-45-6789');
    expect(sealed[0]).toBe(0x02);
    expect(sealedUnder(sealed)).toEqual({ version: 3, patientVersion: 2 });
    expect(openField(openPatientKey(clinicKey, P1, 2, wrapped), aad, sealed)).toBe('123-45-6789');
    // The clinic key alone opens nothing, nor does another patient's key, nor another version of the wrap.
    thrown(() => openField(clinicKey, aad, sealed), 'KEY_UNAVAILABLE', 'decrypt_failed');
    thrown(() => openField(newPatientKey(clinicKey, P2, 2).key, aad, sealed), 'KEY_UNAVAILABLE', 'decrypt_failed');
    thrown(() => openPatientKey(clinicKey, P2, 2, wrapped), 'KEY_UNAVAILABLE', 'unwrap_failed');
    thrown(() => openPatientKey(clinicKey, P1, 1, wrapped), 'KEY_UNAVAILABLE', 'unwrap_failed');
    thrown(() => openPatientKey({ ...clinicKey, version: 4 }, P1, 2, wrapped), 'KEY_UNAVAILABLE', 'unwrap_failed');
  });

  it('wraps and opens nothing under a clinic key the cache has zero-filled (test/integration/keys/zeroed-key-race.test.ts)', () => {
    thrown(() => newPatientKey({ ...clinicKey, key: Buffer.alloc(32) }, P1, 2), 'KEY_UNAVAILABLE', 'invalid_key');
    // Opening under one is refused as what it is, not as an altered wrapping (unwrap_failed).
    thrown(() => openPatientKey({ ...clinicKey, key: Buffer.alloc(32) }, P1, 2, newPatientKey(clinicKey, P1, 2).wrapped), 'KEY_UNAVAILABLE', 'invalid_key');
  });

  it('wipes what a refused unwrap decrypted: update() opens the blob before final() checks its tag', () => {
    const { key, wrapped } = newPatientKey(clinicKey, P2, 2);
    const opened: Buffer[] = [];
    // Node's typings do not export the Decipheriv class; its prototype is reached through an instance.
    const proto = Object.getPrototypeOf(createDecipheriv('aes-256-gcm', Buffer.alloc(32), Buffer.alloc(12))) as { update: (this: Decipher, ...a: unknown[]) => Buffer };
    const update = proto.update;
    const spy = vi.spyOn(proto, 'update').mockImplementation(function (this: Decipher, ...args: unknown[]) {
      const out = update.apply(this, args);
      opened.push(out);
      return out;
    });
    try {
      // Another patient's blob of the same clinic: its key is decrypted, then its tag fails.
      thrown(() => openPatientKey(clinicKey, P1, 2, wrapped), 'KEY_UNAVAILABLE', 'unwrap_failed');
    } finally {
      spy.mockRestore();
    }
    expect(opened).toHaveLength(1);
    expect(opened[0]!.length).toBe(32);
    expect(opened[0]!.equals(Buffer.alloc(32))).toBe(true);
    expect(key.key.equals(Buffer.alloc(32))).toBe(false);
  });

  it('the field cipher seals each patient under its own key and opens values sealed before per-patient keys', async () => {
    const { keyring, cipher } = setup();
    const a = await cipher.encrypt('c-north', aad, 'value of one');
    const b = await cipher.encrypt('c-north', { ...aad, rowId: P2, patientId: P2 }, 'value of two');
    expect(sealedUnder(a)).toEqual({ version: 1, patientVersion: 1 });
    expect(await cipher.decrypt('c-north', aad, a)).toBe('value of one');
    expect(await cipher.decrypt('c-north', { ...aad, rowId: P2, patientId: P2 }, b)).toBe('value of two');
    await failed(() => cipher.decrypt('c-north', { ...aad, rowId: P2, patientId: P2 }, a), 'KEY_UNAVAILABLE');
    const legacy = sealField(await keyring.writeKey('c-north'), aad, 'sealed under the clinic key');
    expect(await cipher.decrypt('c-north', aad, legacy)).toBe('sealed under the clinic key');
  });

  it("a new patient's first key is left to the caller to store: none in the store, none cached; once stored it opens what it sealed", async () => {
    const { store, keyring, cipher } = setup();
    const { key, record } = await keyring.firstPatientKey('c-north', P1);
    expect(record).toMatchObject({ patientId: P1, version: 1, clinicId: 'c-north', clinicVersion: 1 });
    const sealed = cipher.sealWith(key, aad, 'created');
    expect(sealedUnder(sealed)).toEqual({ version: 1, patientVersion: 1 });
    expect(await store.latestPatientKey(P1)).toBeNull();
    // Not cached: a request that rolled back leaves nothing a later read could open the value with.
    await failed(() => cipher.decrypt('c-north', aad, sealed), 'KEY_UNAVAILABLE', 'key_not_found');
    expect(await store.insertPatientKey(record)).toBe(true);
    expect(await cipher.decrypt('c-north', aad, sealed)).toBe('created');
  });

  it('after a rotation a patient gets a new key version under the new clinic key; both stay readable', async () => {
    const { keyring, cipher } = setup();
    const before = await cipher.encrypt('c-north', aad, 'old');
    await keyring.rotate('data', 'c-north');
    const after = await cipher.encrypt('c-north', aad, 'new');
    expect(sealedUnder(after)).toEqual({ version: 2, patientVersion: 2 });
    expect(await cipher.decrypt('c-north', aad, before)).toBe('old');
    expect(await cipher.decrypt('c-north', aad, after)).toBe('new');
  });

  it('a replica that has not yet seen a rotation still writes under the newer patient key another replica made', async () => {
    const { store } = setup();
    const provider = createLocalKeyProvider(randomBytes(32));
    const a = createKeyring({ provider, store, latestTtlMs: 60_000 });
    const b = createKeyring({ provider, store });
    // A knows version 1 as current (for its 'latest' bound); B rotates and writes a patient A has not seen.
    await createFieldCipher(a).encrypt('c-north', aad, 'first');
    await b.rotate('data', 'c-north');
    const other = { ...aad, rowId: P2, patientId: P2 };
    await createFieldCipher(b).encrypt('c-north', other, 'after the rotation');
    const written = await createFieldCipher(a).encrypt('c-north', { ...other, column: 'phone' }, 'by the replica that lags');
    expect(sealedUnder(written)).toEqual({ version: 2, patientVersion: 1 });
  });

  it('shredded: reads answer KEY_UNAVAILABLE shredded on a cold replica, and no new key can be made', async () => {
    const { store, cipher } = setup();
    const sealed = await cipher.encrypt('c-north', aad, 'secret');
    store.shredPatient(P1);
    const replica = createFieldCipher(createKeyring({ provider: createLocalKeyProvider(randomBytes(32)), store }));
    await failed(() => replica.decrypt('c-north', aad, sealed), 'KEY_UNAVAILABLE', 'shredded');
    await failed(() => replica.encrypt('c-north', aad, 'again'), 'KEY_UNAVAILABLE', 'shredded');
    // The live rows hold the marker, which every replica refuses at once, cached key or not.
    await failed(() => cipher.decrypt('c-north', aad, SHREDDED_VALUE), 'KEY_UNAVAILABLE', 'shredded');
  });

  it('write keys for a batch of patients cost one lookup and one insert, then seal from the cache; a shredded patient stays refused', async () => {
    const store = createMemoryKeyStore();
    const provider = createLocalKeyProvider(randomBytes(32));
    const cipher = createFieldCipher(createKeyring({ provider, store }));
    const ids = Array.from({ length: 10 }, (_, i) => `7f9c1e4a-0000-4000-8000-${String(100 + i).padStart(12, '0')}`);
    await cipher.encrypt('c-north', { ...aad, rowId: ids[0]!, patientId: ids[0]! }, 'has a key already');
    await cipher.encrypt('c-north', { ...aad, rowId: ids[1]!, patientId: ids[1]! }, 'to be shredded');
    store.shredPatient(ids[1]!);
    const calls = { latest: 0, insert: 0, one: 0 };
    const [latestMany, insertMany, latestOne] = [store.latestPatientKeys.bind(store), store.insertPatientKeys.bind(store), store.latestPatientKey.bind(store)];
    store.latestPatientKeys = (x) => (calls.latest++, latestMany(x));
    store.insertPatientKeys = (x) => (calls.insert++, insertMany(x));
    store.latestPatientKey = (x) => (calls.one++, latestOne(x));
    const fresh = createKeyring({ provider, store });
    await fresh.preparePatientWriteKeys('c-north', ids);
    expect(calls).toEqual({ latest: 1, insert: 1, one: 0 });
    const freshCipher = createFieldCipher(fresh);
    for (const id of ids.filter((x) => x !== ids[1])) await freshCipher.encrypt('c-north', { ...aad, rowId: id, patientId: id }, 'v');
    expect(calls.one).toBe(0);
    await failed(() => freshCipher.encrypt('c-north', { ...aad, rowId: ids[1]!, patientId: ids[1]! }, 'v'), 'KEY_UNAVAILABLE', 'shredded');
  });

  it('patient keys missed together are fetched in one store round trip', async () => {
    const { store, cipher } = setup();
    const ids = Array.from({ length: 20 }, (_, i) => `7f9c1e4a-0000-4000-8000-${String(i).padStart(12, '0')}`);
    const sealed = await Promise.all(ids.map((id) => cipher.encrypt('c-north', { ...aad, rowId: id, patientId: id }, id)));
    const cold = createFieldCipher(createKeyring({ provider: createLocalKeyProvider(randomBytes(32)), store }));
    let lookups = 0;
    const patientKeys = store.patientKeys.bind(store);
    store.patientKeys = (refs) => (lookups++, patientKeys(refs));
    // A cold replica with another master key cannot unwrap the clinic key: the point is the round trips.
    await Promise.allSettled(ids.map((id, i) => cold.decrypt('c-north', { ...aad, rowId: id, patientId: id }, sealed[i]!)));
    expect(lookups).toBe(1);
  });
});

describe('bounded key cache', () => {
  it('drops a key after its maximum uses and zero-fills it; the next use unwraps again', async () => {
    const { keyring } = setup({ maxUses: 3 });
    const key = await keyring.writeKey('c-north');
    const bytes = key.key;
    const calls = keyring.stats.kmsCalls;
    // writeKey was the first use.
    for (let i = 0; i < 2; i++) expect(keyring.readKey('c-north', 1)).not.toBeInstanceOf(Promise);
    expect(bytes.equals(Buffer.alloc(32))).toBe(false);
    const again = await keyring.readKey('c-north', 1);
    expect(bytes.equals(Buffer.alloc(32))).toBe(true);
    expect(again.key.equals(Buffer.alloc(32))).toBe(false);
    expect(keyring.stats.kmsCalls).toBe(calls + 1);
    expect(keyring.stats.evictions).toBeGreaterThanOrEqual(1);
  });

  it('drops a key after its maximum age and zero-fills it', async () => {
    const { keyring } = setup({ maxAgeMs: 20 });
    const bytes = (await keyring.writeKey('c-north')).key;
    await new Promise((r) => setTimeout(r, 60));
    const calls = keyring.stats.kmsCalls;
    const again = await keyring.readKey('c-north', 1);
    expect(bytes.equals(Buffer.alloc(32))).toBe(true);
    expect(again.key.equals(Buffer.alloc(32))).toBe(false);
    expect(keyring.stats.kmsCalls).toBe(calls + 1);
  });

  it('holds at most maxEntries keys, zero-filling the least recently used', async () => {
    const { cipher, keyring } = setup({ maxEntries: 2 });
    await cipher.encrypt('c-north', aad, 'x');
    const patientKey = await keyring.patientWriteKey('c-north', P1);
    await keyring.writeKey('c-south');
    await keyring.writeKey('c-east');
    expect(patientKey.key.equals(Buffer.alloc(32))).toBe(true);
  });

  it('a zeroed key still held by a caller is refused, never used to seal', async () => {
    const { keyring } = setup({ maxUses: 1 });
    const key = await keyring.patientWriteKey('c-north', P1);
    keyring.patientReadKey('c-north', P1, 1, 1);
    keyring.patientReadKey('c-north', P1, 1, 1);
    expect(key.key.equals(Buffer.alloc(32))).toBe(true);
    thrown(() => sealField(key, aad, 'value'), 'KEY_UNAVAILABLE', 'invalid_key');
  });

  it('steady state: reads and writes of cached keys make no KMS call', async () => {
    const { keyring, cipher } = setup();
    const sealed = await cipher.encrypt('c-north', aad, 'value');
    const calls = keyring.stats.kmsCalls;
    for (let i = 0; i < 1000; i++) {
      cipher.decrypt('c-north', aad, sealed);
      if (i % 10 === 0) await cipher.encrypt('c-north', aad, 'value');
    }
    expect(keyring.stats.kmsCalls).toBe(calls);
  });
});
