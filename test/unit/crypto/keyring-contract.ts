import { describe, expect, it } from 'vitest';
import { openField, sealField } from '../../../src/crypto/envelope.ts';
import { createKeyring } from '../../../src/crypto/keys/keyring.ts';
import type { KeyPurpose, KeyStore, PatientKeyRecord, WrappedKeyRecord } from '../../../src/crypto/keys/keyring.ts';
import type { KeyProvider } from '../../../src/crypto/keys/provider.ts';
import { failed, rejected } from './expect-error.ts';

/**
 * Test double for the phigate.keyring table (PK purpose, scope, version): the same contract as
 * the PostgreSQL store, held in memory. `put` writes around the contract, to stage tampering.
 */
export interface MemoryKeyStore extends KeyStore {
  records(): WrappedKeyRecord[];
  put(record: WrappedKeyRecord): void;
  /** What `phigate keys shred` does to phigate.patient_keys. */
  shredPatient(patientId: string): void;
  failing: boolean;
}

export function createMemoryKeyStore(): MemoryKeyStore {
  const rows = new Map<string, WrappedKeyRecord>();
  const patientRows = new Map<string, PatientKeyRecord>();
  const id = (purpose: KeyPurpose, scope: string, version: number): string => JSON.stringify([purpose, scope, version]);
  const copy = (r: WrappedKeyRecord): WrappedKeyRecord => ({ ...r, wrapped: Buffer.from(r.wrapped) });
  // Like a database round trip: answers arrive on a later tick, so callers really do interleave.
  const later = async (): Promise<void> => {
    await new Promise((resolve) => setImmediate(resolve));
    if (store.failing) throw new Error('connection terminated unexpectedly');
  };
  const store: MemoryKeyStore = {
    failing: false,
    async latest(purpose, scope) {
      await later();
      let best: WrappedKeyRecord | null = null;
      for (const r of rows.values()) {
        if (r.purpose === purpose && r.scope === scope && (!best || r.version > best.version)) best = r;
      }
      return best && copy(best);
    },
    async get(purpose, scope, version) {
      await later();
      const r = rows.get(id(purpose, scope, version));
      return r ? copy(r) : null;
    },
    async insert(record) {
      await later();
      const key = id(record.purpose, record.scope, record.version);
      if (rows.has(key)) return false;
      rows.set(key, copy(record));
      return true;
    },
    async latestPatientKey(patientId) {
      await later();
      const mine = [...patientRows.values()].filter((r) => r.patientId === patientId).sort((a, b) => b.version - a.version);
      return mine[0] ? { ...mine[0] } : null;
    },
    async patientKeys(refs) {
      await later();
      return refs.flatMap((r) => {
        const found = patientRows.get(`${r.version}:${r.patientId}`);
        return found ? [{ ...found }] : [];
      });
    },
    async insertPatientKey(record) {
      await later();
      const key = `${record.version}:${record.patientId}`;
      if (patientRows.has(key)) return false;
      patientRows.set(key, { ...record, wrapped: Buffer.from(record.wrapped) });
      return true;
    },
    async latestPatientKeys(patientIds) {
      await later();
      return patientIds.flatMap((id) => {
        const mine = [...patientRows.values()].filter((r) => r.patientId === id).sort((a, b) => b.version - a.version);
        return mine[0] ? [{ ...mine[0] }] : [];
      });
    },
    async insertPatientKeys(records) {
      await later();
      const inserted = new Set<string>();
      for (const record of records) {
        const key = `${record.version}:${record.patientId}`;
        if (patientRows.has(key)) continue;
        patientRows.set(key, { ...record, wrapped: Buffer.from(record.wrapped) });
        inserted.add(record.patientId);
      }
      return inserted;
    },
    shredPatient(patientId) {
      let top = 0;
      for (const [k, r] of patientRows) {
        if (r.patientId !== patientId) continue;
        patientRows.set(k, { ...r, wrapped: null });
        top = Math.max(top, r.version);
      }
      patientRows.set(`${top + 1}:${patientId}`, { patientId, version: top + 1, clinicId: '', clinicVersion: 0, wrapped: null });
    },
    records: () => [...rows.values()].map(copy),
    put(record) {
      rows.set(id(record.purpose, record.scope, record.version), copy(record));
    },
  };
  return store;
}

export interface ProviderHarness {
  readonly provider: KeyProvider;
  /** Makes every KMS call fail until `repairKms`. */
  breakKms(): Promise<void>;
  repairKms(): Promise<void>;
  /** Requests the KMS itself received, when the harness can observe them. */
  remoteCalls(): number | null;
  close(): Promise<void>;
}

const aad = { table: 'patients', column: 'ssn', rowId: 'row-1' };

/** The keyring's behaviour, run against each key provider. */
export function describeKeyring(name: string, setup: () => Promise<ProviderHarness>): void {
  describe(`keyring over the ${name} provider`, () => {
    async function withHarness(test: (h: ProviderHarness, store: MemoryKeyStore) => Promise<void>): Promise<void> {
      const harness = await setup();
      try {
        await test(harness, createMemoryKeyStore());
      } finally {
        await harness.close();
      }
    }

    it('creates a clinic key once; the next call makes no KMS call', () =>
      withHarness(async ({ provider }, store) => {
        const keyring = createKeyring({ provider, store });
        const first = await keyring.writeKey('clinic-a');
        expect(first.version).toBe(1);
        expect(first.scope).toBe('clinic-a');
        expect(first.key.length).toBe(32);
        expect(keyring.stats.kmsCalls).toBe(1);
        const second = await keyring.writeKey('clinic-a');
        expect(second.key.equals(first.key)).toBe(true);
        expect(keyring.stats.kmsCalls).toBe(1);
        await keyring.readKey('clinic-a', 1);
        expect(keyring.stats.kmsCalls).toBe(1);
        const [record] = store.records();
        expect(store.records()).toHaveLength(1);
        expect(record).toMatchObject({ purpose: 'data', scope: 'clinic-a', version: 1, provider: provider.name, keyRef: provider.keyRef });
        expect(record!.wrapped.includes(first.key)).toBe(false);
      }));

    it('gives each clinic its own key', () =>
      withHarness(async ({ provider }, store) => {
        const keyring = createKeyring({ provider, store });
        const a = await keyring.writeKey('clinic-a');
        const b = await keyring.writeKey('clinic-b');
        expect(a.key.equals(b.key)).toBe(false);
      }));

    it('unwraps a stored key once on another replica, then serves it from memory', () =>
      withHarness(async ({ provider }, store) => {
        const original = await createKeyring({ provider, store }).writeKey('clinic-a');
        const replica = createKeyring({ provider, store });
        expect((await replica.writeKey('clinic-a')).key.equals(original.key)).toBe(true);
        expect(replica.stats.kmsCalls).toBe(1);
        await replica.writeKey('clinic-a');
        await replica.readKey('clinic-a', 1);
        expect(replica.stats.kmsCalls).toBe(1);
      }));

    it('coalesces 50 concurrent reads of an uncached key into one KMS call', () =>
      withHarness(async ({ provider, remoteCalls }, store) => {
        const original = await createKeyring({ provider, store }).writeKey('clinic-a');
        const before = remoteCalls();
        const replica = createKeyring({ provider, store });
        const keys = await Promise.all(Array.from({ length: 50 }, () => replica.readKey('clinic-a', 1)));
        expect(keys.every((k) => k.key.equals(original.key))).toBe(true);
        expect(replica.stats.kmsCalls).toBe(1);
        expect(replica.stats.cacheMisses).toBe(50);
        if (before !== null) expect(remoteCalls()).toBe(before + 1);
      }));

    it('coalesces 50 concurrent first writes for a new clinic into one key', () =>
      withHarness(async ({ provider }, store) => {
        const keyring = createKeyring({ provider, store });
        const keys = await Promise.all(Array.from({ length: 50 }, () => keyring.writeKey('clinic-new')));
        expect(new Set(keys.map((k) => k.key.toString('hex'))).size).toBe(1);
        expect(keyring.stats.kmsCalls).toBe(1);
        expect(store.records()).toHaveLength(1);
      }));

    it('settles a create race between replicas on the key that was stored', () =>
      withHarness(async ({ provider }, store) => {
        const replicas = [createKeyring({ provider, store }), createKeyring({ provider, store }), createKeyring({ provider, store })];
        const keys = await Promise.all(replicas.map((r) => r.writeKey('clinic-a')));
        expect(store.records()).toHaveLength(1);
        expect(keys.every((k) => k.version === 1 && k.key.equals(keys[0]!.key))).toBe(true);
        const sealed = sealField(keys[1]!, aad, 'value');
        expect(openField(await createKeyring({ provider, store }).readKey('clinic-a', 1), aad, sealed)).toBe('value');
      }));

    it('does not cache a failed KMS call: the next call retries', () =>
      withHarness(async ({ provider, breakKms, repairKms }, store) => {
        const original = await createKeyring({ provider, store }).writeKey('clinic-a');
        const replica = createKeyring({ provider, store });
        await breakKms();
        const failures = await Promise.allSettled(Array.from({ length: 5 }, () => replica.readKey('clinic-a', 1)));
        expect(failures.every((f) => f.status === 'rejected')).toBe(true);
        await failed(() => replica.readKey('clinic-a', 1), 'KEY_UNAVAILABLE');
        await rejected(createKeyring({ provider, store }).writeKey('clinic-new'), 'KEY_UNAVAILABLE');
        await repairKms();
        expect((await replica.readKey('clinic-a', 1)).key.equals(original.key)).toBe(true);
      }));

    it('rotates to a new version while old ciphertexts stay readable', () =>
      withHarness(async ({ provider }, store) => {
        const keyring = createKeyring({ provider, store });
        const v1 = await keyring.writeKey('clinic-a');
        const old = sealField(v1, aad, 'before rotation');
        expect(await keyring.rotate('data', 'clinic-a')).toBe(2);
        const v2 = await keyring.writeKey('clinic-a');
        expect(v2.version).toBe(2);
        expect(v2.key.equals(v1.key)).toBe(false);
        const restarted = createKeyring({ provider, store });
        expect(openField(await restarted.readKey('clinic-a', 1), aad, old)).toBe('before rotation');
        expect((await restarted.writeKey('clinic-a')).version).toBe(2);
      }));

    it('sees a rotation made on another replica once its latest-version cache expires', () =>
      withHarness(async ({ provider }, store) => {
        const eager = createKeyring({ provider, store, latestTtlMs: 0 });
        const lazy = createKeyring({ provider, store, latestTtlMs: 60_000 });
        expect((await eager.writeKey('clinic-a')).version).toBe(1);
        expect((await lazy.writeKey('clinic-a')).version).toBe(1);
        await createKeyring({ provider, store }).rotate('data', 'clinic-a');
        expect((await eager.writeKey('clinic-a')).version).toBe(2);
        expect((await lazy.writeKey('clinic-a')).version).toBe(1);
      }));

    it('refuses a wrapped key swapped to another clinic or version', () =>
      withHarness(async ({ provider }, store) => {
        await createKeyring({ provider, store }).writeKey('clinic-a');
        const [record] = store.records();
        store.put({ ...record!, scope: 'clinic-b' });
        store.put({ ...record!, version: 2 });
        const keyring = createKeyring({ provider, store });
        await failed(() => keyring.readKey('clinic-b', 1), 'KEY_UNAVAILABLE', 'unwrap_failed');
        await rejected(keyring.writeKey('clinic-b'), 'KEY_UNAVAILABLE', 'unwrap_failed');
        await failed(() => keyring.readKey('clinic-a', 2), 'KEY_UNAVAILABLE', 'unwrap_failed');
      }));

    it('refuses a wrapped key recorded under another master key without asking KMS', () =>
      withHarness(async ({ provider }, store) => {
        await createKeyring({ provider, store }).writeKey('clinic-a');
        const [record] = store.records();
        store.put({ ...record!, keyRef: 'some-other-master-key' });
        const keyring = createKeyring({ provider, store });
        await failed(() => keyring.readKey('clinic-a', 1), 'KEY_UNAVAILABLE', 'wrong_master_key');
        expect(keyring.stats.kmsCalls).toBe(0);
      }));

    it('reports a missing version or a failing key store as KEY_UNAVAILABLE', () =>
      withHarness(async ({ provider }, store) => {
        const keyring = createKeyring({ provider, store });
        await failed(() => keyring.readKey('clinic-a', 9), 'KEY_UNAVAILABLE', 'key_not_found');
        await failed(() => keyring.readKey('clinic-a', 0), 'KEY_UNAVAILABLE', 'key_not_found');
        expect(keyring.stats.kmsCalls).toBe(0);
        store.failing = true;
        const e = await rejected(keyring.writeKey('clinic-a'), 'KEY_UNAVAILABLE', 'key_store_error');
        expect(e.message).not.toContain('connection terminated');
        store.failing = false;
        expect((await keyring.writeKey('clinic-a')).version).toBe(1);
      }));

    it('derives blind-index keys per column and clinic from one root key, created once', () =>
      withHarness(async ({ provider }, store) => {
        const keyring = createKeyring({ provider, store });
        const ssnA = await keyring.blindIndexKey('patients.ssn', 'clinic-a');
        const mrnA = await keyring.blindIndexKey('patients.mrn', 'clinic-a');
        const ssnB = await keyring.blindIndexKey('patients.ssn', 'clinic-b');
        expect(new Set([ssnA, mrnA, ssnB].map((k) => k.toString('hex'))).size).toBe(3);
        expect(keyring.stats.kmsCalls).toBe(1);
        expect(store.records()).toMatchObject([{ purpose: 'index', scope: '*', version: 1 }]);
        const replica = createKeyring({ provider, store });
        expect((await replica.blindIndexKey('patients.ssn', 'clinic-a')).equals(ssnA)).toBe(true);
      }));

    it('refuses to rotate the blind-index root, which would orphan every stored index', () =>
      withHarness(async ({ provider }, store) => {
        const keyring = createKeyring({ provider, store });
        await rejected(keyring.rotate('index', '*'), 'BAD_USER_INPUT', 'index_rotation_unsupported');
        expect(store.records()).toHaveLength(0);
      }));

    it('evicts the least recently used key beyond maxEntries', () =>
      withHarness(async ({ provider }, store) => {
        const keyring = createKeyring({ provider, store, cache: { maxEntries: 2 } });
        await keyring.writeKey('clinic-a');
        await keyring.writeKey('clinic-b');
        await keyring.readKey('clinic-a', 1);
        await keyring.writeKey('clinic-c');
        expect(keyring.stats.kmsCalls).toBe(3);
        await keyring.readKey('clinic-a', 1);
        expect(keyring.stats.kmsCalls).toBe(3);
        await keyring.readKey('clinic-b', 1);
        expect(keyring.stats.kmsCalls).toBe(4);
      }));
  });
}
