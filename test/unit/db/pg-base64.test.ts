import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { fromPgBase64, pgBase64Length } from '../../../src/db/pg-base64.ts';
import { PhigateError } from '../../../src/errors.ts';
import { pgBase64 } from '../../support/pg-base64.ts';

const refusal = (text: string): string | undefined => {
  try {
    fromPgBase64(text);
  } catch (err) {
    expect(err).toBeInstanceOf(PhigateError);
    expect((err as PhigateError).code).toBe('INTERNAL');
    return (err as PhigateError).reason;
  }
  return undefined;
};

const LENGTHS = [0, 1, 2, 3, 4, 5, 56, 57, 58, 59, 60, 113, 114, 115, 116, 171, 400];

describe('fromPgBase64', () => {
  it('gives the bytes of PostgreSQL base64 of every length, and NULL as null', () => {
    for (const n of LENGTHS) {
      const bytes = randomBytes(n);
      const text = pgBase64(bytes);
      expect(text).toHaveLength(pgBase64Length(n));
      expect(fromPgBase64(text)).toEqual(bytes);
    }
    expect(pgBase64(Buffer.alloc(57))).toMatch(/\n$/);
    expect(fromPgBase64(null)).toBeNull();
  });

  it('refuses a character Node would pass over or stop at, anywhere: replaced, inserted or dropped', () => {
    const strangers = ['*', ' ', '\n', '\r', '\t', '=', '-', '_', '\u00e9', '\u2028', '\0'];
    let tried = 0;
    for (const n of LENGTHS) {
      const text = pgBase64(randomBytes(n));
      for (let at = 0; at <= text.length; at++) {
        const variants = strangers.flatMap((c) => [text.slice(0, at) + c + text.slice(at), text.slice(0, at) + c + text.slice(at + 1)]);
        if (at < text.length) variants.push(text.slice(0, at) + text.slice(at + 1));
        for (const v of variants) {
          // A change that leaves PostgreSQL's base64 of other bytes is not malformed (`AAAA` -> `AAA=`).
          if (v === pgBase64(Buffer.from(v, 'base64'))) continue;
          tried++;
          expect(refusal(v), JSON.stringify({ n, at, v })).toBe('packed_phi_base64');
        }
      }
    }
    expect(tried).toBeGreaterThan(10_000);
  });

  it('refuses a last group with bits set past the bytes, and base64 of another layout', () => {
    expect(fromPgBase64('QQ==')).toEqual(Buffer.from('A'));
    expect(refusal('QR==')).toBe('packed_phi_base64');
    expect(fromPgBase64('QUI=')).toEqual(Buffer.from('AB'));
    expect(refusal('QUJ=')).toBe('packed_phi_base64');
    const long = randomBytes(200);
    // Node's own base64, without PostgreSQL's newlines, and with lines of another length.
    expect(refusal(long.toString('base64'))).toBe('packed_phi_base64');
    expect(refusal(long.toString('base64').replace(/.{64}/g, '$&\n'))).toBe('packed_phi_base64');
    expect(refusal(pgBase64(long).replaceAll('\n', '\r\n'))).toBe('packed_phi_base64');
    expect(refusal(pgBase64(long).replace(/\n$/, ''))).toBe(undefined);
  });
});
