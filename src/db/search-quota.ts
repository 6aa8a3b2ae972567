import type { Pool } from './pool.ts';
import { settleAll } from './settle-all.ts';

/** Whose searches: the actor the audit trail names. */
export interface SearchOwner {
  readonly kind: 'user' | 'partner';
  readonly subject: string;
}

export type SearchAllowance = { readonly allowed: true } | { readonly allowed: false; readonly retryAfterSeconds: number };

/**
 * The per-principal search rate (PHIGATE_SEARCHES_PER_MINUTE), counted in phigate.search_usage so
 * that every replica draws on one minute (schema/migrations/010_disclosures.sql). A search is
 * counted whether it finds anything or not, before the lookup, so the count says nothing of the result.
 */
export interface SearchQuota {
  take(owner: SearchOwner, perMinute: number): Promise<SearchAllowance>;
}

/**
 * Reads run in read-only transactions, so the count is its own small transaction on `pool`. It
 * commits without waiting for the WAL flush: losing the last few counts in a crash can only let a
 * principal search a little more in that minute, and a durable commit per search would double the
 * cost of a lookup. BEGIN, the setting, the count and COMMIT go in one round trip.
 */
export function createSearchQuota(pool: Pool): SearchQuota {
  return {
    async take(owner, perMinute) {
      const client = await pool.connect();
      let broken = false;
      try {
        const sent = [
          client.query('BEGIN'),
          client.query('SET LOCAL synchronous_commit = off'),
          client.query<{ allowed: boolean; retry_after_seconds: number }>('SELECT allowed, retry_after_seconds FROM phigate.take_search($1, $2, $3)', [
            owner.kind,
            owner.subject,
            perMinute,
          ]),
          client.query('COMMIT'),
        ];
        const settled = await settleAll(sent);
        if ('error' in settled) {
          broken = true;
          throw settled.error;
        }
        const row = (settled.values[2] as { rows: { allowed: boolean; retry_after_seconds: number }[] }).rows[0]!;
        return row.allowed ? { allowed: true } : { allowed: false, retryAfterSeconds: row.retry_after_seconds };
      } finally {
        client.release(broken);
      }
    },
  };
}
