import type { Pool } from './pool.ts';
import { submit } from './submit.ts';

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

export interface SearchQuotaOptions {
  /** Name the statement, prepared once per connection (default on); off behind a pooler that cannot keep it (src/db/transaction.ts). */
  readonly preparedStatements?: boolean;
}

// The count is one statement in a transaction of its own: without BEGIN and COMMIT around it,
// PostgreSQL commits it when the statement ends (an implicit transaction). The setting is local to
// that transaction and still in force when it commits, so the commit does not wait for the WAL
// flush: losing the last few counts in a crash can only let a principal search a little more in
// that minute, and a durable commit per search would double the cost of a lookup. The same count as
// BEGIN, SET LOCAL, the call and COMMIT cost its backend about twice the CPU (bench/README.md, ssn).
const TAKE_SEARCH =
  "SELECT q.allowed, q.retry_after_seconds FROM phigate.take_search($1, $2, $3) q WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL";

/** Reads run in read-only transactions, so the count runs on `pool`, not in the request's transaction. */
export function createSearchQuota(pool: Pool, opts: SearchQuotaOptions = {}): SearchQuota {
  const name = opts.preparedStatements === false ? undefined : 'phigate_take_search';
  return {
    async take(owner, perMinute) {
      const client = await pool.connect();
      let broken = false;
      try {
        const { rows } = await submit<{ allowed: boolean; retry_after_seconds: number }>(client, TAKE_SEARCH, [owner.kind, owner.subject, perMinute], name);
        const row = rows[0]!;
        return row.allowed ? { allowed: true } : { allowed: false, retryAfterSeconds: row.retry_after_seconds };
      } catch (err) {
        broken = true;
        throw err;
      } finally {
        client.release(broken);
      }
    },
  };
}
