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

/** The list of clinic ids as loaded, and when. */
interface Loaded {
  readonly ids: ReadonlySet<string>;
  readonly at: number;
}

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
  let loaded: Loaded | null = null;
  let loading: Promise<ReadonlySet<string>> | null = null;
  // A token's clinics are one frozen array on every request it makes (the verified-token cache):
  // when the list knew all of them, the answer is kept for that array until the list is reloaded
  // (~1 KB and a regular-expression test per clinic less a request). An answer that dropped an id
  // is not kept, so that the id still reloads the list as below.
  const allKnown = new WeakMap<readonly string[], { from: Loaded; known: ReadonlySet<string> }>();

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
      const fresh = loaded !== null && now() - loaded.at < ttlMs ? loaded : null;
      const kept = fresh === null ? undefined : allKnown.get(ids);
      if (kept !== undefined && kept.from === fresh) return kept.known;
      const wellFormed = ids.filter((id) => CLINIC_ID.test(id));
      let known = fresh !== null ? fresh.ids : await load();
      if (wellFormed.some((id) => !known.has(id)) && loaded !== null && now() - loaded.at >= missReloadMs) known = await load();
      const existing: ReadonlySet<string> = new Set(wellFormed.filter((id) => known.has(id)));
      if (loaded !== null && known === loaded.ids && existing.size === ids.length && Object.isFrozen(ids)) allKnown.set(ids, { from: loaded, known: existing });
      return existing;
    },
  };
}
