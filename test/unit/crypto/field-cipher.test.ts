import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { keyVersionOf } from '../../../src/crypto/envelope.ts';
import { createFieldCipher } from '../../../src/crypto/field-cipher.ts';
import { createKeyring } from '../../../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../../../src/crypto/keys/local.ts';
import { failed, rejected } from './expect-error.ts';
import { createMemoryKeyStore } from './keyring-contract.ts';

function setup() {
  const keyring = createKeyring({ provider: createLocalKeyProvider(randomBytes(32)), store: createMemoryKeyStore() });
  return { keyring, cipher: createFieldCipher(keyring) };
}

const ssn = { table: 'patients', column: 'ssn', rowId: 'row-1', patientId: 'row-1' };
const phone = { table: 'patients', column: 'phone', rowId: 'row-1', patientId: 'row-1' };

describe('createFieldCipher', () => {
  it('round-trips through the clinic key and counts by column', async () => {
    const { cipher } = setup();
    const sealed = await cipher.encrypt('clinic-a', ssn, '123-45-6789');
    await cipher.encrypt('clinic-a', phone, '+1 555 0100');
    expect(await cipher.decrypt('clinic-a', ssn, sealed)).toBe('123-45-6789');
    expect(await cipher.decrypt('clinic-a', ssn, sealed)).toBe('123-45-6789');
    expect(cipher.stats.encrypts).toBe(2);
    expect(cipher.stats.decrypts).toBe(2);
    expect(cipher.stats.decryptsByColumn.get('patients.ssn')).toBe(2);
    // What a test of a denied field relies on: never attempted means no entry at all.
    expect(cipher.stats.decryptsByColumn.has('patients.phone')).toBe(false);
  });

  it("refuses another clinic's ciphertext", async () => {
    const { cipher } = setup();
    const sealed = await cipher.encrypt('clinic-a', ssn, '123-45-6789');
    await cipher.encrypt('clinic-b', ssn, '987-65-4321');
    await failed(() => cipher.decrypt('clinic-b', ssn, sealed), 'KEY_UNAVAILABLE', 'decrypt_failed');
  });

  it('counts a failed attempt as a decryption', async () => {
    const { cipher } = setup();
    const sealed = await cipher.encrypt('clinic-a', ssn, '123-45-6789');
    await failed(() => cipher.decrypt('clinic-a', phone, sealed), 'KEY_UNAVAILABLE', 'decrypt_failed');
    await failed(() => cipher.decrypt('clinic-a', phone, Buffer.alloc(3)), 'KEY_UNAVAILABLE', 'malformed_ciphertext');
    expect(cipher.stats.decryptsByColumn.get('patients.phone')).toBe(2);
  });

  it('encrypts under the newest key after rotation and still reads older values', async () => {
    const { keyring, cipher } = setup();
    const before = await cipher.encrypt('clinic-a', ssn, 'old value');
    await keyring.rotate('data', 'clinic-a');
    const after = await cipher.encrypt('clinic-a', ssn, 'new value');
    expect(keyVersionOf(before)).toBe(1);
    expect(keyVersionOf(after)).toBe(2);
    expect(await cipher.decrypt('clinic-a', ssn, before)).toBe('old value');
    expect(await cipher.decrypt('clinic-a', ssn, after)).toBe('new value');
  });

  it('makes no KMS call in the steady state', async () => {
    const { keyring, cipher } = setup();
    const sealed = await cipher.encrypt('clinic-a', ssn, 'value');
    const calls = keyring.stats.kmsCalls;
    for (let i = 0; i < 100; i++) {
      await cipher.decrypt('clinic-a', ssn, sealed);
      await cipher.encrypt('clinic-a', ssn, 'value');
    }
    expect(keyring.stats.kmsCalls).toBe(calls);
  });
});
