import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeUnavailable, useAead, type AeadMode } from '../../../src/crypto/aead.ts';
import { keyVersionOf, openField, sealField } from '../../../src/crypto/envelope.ts';
import type { DataKey, FieldAad, PatientKey } from '../../../src/crypto/envelope.ts';
import { sealGcm } from '../../../src/crypto/aead.ts';
import { lengthPrefixed } from '../../../src/crypto/length-prefixed.ts';
import { thrown } from './expect-error.ts';

const key: DataKey = { scope: 'clinic-a', version: 3, key: randomBytes(32) };
const aad: FieldAad = { table: 'patients', column: 'ssn', rowId: '7f9c1e4a-0000-4000-8000-000000000001' };
const secret = '123-45-6789';

// Every case under each AES-GCM implementation: the addon when it is built, and node:crypto.
const implementations: AeadMode[] = nativeUnavailable() === null ? ['native', 'node'] : ['node'];

describe.each(implementations)('sealField / openField (PHIGATE_AEAD=%s)', (mode) => {
  beforeAll(() => void useAead(mode));
  afterAll(() => void useAead('auto'));

  it('round-trips text, including empty, non-ASCII and a leading byte-order mark', () => {
    for (const text of [secret, '', 'Zoë Ångström 李小龙 🩺', '\uFEFFstarts with a BOM', 'x'.repeat(100_000)]) {
      expect(openField(key, aad, sealField(key, aad, text))).toBe(text);
    }
  });

  it('writes format 1, the key version, a 12-byte nonce and a 16-byte tag', () => {
    const sealed = sealField(key, aad, secret);
    expect(sealed.length).toBe(1 + 4 + 12 + Buffer.byteLength(secret) + 16);
    expect(sealed[0]).toBe(0x01);
    expect(sealed.readUInt32BE(1)).toBe(3);
    expect(keyVersionOf(sealed)).toBe(3);
    expect(sealed.includes(Buffer.from(secret))).toBe(false);
  });

  it('uses a fresh nonce each time', () => {
    const a = sealField(key, aad, secret);
    const b = sealField(key, aad, secret);
    expect(a.equals(b)).toBe(false);
    expect(a.subarray(5, 17).equals(b.subarray(5, 17))).toBe(false);
  });

  it('opens a ciphertext written by format 1 (pinned: existing data must stay readable)', () => {
    // Produced once and cross-checked with an independent AES-GCM implementation.
    const pinnedKey: DataKey = { scope: 'clinic-1', version: 7, key: Buffer.from(Array.from({ length: 32 }, (_, i) => i)) };
    const pinned = Buffer.from('0100000007abe0e8ad0180e633ad15510fe30e48123333d31d4bc25973d4dafd4df872d4eae47fc2e3df99e4b7', 'hex');
    expect(openField(pinnedKey, { table: 'patients', column: 'ssn', rowId: 'row-1' }, pinned)).toBe('pinned value');
  });

  it.each([
    ['row id', { ...aad, rowId: '7f9c1e4a-0000-4000-8000-000000000002' }],
    ['column', { ...aad, column: 'mrn' }],
    ['table', { ...aad, table: 'encounters' }],
  ])('refuses a ciphertext moved to another %s', (_, moved) => {
    const sealed = sealField(key, aad, secret);
    thrown(() => openField(key, moved, sealed), 'KEY_UNAVAILABLE', 'decrypt_failed');
  });

  it('refuses a ciphertext moved to another clinic, even under the same key bytes', () => {
    const sealed = sealField(key, aad, secret);
    thrown(() => openField({ ...key, scope: 'clinic-b' }, aad, sealed), 'KEY_UNAVAILABLE', 'decrypt_failed');
  });

  it('opens values sealed before (the AAD is built from cached parts, its bytes never change)', () => {
    // Sealed by the code of commit cf0a10b under fixed keys: if the AAD's layout changed, every
    // value already in a database would stop opening.
    const clinicKey: DataKey = { scope: 'clinic-east', version: 3, key: Buffer.alloc(32, 7) };
    const patientKey: PatientKey = { scope: 'clinic-east', version: 3, key: Buffer.alloc(32, 9), patientId: '7f9c1e4a-0000-4000-8000-000000000001', patientVersion: 2 };
    const sealedSsn = Buffer.from('020000000300000002f50cc97639d6612080f2fa4a64704787fe6e6d14de08e867e9183043813e7321087b793d6496db', 'hex');
    const notes: FieldAad = { table: 'encounters', column: 'notes', rowId: '5a1d0c3e-0000-4000-8000-0000000000aa' };
    expect(openField(clinicKey, aad, Buffer.from('0100000003e4ff80dfd104219e35825f9a444aa071a1709339c344e89a2a5daea9c0d75bb873bd42159fe409', 'hex'))).toBe(secret);
    expect(openField(patientKey, aad, sealedSsn)).toBe(secret);
    expect(openField(patientKey, notes, Buffer.from('0200000003000000023cdc5be06d87d0d667ec36466da62285d1fb7f01fbe5e7ad619504db16d9a03e7908543143e6586bf64f1231f1aada3e38', 'hex'))).toBe('Ünïcödé notes ✓');
    // Another patient's key of the same versions, and the same key under another patient id, open nothing.
    thrown(() => openField({ ...patientKey, key: Buffer.alloc(32, 8) }, aad, sealedSsn), 'KEY_UNAVAILABLE', 'decrypt_failed');
    const otherPatient: PatientKey = { ...patientKey, patientId: '7f9c1e4a-0000-4000-8000-000000000002' };
    thrown(() => openField(otherPatient, aad, sealedSsn), 'KEY_UNAVAILABLE', 'decrypt_failed');
  });

  it('keeps the AAD fields apart: ("ab", "c") is not ("a", "bc")', () => {
    const sealed = sealField(key, { table: 'ab', column: 'c', rowId: 'r' }, secret);
    thrown(() => openField(key, { table: 'a', column: 'bc', rowId: 'r' }, sealed), 'KEY_UNAVAILABLE', 'decrypt_failed');
  });

  it('binds each value to its own row and column when one key opens many, interleaved (the AAD is built in a reused buffer)', () => {
    const places = Array.from({ length: 60 }, (_, i) => ({ table: 'patients', column: ['ssn', 'mrn', 'phone'][i % 3]!, rowId: `7f9c1e4a-0000-4000-8000-${String(i).padStart(12, '0')}` }));
    const sealed = places.map((p, i) => sealField(key, p, `value ${i}`));
    expect(places.map((p, i) => openField(key, p, sealed[i]!))).toEqual(places.map((_, i) => `value ${i}`));
    for (let i = 1; i < places.length; i++) thrown(() => openField(key, places[i - 1]!, sealed[i]!), 'KEY_UNAVAILABLE', 'decrypt_failed');
    // A long row id after short ones: the buffer grows, the bytes stay right.
    const long = { ...aad, rowId: 'r'.repeat(5_000) };
    expect(openField(key, long, sealField(key, long, secret))).toBe(secret);
    expect(openField(key, aad, sealField(key, aad, secret))).toBe(secret);
  });

  it('binds every value of one row to its own column when the row id and its key repeat from value to value, columns of any length in any order', () => {
    // The AAD of consecutive values of one row and key is built by moving the row id and the
    // parts after it: each is checked against the AAD spelt out, and against a swap of columns.
    const rowId = '7f9c1e4a-0000-4000-8000-00000000abcd';
    const columns = ['ssn', 'address', 'mrn', 'x', 'a-much-longer-column-name', 'ssn', 'x', 'address'];
    const header = Buffer.from([0x01, 0, 0, 0, key.version]);
    const spelt = (column: string) => {
      const nonce = randomBytes(12);
      const bound = lengthPrefixed(['phigate/field/v1', header, 'patients', column, rowId, key.scope, String(key.version)]);
      return Buffer.concat([header, nonce, sealGcm(key.key, nonce, bound, Buffer.from(`${column} of the row`))]);
    };
    const sealed = columns.map(spelt);
    for (let round = 0; round < 2; round++) {
      columns.forEach((column, i) => {
        expect(openField(key, { table: 'patients', column, rowId }, sealed[i]!)).toBe(`${column} of the row`);
        // Right after a value of the same row: another column's value, and this one under another row, open nothing.
        const other = columns[(i + 1) % columns.length]!;
        if (other !== column) thrown(() => openField(key, { table: 'patients', column: other, rowId }, sealed[i]!), 'KEY_UNAVAILABLE', 'decrypt_failed');
        thrown(() => openField(key, { table: 'patients', column, rowId: `${rowId.slice(0, -1)}e` }, sealed[i]!), 'KEY_UNAVAILABLE', 'decrypt_failed');
      });
      columns.reverse();
      sealed.reverse();
    }
    // The same row under another key (other parts after the row id) right after: its own AAD.
    const other: DataKey = { scope: 'clinic-a', version: 4, key: randomBytes(32) };
    const under = sealField(other, { table: 'patients', column: 'ssn', rowId }, secret);
    expect(openField(other, { table: 'patients', column: 'ssn', rowId }, under)).toBe(secret);
    thrown(() => openField(key, { table: 'patients', column: 'ssn', rowId }, under), 'KEY_UNAVAILABLE', 'decrypt_failed');
  });

  it('refuses a row id that would not encode unambiguously (a lone surrogate)', () => {
    thrown(() => openField(key, { ...aad, rowId: 'row-\uD800' }, sealField(key, aad, secret)), 'BAD_USER_INPUT', 'malformed_identifier');
  });

  it('refuses a different key', () => {
    const sealed = sealField(key, aad, secret);
    thrown(() => openField({ ...key, key: randomBytes(32) }, aad, sealed), 'KEY_UNAVAILABLE', 'decrypt_failed');
  });

  it('detects a flipped bit anywhere: header, nonce, body or tag', () => {
    const sealed = sealField(key, aad, 'short');
    for (let byte = 0; byte < sealed.length; byte++) {
      for (let bit = 0; bit < 8; bit++) {
        const tampered = Buffer.from(sealed);
        tampered[byte]! ^= 1 << bit;
        thrown(() => openField(key, aad, tampered), 'KEY_UNAVAILABLE');
      }
    }
  });

  it('refuses a changed key version, whichever key is then used', () => {
    const sealed = sealField(key, aad, secret);
    const relabelled = Buffer.from(sealed);
    relabelled.writeUInt32BE(4, 1);
    expect(keyVersionOf(relabelled)).toBe(4);
    thrown(() => openField(key, aad, relabelled), 'KEY_UNAVAILABLE', 'decrypt_failed');
    // Same key bytes filed under the new version: the version is bound into the AAD too.
    thrown(() => openField({ ...key, version: 4 }, aad, relabelled), 'KEY_UNAVAILABLE', 'decrypt_failed');
  });

  it('reports an unknown format or a truncated ciphertext as malformed', () => {
    const sealed = sealField(key, aad, secret);
    const v3 = Buffer.from(sealed);
    v3[0] = 0x03;
    thrown(() => openField(key, aad, v3), 'KEY_UNAVAILABLE', 'malformed_ciphertext');
    thrown(() => keyVersionOf(v3), 'KEY_UNAVAILABLE', 'malformed_ciphertext');
    thrown(() => keyVersionOf(sealed.subarray(0, 32)), 'KEY_UNAVAILABLE', 'malformed_ciphertext');
    thrown(() => keyVersionOf(Buffer.alloc(0)), 'KEY_UNAVAILABLE', 'malformed_ciphertext');
  });

  it('puts neither plaintext nor key material in its errors', () => {
    const sealed = sealField(key, aad, secret);
    const e = thrown(() => openField(key, { ...aad, rowId: 'other' }, sealed), 'KEY_UNAVAILABLE');
    const shown = JSON.stringify({ message: e.message, extensions: e.extensions });
    expect(shown).not.toContain(secret);
    expect(shown).not.toContain(key.key.toString('hex'));
    expect(shown).not.toContain(key.key.toString('base64'));
  });

  it('refuses text that would not round-trip (a lone surrogate)', () => {
    thrown(() => sealField(key, aad, 'abc\uD800'), 'BAD_USER_INPUT');
  });

  it('refuses an unusable key', () => {
    thrown(() => sealField({ ...key, key: randomBytes(16) }, aad, secret), 'KEY_UNAVAILABLE', 'invalid_key');
    thrown(() => sealField({ ...key, version: 0 }, aad, secret), 'KEY_UNAVAILABLE', 'invalid_key');
  });

  it('binds the row id as the length-prefixed encoding spells it, ASCII or not', () => {
    for (const rowId of ['7f9c1e4a-0000-4000-8000-000000000002', '', 'ré-1 李 🩺', 'x'.repeat(700), 'ü'.repeat(400)]) {
      const header = Buffer.from([0x01, 0, 0, 0, key.version]);
      const nonce = randomBytes(12);
      const bound = lengthPrefixed(['phigate/field/v1', header, aad.table, aad.column, rowId, key.scope, String(key.version)]);
      const sealed = Buffer.concat([header, nonce, sealGcm(key.key, nonce, bound, Buffer.from(secret))]);
      expect(openField(key, { ...aad, rowId }, sealed)).toBe(secret);
      expect(openField(key, { ...aad, rowId }, sealField(key, { ...aad, rowId }, secret))).toBe(secret);
      thrown(() => openField(key, { ...aad, rowId: `${rowId}x` }, sealed), 'KEY_UNAVAILABLE', 'decrypt_failed');
    }
  });

  it('opens nothing under a key the keyring has wiped, even a value forged under thirty-two zero bytes', () => {
    // A value sealed as sealField would, with the AAD spelt out: under a real key it opens...
    const forge = (under: Buffer) => {
      const header = Buffer.from([0x01, 0, 0, 0, key.version]);
      const nonce = randomBytes(12);
      const bound = lengthPrefixed(['phigate/field/v1', header, aad.table, aad.column, aad.rowId, key.scope, String(key.version)]);
      return Buffer.concat([header, nonce, sealGcm(under, nonce, bound, Buffer.from(secret))]);
    };
    expect(openField(key, aad, forge(key.key))).toBe(secret);
    // ...and under a wiped key it is refused as an unusable key, not opened.
    const wiped = { ...key, key: Buffer.alloc(32) };
    thrown(() => openField(wiped, aad, forge(wiped.key)), 'KEY_UNAVAILABLE', 'invalid_key');
    const held = { ...key, key: Buffer.from(key.key) };
    const sealed = sealField(held, aad, secret);
    held.key.fill(0);
    thrown(() => openField(held, aad, sealed), 'KEY_UNAVAILABLE', 'invalid_key');
  });
});
