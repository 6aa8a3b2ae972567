import { describe, expect, it } from 'vitest';
import { createLru } from '../../../src/cache/lru.ts';

const keysAfter = (lru: ReturnType<typeof createLru<number>>, all: string[]) => all.filter((k) => lru.get(k) !== undefined);

describe('createLru', () => {
  it('forgets the least recently used entry past its size', () => {
    const lru = createLru<number>(3);
    lru.set('a', 1);
    lru.set('b', 2);
    lru.set('c', 3);
    expect(lru.get('a')).toBe(1); // a is now the newest: b is the oldest
    lru.set('d', 4);
    expect(lru.get('b')).toBeUndefined();
    expect([lru.get('a'), lru.get('c'), lru.get('d')]).toEqual([1, 3, 4]);
  });

  it('a run of gets of one key keeps it the newest, and the order of the others stands', () => {
    const lru = createLru<number>(3);
    for (const [k, v] of [['a', 1], ['b', 2], ['c', 3]] as const) lru.set(k, v);
    for (let i = 0; i < 5; i++) expect(lru.get('b')).toBe(2);
    lru.set('d', 4); // a was the oldest
    expect(keysAfter(lru, ['a', 'b', 'c', 'd'])).toEqual(['b', 'c', 'd']);
  });

  it('the newest entry evicted by others and set again is found, and a set after a get moves on', () => {
    const lru = createLru<number>(2);
    lru.set('a', 1);
    expect(lru.get('a')).toBe(1);
    lru.set('b', 2);
    lru.set('c', 3); // evicts a
    expect(lru.get('a')).toBeUndefined();
    lru.set('a', 10); // evicts b
    expect(lru.get('b')).toBeUndefined();
    expect(lru.get('c')).toBe(3);
    lru.set('d', 4); // a is the oldest now
    expect(lru.get('a')).toBeUndefined();
    expect(lru.get('c')).toBe(3);
  });
});
