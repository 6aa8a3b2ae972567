import { createLru } from '../cache/lru.ts';
import type { Pool } from './pool.ts';

export interface ClinicDirectory {
  /** Which of `ids` are clinics in the database. */
  existing(ids: readonly string[]): Promise<ReadonlySet<string>>;
}

/** Clinic ids remembered, known or unknown; clinics are few and rarely change. */
const IDS_KEPT = 10_000;

const LOOKUP_TIMEOUT_MS = 2_000;

/**
 * Clinic ids checked against `phigate.clinics`, cached (both answers) for `ttlMs` and bounded, so a
 * token's clinics cost one indexed query the first time and nothing after. A clinic created since
 * is seen within `ttlMs`.
 */
export function createClinicDirectory(pool: Pool, opts: { ttlMs?: number; now?: () => number } = {}): ClinicDirectory {
  const ttlMs = opts.ttlMs ?? 60_000;
  const now = opts.now ?? (() => Date.now());
  const known = createLru<{ exists: boolean; until: number }>(IDS_KEPT);
  return {
    async existing(ids) {
      const at = now();
      const found = new Set<string>();
      const unknown: string[] = [];
      for (const id of new Set(ids)) {
        const cached = known.get(id);
        if (cached === undefined || cached.until <= at) unknown.push(id);
        else if (cached.exists) found.add(id);
      }
      if (unknown.length > 0) {
        // Runs before the request's deadline can cut it off: a hung database must not hold it
        // here (pg's per-query timeout, which its typings leave out).
        const query = { text: 'SELECT id FROM phigate.clinics WHERE id = ANY($1::text[])', values: [unknown], query_timeout: LOOKUP_TIMEOUT_MS };
        const { rows } = await pool.query<{ id: string }>(query);
        const present = new Set(rows.map((r) => r.id));
        for (const id of unknown) {
          known.set(id, { exists: present.has(id), until: at + ttlMs });
          if (present.has(id)) found.add(id);
        }
      }
      return found;
    },
  };
}
