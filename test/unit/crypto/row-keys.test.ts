import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { sealedUnder } from '../../../src/crypto/envelope.ts';
import { createFieldCipher } from '../../../src/crypto/field-cipher.ts';
import { createKeyring, type JoinedPatientKey, type KeyCacheBounds, type RowKey } from '../../../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../../../src/crypto/keys/local.ts';
import { failed, thrown } from './expect-error.ts';
import { createMemoryKeyStore, type MemoryKeyStore } from './keyring-contract.ts';

// keyring.rowReadKey: a row's values share one key lookup, and a miss opens the wrapped key the
// row's own statement brought (src/db/patients.ts joins it) instead of asking the key store.

const P1 = '7f9c1e4a-0000-4000-8000-000000000001';
const P2 = '7f9c1e4a-0000-4000-8000-000000000002';
const COLUMNS = ['given_name', 'family_name', 'phone', 'email'];
const aadOf = (patientId: string, column: string) => ({ table: 'patients', column, rowId: patientId, patientId });

/** The store's patient-key calls, counted: each is a statement on the key pool. */
function counted(store: MemoryKeyStore): { calls: () => number } {
  let calls = 0;
  const [many, latest, latestMany] = [store.patientKeys.bind(store), store.latestPatientKey.bind(store), store.latestPatientKeys.bind(store)];
  store.patientKeys = (refs) => (calls++, many(refs));
  store.latestPatientKey = (id) => (calls++, latest(id));
  store.latestPatientKeys = (ids) => (calls++, latestMany(ids));
  return { calls: () => calls };
}

/** A writer that seals P1's and P2's values, and a cold reader (a replica) on the same master key and store. */
async function sealed(cache: Partial<KeyCacheBounds> = {}) {
  const store = createMemoryKeyStore();
  const provider = createLocalKeyProvider(randomBytes(32));
  const writer = createFieldCipher(createKeyring({ provider, store }));
  const values = new Map<string, Buffer>();
  for (const p of [P1, P2]) for (const c of COLUMNS) values.set(`${p}:${c}`, await writer.encrypt('c-north', aadOf(p, c), `${c} of ${p}`));
  const keyring = createKeyring({ provider, store, cache });
  const joinedOf = async (patientId: string): Promise<JoinedPatientKey> => {
    const r = (await store.latestPatientKey(patientId))!;
    return { version: r.version, clinicVersion: r.clinicVersion, wrapped: r.wrapped! };
  };
  return { store, provider, keyring, cipher: createFieldCipher(keyring), values, joinedOf };
}

describe('a row brings its wrapped patient key', () => {
  it('a miss opens the joined key with the cached clinic key: synchronously, with no key-store statement', async () => {
    const { store, keyring, cipher, values, joinedOf } = await sealed();
    const row: RowKey = { joined: await joinedOf(P1), held: null };
    await keyring.readKey('c-north', 1);
    const store$ = counted(store);
    const kms = keyring.stats.kmsCalls;
    for (const c of COLUMNS) {
      const plain = cipher.decrypt('c-north', aadOf(P1, c), values.get(`${P1}:${c}`)!, row);
      expect(plain).toBe(`${c} of ${P1}`);
    }
    expect(store$.calls()).toBe(0);
    expect(keyring.stats.kmsCalls).toBe(kms);
    // The key went into the cache: a later row of the same patient without a joined key hits it.
    expect(cipher.decrypt('c-north', aadOf(P1, 'phone'), values.get(`${P1}:phone`)!, { joined: null, held: null })).toBe(`phone of ${P1}`);
    expect(store$.calls()).toBe(0);
  });

  it('a cold clinic key is unwrapped by the KMS; the patient key still comes from the row, not the store', async () => {
    const { store, keyring, cipher, values, joinedOf } = await sealed();
    const row: RowKey = { joined: await joinedOf(P1), held: null };
    const store$ = counted(store);
    expect(await cipher.decrypt('c-north', aadOf(P1, 'email'), values.get(`${P1}:email`)!, row)).toBe(`email of ${P1}`);
    expect(store$.calls()).toBe(0);
    expect(keyring.stats.kmsCalls).toBe(1);
  });

  it("another patient's wrapped key joined to the row is refused: KEY_UNAVAILABLE, nothing opened, nothing cached, no fallback", async () => {
    const { store, keyring, cipher, values, joinedOf } = await sealed();
    await keyring.readKey('c-north', 1);
    // Same versions, so only the AAD (patient id) tells them apart.
    const row: RowKey = { joined: await joinedOf(P2), held: null };
    const store$ = counted(store);
    thrown(() => cipher.decrypt('c-north', aadOf(P1, 'given_name'), values.get(`${P1}:given_name`)!, row), 'KEY_UNAVAILABLE', 'unwrap_failed');
    expect(row.held).toBeNull();
    expect(store$.calls()).toBe(0);
    // Cold clinic key: refused the same way, asynchronously.
    const cold = await sealed();
    const coldRow: RowKey = { joined: await cold.joinedOf(P2), held: null };
    await failed(() => cold.cipher.decrypt('c-north', aadOf(P1, 'given_name'), cold.values.get(`${P1}:given_name`)!, coldRow), 'KEY_UNAVAILABLE', 'unwrap_failed');
    // The right key, through the store, still opens the value: the refusal cached nothing wrong.
    expect(await cipher.decrypt('c-north', aadOf(P1, 'given_name'), values.get(`${P1}:given_name`)!)).toBe(`given_name of ${P1}`);
  });

  it('a joined key presented as another version, or altered, is refused', async () => {
    const { keyring, cipher, values, joinedOf } = await sealed();
    await keyring.readKey('c-north', 1);
    const right = await joinedOf(P1);
    const value = values.get(`${P1}:phone`)!;
    const altered = Buffer.from(right.wrapped);
    altered.writeUInt8(altered.readUInt8(20) ^ 1, 20);
    thrown(() => cipher.decrypt('c-north', aadOf(P1, 'phone'), value, { joined: { ...right, wrapped: altered }, held: null }), 'KEY_UNAVAILABLE', 'unwrap_failed');
    thrown(() => cipher.decrypt('c-north', aadOf(P1, 'phone'), value, { joined: { ...right, wrapped: altered.subarray(1) }, held: null }), 'KEY_UNAVAILABLE', 'unwrap_failed');
    // A joined record claiming the ciphertext's versions for a key wrapped under others does not open either.
    const elsewhere = await (await sealed()).joinedOf(P1);
    thrown(() => cipher.decrypt('c-north', aadOf(P1, 'phone'), value, { joined: elsewhere, held: null }), 'KEY_UNAVAILABLE', 'unwrap_failed');
  });

  it('rotation in flight: a value under a version the join did not bring is opened through the store', async () => {
    const store = createMemoryKeyStore();
    const provider = createLocalKeyProvider(randomBytes(32));
    const writerRing = createKeyring({ provider, store });
    const writer = createFieldCipher(writerRing);
    const old = await writer.encrypt('c-north', aadOf(P1, 'phone'), 'old phone');
    await writerRing.rotate('data', 'c-north');
    const fresh = await writer.encrypt('c-north', aadOf(P1, 'email'), 'new email');
    expect([sealedUnder(old), sealedUnder(fresh)]).toEqual([{ version: 1, patientVersion: 1 }, { version: 2, patientVersion: 2 }]);
    const newest = (await store.latestPatientKey(P1))!;
    const row: RowKey = { joined: { version: newest.version, clinicVersion: newest.clinicVersion, wrapped: newest.wrapped! }, held: null };
    const keyring = createKeyring({ provider, store });
    const cipher = createFieldCipher(keyring);
    await keyring.readKey('c-north', 1);
    await keyring.readKey('c-north', 2);
    const store$ = counted(store);
    expect(cipher.decrypt('c-north', aadOf(P1, 'email'), fresh, row)).toBe('new email');
    expect(store$.calls()).toBe(0);
    expect(await cipher.decrypt('c-north', aadOf(P1, 'phone'), old, row)).toBe('old phone');
    expect(store$.calls()).toBe(1);
    // Both versions of one row, alternating: each value gets its own key, right every time.
    for (let i = 0; i < 3; i++) {
      expect(cipher.decrypt('c-north', aadOf(P1, 'email'), fresh, row)).toBe('new email');
      expect(cipher.decrypt('c-north', aadOf(P1, 'phone'), old, row)).toBe('old phone');
    }
    expect(store$.calls()).toBe(1);
  });

  it("a row's held key serves its own patient only: were a row key shared by mistake, another patient's value is refused", async () => {
    const { keyring, cipher, values, joinedOf } = await sealed();
    await keyring.readKey('c-north', 1);
    const row: RowKey = { joined: await joinedOf(P1), held: null };
    expect(cipher.decrypt('c-north', aadOf(P1, 'phone'), values.get(`${P1}:phone`)!, row)).toBe(`phone of ${P1}`);
    const held = row.held;
    // Not opened with P1's held key, and P1's joined key does not unwrap as P2's.
    thrown(() => cipher.decrypt('c-north', aadOf(P2, 'phone'), values.get(`${P2}:phone`)!, row), 'KEY_UNAVAILABLE', 'unwrap_failed');
    expect(row.held).toBe(held);
  });
});

describe("a row's values ask the key cache once, within the cache's bounds", () => {
  it("the row keeps the cache entry of its first value: the rest are counted as uses of it", async () => {
    const { keyring, cipher, values, joinedOf } = await sealed({ maxUses: 1000 });
    await keyring.readKey('c-north', 1);
    const row: RowKey = { joined: await joinedOf(P1), held: null };
    for (const c of COLUMNS) cipher.decrypt('c-north', aadOf(P1, c), values.get(`${P1}:${c}`)!, row);
    expect(row.held?.key.key.equals(Buffer.alloc(32))).toBe(false);
    expect(row.held?.uses).toBe(COLUMNS.length - 1);
  });

  it('a held key past its maximum uses is dropped and zeroed; the next value opens the joined key again', async () => {
    const { keyring, cipher, values, joinedOf } = await sealed({ maxUses: 2 });
    await keyring.readKey('c-north', 1);
    const row: RowKey = { joined: await joinedOf(P1), held: null };
    const opened = COLUMNS.slice(0, 3).map((c) => cipher.decrypt('c-north', aadOf(P1, c), values.get(`${P1}:${c}`)!, row));
    const first = row.held!;
    expect(first.uses).toBe(2);
    expect(cipher.decrypt('c-north', aadOf(P1, 'email'), values.get(`${P1}:email`)!, row)).toBe(`email of ${P1}`);
    expect(opened).toEqual(COLUMNS.slice(0, 3).map((c) => `${c} of ${P1}`));
    expect(first.live).toBe(false);
    expect(first.key.key.equals(Buffer.alloc(32))).toBe(true);
    expect(row.held).not.toBe(first);
  });

  it('a held key the cache evicted (zeroed) is never used: the row resolves its key again', async () => {
    const { keyring, cipher, values, joinedOf } = await sealed({ maxEntries: 2 });
    await keyring.readKey('c-north', 1);
    const row: RowKey = { joined: await joinedOf(P1), held: null };
    expect(cipher.decrypt('c-north', aadOf(P1, 'phone'), values.get(`${P1}:phone`)!, row)).toBe(`phone of ${P1}`);
    const held = row.held!;
    // P2's key and a second clinic's key push P1's out: its bytes are zeroed.
    await cipher.decrypt('c-north', aadOf(P2, 'phone'), values.get(`${P2}:phone`)!);
    await keyring.writeKey('c-south');
    expect(held.live).toBe(false);
    expect(held.key.key.equals(Buffer.alloc(32))).toBe(true);
    expect(await cipher.decrypt('c-north', aadOf(P1, 'email'), values.get(`${P1}:email`)!, row)).toBe(`email of ${P1}`);
    expect(row.held).not.toBe(held);
  });

  it('a held key past its maximum age is not used', async () => {
    // The age is long enough that a loaded machine cannot age the clinic key between its read and
    // the row's first decryption (which then would not be synchronous, and hold nothing).
    const maxAgeMs = 400;
    const { keyring, cipher, values, joinedOf } = await sealed({ maxAgeMs });
    const row: RowKey = { joined: await joinedOf(P1), held: null };
    const read = performance.now();
    await keyring.readKey('c-north', 1);
    expect(cipher.decrypt('c-north', aadOf(P1, 'phone'), values.get(`${P1}:phone`)!, row)).toBe(`phone of ${P1}`);
    const held = row.held!;
    expect(held.live).toBe(true);
    await new Promise((r) => setTimeout(r, read + maxAgeMs + 20 - performance.now()));
    expect(await cipher.decrypt('c-north', aadOf(P1, 'email'), values.get(`${P1}:email`)!, row)).toBe(`email of ${P1}`);
    expect(held.live).toBe(false);
    expect(held.key.key.equals(Buffer.alloc(32))).toBe(true);
  });

  it('a shredded patient (no joined key, the marker in its columns) is refused as before', async () => {
    const { store, cipher, values } = await sealed();
    store.shredPatient(P1);
    await failed(() => cipher.decrypt('c-north', aadOf(P1, 'phone'), values.get(`${P1}:phone`)!, { joined: null, held: null }), 'KEY_UNAVAILABLE', 'shredded');
  });
});
