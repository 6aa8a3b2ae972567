import { randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { apiKeyById, touchApiKeys, type ApiKeyRow, type Queryable } from '../db/api-keys.ts';
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
  readonly db: Queryable;
  readonly peppers: Peppers;
  readonly rateLimits: RateLimitStore;
  readonly logger: Logger;
  /** How long a key's row is remembered; revocation does not wait for it (see README, Partner API keys). */
  readonly cacheTtlMs?: number;
  /** How often `last_used_at` is written for the keys used since: one UPDATE for all of them. */
  readonly lastUsedFlushMs?: number;
}

interface Cached {
  /** null: no such key; the lookup still costs what a real one does. */
  readonly row: ApiKeyRow | null;
  readonly principal: PartnerPrincipal | null;
  readonly loadedAt: number;
}

const refused = () => new PhigateError('UNAUTHENTICATED', 'The API key is not valid.', { reason: 'invalid_api_key' });

/**
 * Looks a key up by id (remembered for a few seconds, unknown ids too), recomputes the keyed hash
 * of the presented secret and compares in constant time. An unknown id is compared against a
 * random hash under the current pepper, so it costs what a wrong secret does and answers the
 * same. Only then are expiry, revocation and the rate limit looked at.
 */
export function createApiKeyVerifier(opts: ApiKeyVerifierOptions): ApiKeyVerifier {
  const { db, peppers, rateLimits, logger } = opts;
  const ttl = opts.cacheTtlMs ?? 5_000;
  const cache = new LRUCache<string, Cached>({ max: 10_000 });
  const loading = new Map<string, Promise<Cached>>();
  const decoy = randomBytes(32);
  const used = new Set<string>();

  // Synchronous on a hit: in steady state a keyed request waits for nothing until its transaction.
  const lookup = (id: string): Cached | Promise<Cached> => {
    const hit = cache.get(id);
    if (hit && performance.now() - hit.loadedAt < ttl) return hit;
    let pending = loading.get(id);
    if (!pending) {
      pending = apiKeyById(db, id)
        .then((row) => {
          const entry = { row, principal: row && principalOf(row), loadedAt: performance.now() };
          cache.set(id, entry);
          return entry;
        })
        .catch((cause: unknown) => {
          throw new PhigateError('INTERNAL', 'The database is unavailable.', { reason: 'db_unavailable', cause });
        })
        .finally(() => loading.delete(id));
      loading.set(id, pending);
    }
    return pending;
  };

  const flush = async () => {
    if (used.size === 0) return;
    const ids = [...used];
    used.clear();
    await touchApiKeys(db, ids).catch((e: unknown) =>
      logger.warn({ err: { name: (e as Error).name, code: (e as { code?: string }).code ?? null }, keys: ids.length }, 'could not record when API keys were last used'),
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
      cache.set(id, { row: null, principal: null, loadedAt: -Infinity });
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
