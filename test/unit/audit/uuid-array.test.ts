import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { isUuid } from '../../../src/audit/insert.ts';
import { binaryUuid, binaryUuidArray } from '../../../src/audit/uuid-array.ts';

/** array_recv's reading of a one-dimensional uuid[]: [ndim, hasNulls, element oid, elements]. */
function decode(buf: Buffer): [number, number, number, (string | null)[]] {
  const ndim = buf.readInt32BE(0);
  const elements: (string | null)[] = [];
  if (ndim === 1) {
    expect(buf.readInt32BE(16)).toBe(1);
    let at = 20;
    for (let i = 0; i < buf.readInt32BE(12); i++) {
      const length = buf.readInt32BE(at);
      at += 4;
      if (length === -1) elements.push(null);
      else {
        expect(length).toBe(16);
        const hex = buf.subarray(at, at + 16).toString('hex');
        elements.push(`${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`);
        at += 16;
      }
    }
    expect(at).toBe(buf.length);
  }
  return [ndim, buf.readInt32BE(4), buf.readInt32BE(8), elements];
}

const A = randomUUID();
const B = randomUUID();
const NIL = '00000000-0000-0000-0000-000000000000';

describe('binaryUuidArray', () => {
  it('writes array_send layout: one dimension from 1, uuid elements, NULLs flagged', () => {
    expect(decode(binaryUuidArray([A, null, B.toUpperCase(), B, null]))).toEqual([1, 1, 2950, [A, null, B, B, null]]);
    expect(decode(binaryUuidArray([A, A]))).toEqual([1, 0, 2950, [A, A]]);
  });

  it('writes nullAs in place of NULL, leaving an array without NULLs', () => {
    expect(decode(binaryUuidArray([null, A, null], B)!)).toEqual([1, 0, 2950, [B, A, B]]);
    expect(decode(binaryUuidArray([null, A, null], NIL)!)).toEqual([1, 0, 2950, [NIL, A, NIL]]);
  });

  it('answers null when an element is nullAs itself, which then could not stand for NULL', () => {
    expect(binaryUuidArray([null, A, NIL], NIL)).toBeNull();
    expect(binaryUuidArray([null, B.toUpperCase(), A], B)).toBeNull();
    expect(binaryUuidArray([A, A, null], B)).not.toBeNull();
  });

  it('writes one uuid as its 16 bytes', () => {
    expect(binaryUuid(A.toUpperCase()).toString('hex')).toBe(A.replace(/-/g, ''));
  });

  it('writes an empty array with no dimensions', () => {
    expect(decode(binaryUuidArray([]))).toEqual([0, 0, 2950, []]);
  });

  it("rejects what isUuid rejects, also after a repeated id and past the ASCII table's reach", () => {
    const bads = ['', A.slice(1), `${A}0`, A.replace(/-/g, ''), `g${A.slice(1)}`, `${A.slice(0, 8)}_${A.slice(9)}`, `\u0131${A.slice(1)}`, `${A.slice(0, 35)}\u0146`];
    for (const bad of bads) {
      expect(isUuid(bad), bad).toBe(false);
      expect(() => binaryUuidArray([A, A, bad]), bad).toThrow('not a uuid');
      expect(() => binaryUuidArray([null], bad), bad).toThrow('not a uuid');
      expect(() => binaryUuidArray([A, bad], B), bad).toThrow('not a uuid');
      expect(() => binaryUuid(bad), bad).toThrow('not a uuid');
    }
  });
});
