import type { Pool } from './pool.ts';

export interface ClinicDirectory {
  /** Which of `ids` are clinics in the database. */
  existing(ids: readonly string[]): Promise<ReadonlySet<string>>;
}

export interface ClinicDirectoryOptions {
  /** How long the list of clinic ids is trusted. */
  readonly ttlMs?: number;
  /** Least time between two reloads caused by ids the list does not have. */
  readonly missReloadMs?: number;
  /** Milliseconds; for tests. */
  readonly now?: () => number;
}

const LOOKUP_TIMEOUT_MS = 2_000;

const CLINIC_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;

/**
 * The ids of `phigate.clinics`, loaded whole (clinics are few) and kept for `ttlMs`, so checking a
 * token's clinics costs nothing per request and never waits for one of the pool's connections
 * behind the requests themselves. An id the list lacks reloads it, at most once per
 * `missReloadMs`, so a clinic created since is seen soon and made-up ids cannot make a query each.
 */
export function createClinicDirectory(pool: Pool, opts: ClinicDirectoryOptions = {}): ClinicDirectory {
  const ttlMs = opts.ttlMs ?? 60_000;
  const missReloadMs = opts.missReloadMs ?? 5_000;
  const now = opts.now ?? (() => Date.now());
  let loaded: { ids: ReadonlySet<string>; at: number } | null = null;
  let loading: Promise<ReadonlySet<string>> | null = null;

  const load = (): Promise<ReadonlySet<string>> =>
    (loading ??= (async () => {
      try {
        // pg's per-query timeout (its typings leave it out): a hung database must not hold
        // authentication, which runs before the request's deadline can cut it off.
        const query = { text: 'SELECT id FROM phigate.clinics', query_timeout: LOOKUP_TIMEOUT_MS };
        const { rows } = await pool.query<{ id: string }>(query);
        loaded = { ids: new Set(rows.map((r) => r.id)), at: now() };
        return loaded.ids;
      } finally {
        loading = null;
      }
    })());

  return {
    async existing(ids) {
      const wellFormed = ids.filter((id) => CLINIC_ID.test(id));
      let known = loaded !== null && now() - loaded.at < ttlMs ? loaded.ids : await load();
      if (wellFormed.some((id) => !known.has(id)) && loaded !== null && now() - loaded.at >= missReloadMs) known = await load();
      return new Set(wellFormed.filter((id) => known.has(id)));
    },
  };
}
