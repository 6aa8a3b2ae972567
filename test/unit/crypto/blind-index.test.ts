import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { blindIndex, deriveBlindIndexKey, normaliseMrn, normaliseSsn } from '../../../src/crypto/blind-index.ts';
import { thrown } from './expect-error.ts';

const root = randomBytes(32);

describe('deriveBlindIndexKey', () => {
  it('derives nothing from a root the cache has zero-filled: its digests would be anyone\'s to recompute', () => {
    thrown(() => deriveBlindIndexKey(Buffer.alloc(32), 'patients.ssn', 'clinic-a'), 'KEY_UNAVAILABLE', 'invalid_key');
  });
});

describe('normaliseSsn', () => {
  it('gives one index for every way of writing the same number, fullwidth included', () => {
    const columnKey = deriveBlindIndexKey(root, 'patients.ssn', 'clinic-a');
    const spellings = ['123-45-6789', '123 45 6789', '123456789', '１２３-４５-６７８９', '１２３－４５－６７８９', '123.45.6789', ' 123-45-6789\u00A0'];
    const indexes = spellings.map((s) => blindIndex(columnKey, normaliseSsn(s)).toString('hex'));
    expect(new Set(indexes).size).toBe(1);
    expect(normaliseSsn('１２３-４５-６７８９')).toBe('123456789');
  });

  it.each([
    ['Arabic-Indic digits', '١٢٣-٤٥-٦٧٨٩'],
    ['Extended Arabic-Indic digits', '۱۲۳-۴۵-۶۷۸۹'],
    ['Devanagari digits', '१२३-४५-६७८९'],
    ['letter O for zero', '123-45-678O'],
    ['letter l for one', 'l23-45-6789'],
    ['eight digits', '123-45-678'],
    ['ten digits', '123-45-67890'],
    ['empty', ''],
    ['other separators', '123/45/6789'],
  ])('rejects %s', (_, input) => {
    const e = thrown(() => normaliseSsn(input), 'BAD_USER_INPUT', 'invalid_ssn');
    expect(e.message).toBe('ssn must contain 9 digits');
  });
});

describe('normaliseMrn', () => {
  it('trims, upper-cases and folds fullwidth forms', () => {
    expect(normaliseMrn('  mrn-00042 ')).toBe('MRN-00042');
    expect(normaliseMrn('ＭＲＮ－０００４２')).toBe('MRN-00042');
    expect(normaliseMrn('A'.repeat(32))).toBe('A'.repeat(32));
  });

  it.each([
    ['dotless i, which upper-cases to ASCII I', 'MRNıD'],
    ['sharp s, which upper-cases to SS', 'MRNß'],
    ['Cyrillic lookalikes', 'МRN-1'],
    ['Greek lookalikes', 'ΜRΝ-1'],
    ['Arabic-Indic digits', 'MRN-١٢'],
    ['punctuation', 'MRN_1'],
    ['inner spaces', 'MRN 1'],
    ['empty', '   '],
    ['33 characters', 'A'.repeat(33)],
  ])('rejects %s without echoing the input', (_, input) => {
    const e = thrown(() => normaliseMrn(input), 'BAD_USER_INPUT', 'invalid_mrn');
    expect(e.message).toBe('mrn must be 1 to 32 letters, digits or hyphens');
  });
});

describe('deriveBlindIndexKey / blindIndex', () => {
  it('gives different indexes for the same value in different clinics', () => {
    const a = blindIndex(deriveBlindIndexKey(root, 'patients.ssn', 'clinic-a'), '123456789');
    const b = blindIndex(deriveBlindIndexKey(root, 'patients.ssn', 'clinic-b'), '123456789');
    expect(a.equals(b)).toBe(false);
  });

  it('derives a separate 32-byte key per column and per clinic, deterministically', () => {
    const ssn = deriveBlindIndexKey(root, 'patients.ssn', 'clinic-a');
    const mrn = deriveBlindIndexKey(root, 'patients.mrn', 'clinic-a');
    expect(ssn.length).toBe(32);
    expect(ssn.equals(mrn)).toBe(false);
    expect(ssn.equals(deriveBlindIndexKey(root, 'patients.ssn', 'clinic-a'))).toBe(true);
    expect(ssn.equals(deriveBlindIndexKey(randomBytes(32), 'patients.ssn', 'clinic-a'))).toBe(false);
    expect(blindIndex(ssn, '123456789').equals(blindIndex(mrn, '123456789'))).toBe(false);
  });

  it('keeps the derivation stable (pinned: changing it orphans every stored index)', () => {
    // Cross-checked with an independent HKDF/HMAC implementation.
    const pinnedRoot = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
    const columnKey = deriveBlindIndexKey(pinnedRoot, 'patients.ssn', 'clinic-1');
    expect(columnKey.toString('hex')).toBe('1193b3ba66f39898a48d3294003150bdbe5c4832fa4d5341c2e44a383ddd5a1e');
    expect(blindIndex(columnKey, '123456789').toString('hex')).toBe('a785fcca2af21b381f39a054b50e8413b8381ceab0d3b34be4164b1c3ffdd0fc');
  });

  it('is a 32-byte HMAC that differs for different values', () => {
    const columnKey = deriveBlindIndexKey(root, 'patients.mrn', 'clinic-a');
    const index = blindIndex(columnKey, 'MRN-1');
    expect(index.length).toBe(32);
    expect(index.equals(blindIndex(columnKey, 'MRN-2'))).toBe(false);
  });

  it('refuses short keys and an empty clinic', () => {
    thrown(() => deriveBlindIndexKey(randomBytes(16), 'patients.ssn', 'clinic-a'), 'KEY_UNAVAILABLE');
    thrown(() => deriveBlindIndexKey(root, 'patients.ssn', ''), 'BAD_USER_INPUT');
    thrown(() => blindIndex(randomBytes(31), '123456789'), 'KEY_UNAVAILABLE');
  });
});
