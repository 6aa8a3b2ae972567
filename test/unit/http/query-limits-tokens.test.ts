import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config.ts';
import { useQueryLimits } from '../../../src/http/plugins/use-query-limits.ts';

// The token limit with its count kept per admitted text: the same verdict as counting every time.
const LIMITS = { ...loadConfig({}).limits, maxTokens: 6 };

function limiter() {
  const onParse = useQueryLimits({ limits: LIMITS, maxPageSize: 100 }).onParse as (payload: { params: { source: string } }) => void;
  // A fresh string each time, as each request's JSON.parse makes one.
  const check = (text: string) => () => onParse({ params: { source: [...text].join('') } });
  return check;
}

const within = '{ a b c d }'; // 6 tokens
const over = '{ a b c d e }'; // 7 tokens

describe('useQueryLimits: the token count', () => {
  it('admits a text within the limit every time and refuses one over it every time, in any order', () => {
    const check = limiter();
    for (let round = 0; round < 3; round++) {
      expect(check(within)).not.toThrow();
      expect(check(over)).toThrow(/more than 6 tokens/);
    }
  });

  it('refuses a text over the limit after more distinct texts were admitted than are kept', () => {
    const check = limiter();
    for (let i = 0; i < 2_500; i++) expect(check(`{ a${i} }`)).not.toThrow();
    expect(check(over)).toThrow(/more than 6 tokens/);
    expect(check(within)).not.toThrow();
    expect(check(over)).toThrow(/more than 6 tokens/);
  });

  it('counts a long text each time: a long text over the limit is refused every time', () => {
    const check = limiter();
    const long = `{ a ${' '.repeat(5_000)}b c d e }`;
    const longWithin = `{ a ${' '.repeat(5_000)}b c d }`;
    for (let round = 0; round < 2; round++) {
      expect(check(longWithin)).not.toThrow();
      expect(check(long)).toThrow(/more than 6 tokens/);
    }
  });
});
