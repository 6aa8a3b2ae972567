import { randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { lookupApiKey, touchApiKeys, type ApiKeyRow, type LookupPool, type Queryable } from '../db/api-keys.ts';
import { dbFailure } from '../db/failure.ts';
import { PhigateError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { RateLimitStore } from '../rate-limit/store.ts';
import { apiKeyHash, parseApiKey } from './api-key-secret.ts';
import type { Peppers } from './api-key-pepper.ts';
import type { PartnerPrincipal } from './principal.ts';

export interface ApiKeyVerifier {
  /** `Authorization: ApiKey <credential>` -> the partner, or a refusal. */
  verify(credential: string): Promise<PartnerPrincipal>;
  /** Drops what this replica remembers about a key (after it revoked or rotated it). */
  forget(id: string): void;
  /** Writes the pending `last_used_at` updates now (tests, shutdown). */
  flushLastUsed(): Promise<void>;
  close(): Promise<void>;
}

export interface ApiKeyVerifierOptions {
  /**
   * Connections no request holds (src/app.ts: the pre-authentication pool): anyone can make a
   * lookup run by sending a made-up key, and that must never take a request's connection.
   */
  readonly db: LookupPool & Queryable;
  readonly peppers: Peppers;
  readonly rateLimits: RateLimitStore;
  readonly logger: Logger;
  /** How long a key's row is remembered; revocation does not wait for it (see README, Partner API keys). */
  readonly cacheTtlMs?: number;
  /** How often `last_used_at` is written for the keys used since: one UPDATE for all of them. */
  readonly lastUsedFlushMs?: number;
  /** How long one lookup may take; past it the request is refused with 503 (default 2 s). */
  readonly lookupTimeoutMs?: number;
}

interface Cached {
  /** null: no such key; the lookup still costs what a real one does. */
  readonly row: ApiKeyRow | null;
  readonly principal: PartnerPrincipal | null;
  readonly loadedAt: number;
}

const refused = () => new PhigateError('UNAUTHENTICATED', 'The API key is not valid.', { reason: 'invalid_api_key' });

/** Fails closed, and says "later" rather than "invalid": the key may well be good. */
const lookupsBusy = () =>
  new PhigateError('INTERNAL', 'API keys cannot be checked now.', { reason: 'api_key_lookups_busy', http: { status: 503, headers: { 'Retry-After': '1' } } });

/**
 * A lookup that failed is answered as every path answers a database failure (src/db/failure.ts:
 * unavailable, timed out, in conflict), never as "invalid": the key may well be good. Anything
 * else (a missing table or grant, a bug) is no reason to retry: refused all the same, with 500.
 */
const lookupFailed = (cause: unknown): PhigateError =>
  dbFailure(cause) ?? new PhigateError('INTERNAL', 'API keys cannot be checked now.', { reason: 'api_key_lookup_failed', cause, http: { status: 500 } });

/** Unknown ids remembered at once; real keys have a cache of their own that misses cannot evict. */
const MISSES_REMEMBERED = 1_000;

/**
 * Lookups that may be pending at once. Past that, an id this replica does not know as a key is
 * refused at once instead of queueing for seconds behind a flood of made-up ids; the refresh of a
 * key it knows is never refused for it.
 */
const MAX_PENDING_LOOKUPS = 64;

/**
 * Looks a key up by id (remembered for a few seconds, unknown ids too, apart), recomputes the keyed hash
 * of the presented secret and compares in constant time. An unknown id is compared against a
 * random hash under the current pepper, so it costs what a wrong secret does and answers the
 * same. Only then are expiry, revocation and the rate limit looked at.
 */
export function createApiKeyVerifier(opts: ApiKeyVerifierOptions): ApiKeyVerifier {
  const { db, peppers, rateLimits, logger } = opts;
  const ttl = opts.cacheTtlMs ?? 5_000;
  const timeoutMs = opts.lookupTimeoutMs ?? 2_000;
  // Apart, so that made-up ids, which anyone can send by the thousand, never push real keys out
  // of the cache and every partner request back to the database.
  const keys = new LRUCache<string, Cached>({ max: 10_000 });
  const misses = new LRUCache<string, Cached>({ max: MISSES_REMEMBERED });
  const remember = (id: string, entry: Cached) => {
    (entry.row ? misses : keys).delete(id);
    (entry.row ? keys : misses).set(id, entry);
  };
  const loading = new Map<string, Promise<Cached>>();
  const decoy = randomBytes(32);
  const used = new Set<string>();

  // Synchronous on a hit: in steady state a keyed request waits for nothing until its transaction.
  const lookup = (id: string): Cached | Promise<Cached> => {
    const known = keys.get(id);
    const hit = known ?? misses.get(id);
    if (hit && performance.now() - hit.loadedAt < ttl) return hit;
    const inFlight = loading.get(id);
    if (inFlight) return inFlight;
    if (!known && loading.size >= MAX_PENDING_LOOKUPS) throw lookupsBusy();
    const pending: Promise<Cached> = lookupApiKey(db, id, timeoutMs)
      .then((row) => {
        const entry = { row, principal: row && principalOf(row), loadedAt: performance.now() };
        // Not when forget() came meanwhile: the row may have been read before the change it follows.
        if (loading.get(id) === pending) remember(id, entry);
        return entry;
      })
      .catch((cause: unknown) => {
        throw lookupFailed(cause);
      })
      .finally(() => {
        if (loading.get(id) === pending) loading.delete(id);
      });
    loading.set(id, pending);
    return pending;
  };

  const flush = async () => {
    if (used.size === 0) return;
    const ids = [...used];
    used.clear();
    await touchApiKeys(db, ids).catch((e: unknown) =>
      logger.warn({ task: 'api-key-last-used', err: { name: (e as Error).name, code: (e as { code?: string }).code ?? null }, keys: ids.length }, 'could not record when API keys were last used'),
    );
  };
  const timer = setInterval(() => void flush(), opts.lastUsedFlushMs ?? 60_000);
  timer.unref();

  return {
    async verify(credential) {
      const parsed = parseApiKey(credential);
      if (!parsed) throw new PhigateError('UNAUTHENTICATED', 'The Authorization header is malformed.', { reason: 'malformed_credentials' });
      const found = lookup(parsed.id);
      const { row, principal } = found instanceof Promise ? await found : found;
      let pepper: KeyObject;
      if (row) {
        const p = peppers.get(row.pepper_version);
        pepper = p instanceof Promise ? await p : p;
      } else {
        const c = peppers.current();
        pepper = (c instanceof Promise ? await c : c).key;
      }
      const matches = timingSafeEqual(apiKeyHash(pepper, parsed.id, parsed.secret), row ? row.secret_hash : decoy);
      if (!row || !principal || !matches) throw refused();
      // The database clock judges again in every statement (row security); this is the early answer.
      const now = Date.now();
      if (row.revoked_at !== null && row.revoked_at.getTime() <= now) {
        throw new PhigateError('UNAUTHENTICATED', 'The API key has been revoked.', { reason: 'api_key_revoked' });
      }
      if (row.expires_at !== null && row.expires_at.getTime() <= now) {
        throw new PhigateError('UNAUTHENTICATED', 'The API key has expired.', { reason: 'api_key_expired' });
      }
      let decision;
      try {
        const taken = rateLimits.take(row.id, { ratePerMinute: row.rate_per_minute, burst: row.burst });
        decision = taken instanceof Promise ? await taken : taken;
      } catch (cause) {
        throw new PhigateError('INTERNAL', 'Rate limits cannot be checked now; requests with API keys are refused until they can.', {
          reason: 'rate_limit_unavailable',
          cause,
          http: { status: 503, headers: { 'Retry-After': '5' } },
        });
      }
      if (!decision.allowed) {
        throw new PhigateError('RATE_LIMITED', `This API key's rate limit is reached; retry in ${decision.retryAfterSeconds} s.`, {
          reason: 'api_key_rate',
          http: { status: 429, headers: { 'Retry-After': String(decision.retryAfterSeconds) } },
        });
      }
      used.add(row.id);
      return principal;
    },
    forget(id) {
      keys.delete(id);
      misses.delete(id);
      loading.delete(id);
    },
    flushLastUsed: flush,
    async close() {
      clearInterval(timer);
      await flush();
    },
  };
}

function principalOf(row: ApiKeyRow): PartnerPrincipal {
  return Object.freeze({
    kind: 'partner',
    subject: row.partner,
    keyId: row.id,
    roles: Object.freeze(['partner']) as readonly ['partner'],
    clinics: Object.freeze([...row.clinics]),
    fields: new Set(row.fields),
    purpose: row.purpose,
    mfa: true,
  });
}
