import { describe, expect, it } from 'vitest';
import { MASKERS } from '../../../src/policy/mask.ts';

describe('MASKERS', () => {
  it('masks only the SSN', () => {
    expect(Object.keys(MASKERS)).toEqual(['Patient.ssn']);
  });

  it.each([
    ['123-45-6789', '***-**-6789'],
    ['123456789', '***-**-6789'],
    [' 123 45 6789 ', '***-**-6789'],
    ['123.45.6789', '***-**-6789'],
    ['1234', '***-**-1234'],
    ['123', '***-**-****'],
    ['12-3', '***-**-****'],
    ['', '***-**-****'],
    ['not a number', '***-**-****'],
  ])('masks %j as %j', (plain, masked) => {
    expect(MASKERS['Patient.ssn']?.(plain)).toBe(masked);
  });

  it('cannot be extended at run time', () => {
    expect(Object.isFrozen(MASKERS)).toBe(true);
    expect(() => {
      (MASKERS as Record<string, (plain: string) => string>)['Patient.mrn'] = (plain) => plain;
    }).toThrow(TypeError);
  });
});
