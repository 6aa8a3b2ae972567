import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blindIndex } from '../../../src/crypto/blind-index.ts';
import { createKeyring, type Keyring, type KeyStore } from '../../../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../../../src/crypto/keys/local.ts';
import type { KeyProvider } from '../../../src/crypto/keys/provider.ts';
import { openPatientKey } from '../../../src/crypto/patient-key.ts';
import { createPgKeyStore } from '../../../src/db/key-store.ts';
import { createPool, type Pool } from '../../../src/db/pool.ts';
import { isPhigateError } from '../../../src/errors.ts';
import { createTestDatabase, type TestDatabase } from '../../support/db.ts';

// A cached key's bytes are zero-filled the moment the cache lets it go (age, uses, room), and the
// keyring hands out the cached Buffer itself. A caller that got it from a cache hit and uses it
// after an await can find it zeroed: another request in between used up the key's uses, or it
// aged out. Sealing a value under a zeroed key is refused (envelope.ts); these are the two other
// things a zeroed key could be used for: wrapping a new patient key (stored in phigate.patient_keys,
// where a key wrapped under thirty-two zero bytes is a key in plaintext to anyone who reads the
// table) and deriving a blind-index key (whose digests anyone could then recompute for every SSN).
// Both refuse a zeroed key (invalid_key); the keyring then asks for the key again, which the cache
// no longer holds and unwraps afresh, so a legitimate write is not failed by the race, and counts
// that in its stats (zeroedKeyRetries): the sweep must see both sides, a retry and none.
//
// The race is made with real keys and a real key table: the key's uses are used up by reads
// (readKey, blindIndexAt, as concurrent requests would) after a number of microtask turns swept
// from 0 to 24, so that some sweep lands between the cache hit and the use.

const CLINIC = 'c-north';
const USES = 1_000;
const TURNS = 25;

let db: TestDatabase;
let pool: Pool;
const provider = createLocalKeyProvider(randomBytes(32));
beforeAll(async () => {
  db = await createTestDatabase();
  pool = createPool(db.directAppUrl, { max: 2 });
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

/** Runs `fn` after `turns` microtask turns. */
function afterTurns(turns: number, fn: () => void): void {
  if (turns === 0) fn();
  else queueMicrotask(() => afterTurns(turns - 1, fn));
}

/** Reads `use` until the key it uses is dropped from the cache (and zero-filled) by its use bound. */
function useUp(use: () => unknown): void {
  for (let i = 0; i <= USES; i++) {
    const r = use();
    if (r instanceof Promise) {
      r.catch(() => undefined);
      return;
    }
  }
}

const zero = Buffer.alloc(32);

describe('a key zero-filled by the cache between its hit and its use', () => {
  // The store lookup each write path awaits just before it asks for the clinic key: the race is armed there.
  const writes = [
    { path: 'patientWriteKey', write: (k: Keyring, patientId: string) => k.patientWriteKey(CLINIC, patientId) },
    { path: 'preparePatientWriteKeys', write: (k: Keyring, patientId: string) => k.preparePatientWriteKeys(CLINIC, [patientId]) },
  ];
  it.each(writes)('$path never wraps a patient key under zeros: wrapped under the real clinic key, asked again when it was zeroed', async ({ write }) => {
    const real = createPgKeyStore(pool);
    const outcomes = { retried: 0, firstKey: 0 };
    for (let turns = 0; turns < TURNS; turns++) {
      let keyring: Keyring;
      let armed = false;
      const arm = () => {
        if (!armed) return;
        armed = false;
        afterTurns(turns, () => useUp(() => keyring.readKey(CLINIC, 1)));
      };
      const store: KeyStore = {
        ...real,
        latestPatientKey: async (patientId) => {
          const record = await real.latestPatientKey(patientId);
          arm();
          return record;
        },
        latestPatientKeys: async (patientIds) => {
          const records = await real.latestPatientKeys(patientIds);
          arm();
          return records;
        },
      };
      keyring = createKeyring({ provider, store, cache: { maxUses: USES } });
      const clinicKey = Buffer.from((await keyring.writeKey(CLINIC)).key);
      expect(clinicKey.equals(zero)).toBe(false);
      const patientId = randomUUID();
      armed = true;
      const made = await write(keyring, patientId).then(
        () => null,
        (e: unknown) => e,
      );
      const { rows } = await pool.query<{ wrapped: Buffer }>('SELECT wrapped FROM phigate.patient_keys WHERE patient_id = $1', [patientId]);
      // Whatever was stored opens with the clinic's key and not with zeros.
      for (const { wrapped } of rows) {
        expect(() => openPatientKey({ scope: CLINIC, version: 1, key: zero }, patientId, 1, wrapped), `turn ${turns}: a patient key wrapped under a zero key`).toThrow();
        expect(openPatientKey({ scope: CLINIC, version: 1, key: clinicKey }, patientId, 1, wrapped).patientId).toBe(patientId);
      }
      expect(made, `turn ${turns}`).toBeNull();
      expect(rows).toHaveLength(1);
      if (keyring.stats.zeroedKeyRetries > 0) outcomes.retried++;
      else outcomes.firstKey++;
    }
    // Both sides of the race were reached: the sweep is not vacuous.
    expect(outcomes.retried).toBeGreaterThan(0);
    expect(outcomes.firstKey).toBeGreaterThan(0);
  });

  it('never derives a blind-index key from it: the real digest, asked again when it was zeroed', async () => {
    const store = createPgKeyStore(pool);
    const ssn = '123456789';
    let expected: Buffer | null = null;
    const outcomes = { retried: 0, firstKey: 0 };
    for (let turns = 0; turns < TURNS; turns++) {
      const keyring = createKeyring({ provider, store, cache: { maxUses: USES } });
      // The cached root and its version, as a gateway that has served a lookup holds them.
      const digest = keyring.blindIndexAt('patients.ssn', CLINIC, 1, ssn);
      const first = digest instanceof Promise ? await digest : digest;
      expected ??= first;
      expect(first.equals(expected)).toBe(true);
      const derived = keyring.blindIndexKey('patients.ssn', CLINIC);
      afterTurns(turns, () => useUp(() => keyring.blindIndexAt('patients.ssn', CLINIC, 1, ssn)));
      const key = await derived.then(
        (k) => k,
        (e: unknown) => e,
      );
      expect(Buffer.isBuffer(key), `turn ${turns}: ${String(key)}`).toBe(true);
      expect(blindIndex(key as Buffer, ssn).equals(expected), `turn ${turns}: a blind-index key derived from a zeroed root`).toBe(true);
      if (keyring.stats.zeroedKeyRetries > 0) outcomes.retried++;
      else outcomes.firstKey++;
    }
    expect(outcomes.retried).toBeGreaterThan(0);
    expect(outcomes.firstKey).toBeGreaterThan(0);
  });

  it('fails closed when the key is still zero after its retries: nothing wrapped, nothing derived', async () => {
    // The clinic's data key and the index root stored, as by a gateway that has written before.
    const real = createKeyring({ provider, store: createPgKeyStore(pool) });
    await real.writeKey(CLINIC);
    await real.blindIndexKey('patients.ssn', CLINIC);
    // A key service answering zeros: every ask gives a zero key, as a race lost on every retry would.
    const zeros: KeyProvider = { ...provider, decryptDataKey: async () => Buffer.alloc(32) };
    const keyring = createKeyring({ provider: zeros, store: createPgKeyStore(pool), cache: { maxUses: USES } });
    const patientId = randomUUID();
    const made = await keyring.patientWriteKey(CLINIC, patientId).then(
      () => null,
      (e: unknown) => e,
    );
    expect(isPhigateError(made) && made.code === 'KEY_UNAVAILABLE' && made.reason === 'invalid_key', String(made)).toBe(true);
    expect(keyring.stats.zeroedKeyRetries).toBe(2);
    const { rows } = await pool.query('SELECT 1 FROM phigate.patient_keys WHERE patient_id = $1', [patientId]);
    expect(rows).toHaveLength(0);
    const derived = await keyring.blindIndexKey('patients.ssn', CLINIC).then(
      () => null,
      (e: unknown) => e,
    );
    expect(isPhigateError(derived) && derived.code === 'KEY_UNAVAILABLE' && derived.reason === 'invalid_key', String(derived)).toBe(true);
    expect(keyring.stats.zeroedKeyRetries).toBe(4);
  });
});
