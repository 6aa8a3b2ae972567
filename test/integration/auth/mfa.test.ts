import { describe, expect, it } from 'vitest';
import { hasMfa } from '../../../src/auth/mfa.ts';

const ACR = ['urn:phigate:loa:mfa', 'phr'];

describe('hasMfa', () => {
  it.each([
    // explicit assertion
    [['mfa'], true],
    [['pwd', 'mfa'], true],
    // two factors of different kinds
    [['pwd', 'otp'], true],
    [['pwd', 'hwk'], true],
    [['pwd', 'swk'], true],
    [['pwd', 'sms'], true],
    [['pwd', 'fpt'], true],
    [['pwd', 'face'], true],
    [['hwk', 'pin'], true],
    [['hwk', 'fpt'], true],
    [['sc', 'pin'], true],
    [['kba', 'tel'], true],
    [['pop', 'iris'], true],
    [['otp', 'retina'], true],
    [['vbm', 'pwd'], true],
    [['pwd', 'geo', 'otp', 'rba'], true],
    // one factor, however often or in however many forms
    [['pwd'], false],
    [['otp'], false],
    [['pwd', 'pwd'], false],
    [['pwd', 'pin'], false],
    [['pwd', 'kba'], false],
    [['otp', 'sms'], false],
    [['hwk', 'swk'], false],
    [['face', 'fpt'], false],
    // signals and channels that are not factors on their own
    [['pwd', 'geo'], false],
    [['pwd', 'rba'], false],
    [['pwd', 'wia'], false],
    [['pwd', 'mca'], false],
    [['hwk', 'user'], false],
    [['geo', 'rba', 'wia', 'mca', 'user'], false],
    // unknown values and case variants count for nothing
    [['pwd', 'OTP'], false],
    [['pwd', 'MFA'], false],
    [['pwd', 'magic'], false],
    [['pwd', '__proto__', 'constructor'], false],
    [[], false],
  ] as const)('amr %j -> %s', (amr, expected) => {
    expect(hasMfa({ amr }, ACR)).toBe(expected);
  });

  it.each([
    ['mfa', 'an amr that is a string, not an array'],
    [{ 0: 'pwd', 1: 'otp', length: 2 }, 'an array-like object'],
    [['pwd', 'otp', 7], 'an array with a non-string member'],
    [['mfa', null], 'an array with null'],
    [null, 'null'],
    [undefined, 'absent'],
  ] as [unknown, string][])('fails closed on %j (%s)', (amr) => {
    expect(hasMfa({ amr }, ACR)).toBe(false);
  });

  it('accepts an acr that is one of the configured multi-factor values', () => {
    expect(hasMfa({ acr: 'urn:phigate:loa:mfa' }, ACR)).toBe(true);
    expect(hasMfa({ amr: ['pwd'], acr: 'phr' }, ACR)).toBe(true);
  });

  it('refuses any other acr, a differently spelled one, or one that is not a string', () => {
    expect(hasMfa({ acr: 'urn:phigate:loa:1' }, ACR)).toBe(false);
    expect(hasMfa({ acr: 'URN:PHIGATE:LOA:MFA' }, ACR)).toBe(false);
    expect(hasMfa({ acr: ['urn:phigate:loa:mfa'] }, ACR)).toBe(false);
    expect(hasMfa({ acr: '0' }, [])).toBe(false);
  });

  it('judges amr and acr separately, so a malformed amr does not hide a configured acr', () => {
    expect(hasMfa({ amr: 'pwd', acr: 'phr' }, ACR)).toBe(true);
    expect(hasMfa({ amr: ['pwd', 'otp'], acr: 'unknown' }, ACR)).toBe(true);
  });

  it('is false with no claims at all', () => {
    expect(hasMfa({}, ACR)).toBe(false);
  });
});
