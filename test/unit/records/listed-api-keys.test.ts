import { describe, expect, it } from 'vitest';
import type { ApiKeyRow, Queryable } from '../../../src/db/api-keys.ts';
import { LIST_SIZES } from '../../../src/http/plugins/use-query-limits.ts';
import { apiKeysOf, listedApiKeys, MAX_LISTED_KEYS } from '../../../src/records/api-keys.ts';

// Query.apiKeys reads at most MAX_LISTED_KEYS + 1 rows (LIMIT in its statement) and is priced at
// MAX_LISTED_KEYS: past it the listing is refused, never cut short. The operator's command line
// lists every key.

/** A database holding `n` keys of the manager's clinics, recording the parameters it was sent. */
function keys(n: number) {
  const sent: unknown[][] = [];
  const db = {
    query: async (_text: string, values: unknown[]) => {
      sent.push(values);
      const limit = values[1] as number | null;
      return { rows: Array.from({ length: limit === null ? n : Math.min(n, limit) }, (_, i) => ({ id: String(i) }) as unknown as ApiKeyRow) };
    },
  } as unknown as Queryable;
  return { db, sent };
}

describe('listedApiKeys', () => {
  it('reads one past the bound and answers every key up to it', async () => {
    const { db, sent } = keys(MAX_LISTED_KEYS);
    expect(await listedApiKeys(db, { clinics: ['c-north'] })).toHaveLength(MAX_LISTED_KEYS);
    expect(sent).toEqual([[['c-north'], MAX_LISTED_KEYS + 1]]);
  });

  it('refuses past the bound with BAD_USER_INPUT, never a list cut short', async () => {
    const { db } = keys(MAX_LISTED_KEYS + 5);
    await expect(listedApiKeys(db, { clinics: ['c-north'] })).rejects.toMatchObject({ code: 'BAD_USER_INPUT' });
  });

  it('is priced at its bound by the query limits', () => {
    expect(LIST_SIZES['Query.apiKeys']).toBe(MAX_LISTED_KEYS);
  });

  it("the operator's listing is not bounded", async () => {
    const { db, sent } = keys(MAX_LISTED_KEYS + 5);
    expect(await apiKeysOf(db, { clinics: null })).toHaveLength(MAX_LISTED_KEYS + 5);
    expect(sent).toEqual([[null, null]]);
  });
});
