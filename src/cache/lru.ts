export interface Lru<V> {
  get(key: string): V | undefined;
  set(key: string, value: V): void;
}

/** A bounded map that forgets the least recently used entry; Map keeps insertion order, so re-inserting on use is enough. */
export function createLru<V>(maxEntries: number): Lru<V> {
  const entries = new Map<string, V>();
  // The entry used last is already the newest: a page of 800 values under one data key reorders
  // the map once, not 800 times.
  let newest: string | undefined;
  return {
    get(key) {
      const value = entries.get(key);
      if (value !== undefined && key !== newest) {
        entries.delete(key);
        entries.set(key, value);
        newest = key;
      }
      return value;
    },
    set(key, value) {
      entries.delete(key);
      entries.set(key, value);
      newest = key;
      if (entries.size > maxEntries) {
        const oldest = entries.keys().next();
        if (!oldest.done) entries.delete(oldest.value);
      }
    },
  };
}
