import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blindIndex } from '../../../src/crypto/blind-index.ts';
import { createKeyring, type Keyring, type KeyStore } from '../../../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../../../src/crypto/keys/local.ts';
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
  it('never wraps a patient key: refused, or wrapped under the real clinic key', async () => {
    const real = createPgKeyStore(pool);
    const outcomes = { wrappedUnderRealKey: 0, refused: 0 };
    for (let turns = 0; turns < TURNS; turns++) {
      let keyring: Keyring;
      let armed = false;
      const store: KeyStore = {
        ...real,
        latestPatientKey: async (patientId) => {
          const record = await real.latestPatientKey(patientId);
          if (armed) {
            armed = false;
            afterTurns(turns, () => useUp(() => keyring.readKey(CLINIC, 1)));
          }
          return record;
        },
      };
      keyring = createKeyring({ provider, store, cache: { maxUses: USES } });
      const clinicKey = Buffer.from((await keyring.writeKey(CLINIC)).key);
      expect(clinicKey.equals(zero)).toBe(false);
      const patientId = randomUUID();
      armed = true;
      const made = await keyring.patientWriteKey(CLINIC, patientId).then(
        () => null,
        (e: unknown) => e,
      );
      const { rows } = await pool.query<{ wrapped: Buffer }>('SELECT wrapped FROM phigate.patient_keys WHERE patient_id = $1', [patientId]);
      // Whatever was stored opens with the clinic's key and not with zeros.
      for (const { wrapped } of rows) {
        expect(() => openPatientKey({ scope: CLINIC, version: 1, key: zero }, patientId, 1, wrapped), `turn ${turns}: a patient key wrapped under a zero key`).toThrow();
        expect(openPatientKey({ scope: CLINIC, version: 1, key: clinicKey }, patientId, 1, wrapped).patientId).toBe(patientId);
      }
      if (made === null) {
        expect(rows).toHaveLength(1);
        outcomes.wrappedUnderRealKey++;
      } else {
        expect(isPhigateError(made) && made.code === 'KEY_UNAVAILABLE' && made.reason === 'invalid_key', String(made)).toBe(true);
        expect(rows).toHaveLength(0);
        outcomes.refused++;
      }
    }
    // Both sides of the race were reached: the sweep is not vacuous.
    expect(outcomes.refused).toBeGreaterThan(0);
    expect(outcomes.wrappedUnderRealKey).toBeGreaterThan(0);
  });

  it('never derives a blind-index key from it: refused, or the real digest', async () => {
    const store = createPgKeyStore(pool);
    const ssn = '123456789';
    let expected: Buffer | null = null;
    const outcomes = { real: 0, refused: 0 };
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
      if (Buffer.isBuffer(key)) {
        expect(blindIndex(key, ssn).equals(expected), `turn ${turns}: a blind-index key derived from a zeroed root`).toBe(true);
        outcomes.real++;
      } else {
        expect(isPhigateError(key) && key.code === 'KEY_UNAVAILABLE' && key.reason === 'invalid_key', String(key)).toBe(true);
        outcomes.refused++;
      }
    }
    expect(outcomes.refused).toBeGreaterThan(0);
    expect(outcomes.real).toBeGreaterThan(0);
  });
});
