import { LRUCache } from 'lru-cache';
import { PhigateError } from '../../errors.ts';
import { inSpan } from '../../telemetry/tracing.ts';
import { deriveBlindIndexKey } from '../blind-index.ts';
import type { BlindIndexColumn } from '../blind-index.ts';
import type { DataKey } from '../envelope.ts';
import type { EncryptionContext, KeyProvider } from './provider.ts';

export type KeyPurpose = 'data' | 'index';

export interface WrappedKeyRecord {
  readonly purpose: KeyPurpose;
  readonly scope: string;
  readonly version: number;
  readonly wrapped: Buffer;
  readonly provider: string;
  readonly keyRef: string;
}

export interface KeyStore {
  latest(purpose: KeyPurpose, scope: string): Promise<WrappedKeyRecord | null>;
  get(purpose: KeyPurpose, scope: string, version: number): Promise<WrappedKeyRecord | null>;
  /** inserts; returns false when (purpose, scope, version) already exists (another replica won the race) */
  insert(record: WrappedKeyRecord): Promise<boolean>;
}

export interface KeyringStats {
  kmsCalls: number;
  cacheHits: number;
  cacheMisses: number;
}

export interface Keyring {
  /** the current data key for a clinic, creating version 1 (wrapped via the provider, stored) when the clinic has none */
  writeKey(scope: string): Promise<DataKey>;
  /** A specific version, for decryption: synchronously when it is cached, as it is in steady state. */
  readKey(scope: string, version: number): DataKey | Promise<DataKey>;
  /** the per-column per-clinic blind-index key, derived from a single 'index' root key (purpose 'index', scope '*'), created on first use */
  blindIndexKey(column: BlindIndexColumn, scope: string): Promise<Buffer>;
  /** new version for a scope (key rotation); old versions stay readable */
  rotate(purpose: KeyPurpose, scope: string): Promise<number>;
  /**
   * A clinic's blind-index key of one version: 1 is `blindIndexKey`'s (derived from the shared
   * root), 2 and later are keys of the clinic's own (purpose 'index', scope = the clinic).
   */
  blindIndexKeyAt(column: BlindIndexColumn, scope: string, version: number): Promise<Buffer>;
  /**
   * The newest blind-index key version of a clinic (1 when it has none of its own), as cached for
   * `latestTtlMs`: lookups try it and the one before, which covers every row while a rotation runs.
   */
  latestIndexVersion(scope: string): Promise<number>;
  /** Makes sure the clinic's own index key `version` (2 or more) exists; creates it when it does not. */
  ensureIndexKey(scope: string, version: number): Promise<void>;
  /**
   * Readiness: can this replica open data? Unwraps the blind-index root key unless it is cached
   * already (then the answer is yes without a KMS call). Never creates a key: with none stored
   * yet, reaching the key store is the whole check.
   */
  probe(): Promise<void>;
  readonly stats: Readonly<KeyringStats>;
}

export interface KeyringOptions {
  readonly provider: KeyProvider;
  readonly store: KeyStore;
  /** How long the 'latest version' answer is cached, so a rotation on another replica is picked up. Default 60 s. */
  readonly latestTtlMs?: number;
  /** Bound on cached unwrapped keys (and on cached latest versions). Default 10 000. */
  readonly maxEntries?: number;
}

const INDEX_ROOT_SCOPE = '*';
const MAX_VERSION = 0xffff_ffff;

function unavailable(message: string, reason: string, cause?: unknown): PhigateError {
  return new PhigateError('KEY_UNAVAILABLE', message, { reason, cause });
}

// The store is a database: its failures surface as KEY_UNAVAILABLE like any other missing key.
async function fromStore<T>(op: Promise<T>): Promise<T> {
  try {
    return await op;
  } catch (e) {
    if (e instanceof PhigateError) throw e;
    throw unavailable('key store is unavailable', 'key_store_error', e);
  }
}

function checkScope(scope: string): void {
  if (scope === '') throw new PhigateError('BAD_USER_INPUT', 'clinic id must not be empty', { reason: 'malformed_identifier' });
}

/**
 * Data keys, unwrapped once and cached, so the steady state makes no KMS calls. Each wrapped key's
 * encryption context names its purpose, scope and version: a wrapped key copied to another
 * clinic's row in the key table will not unwrap. Returned key buffers are the cached ones, shared
 * by every caller: never write to them.
 */
export function createKeyring(opts: KeyringOptions): Keyring {
  const { provider, store } = opts;
  const latestTtlMs = opts.latestTtlMs ?? 60_000;
  const maxEntries = opts.maxEntries ?? 10_000;
  if (!(maxEntries >= 1)) throw new PhigateError('INTERNAL', 'keyring maxEntries must be at least 1');

  const stats: KeyringStats = { kmsCalls: 0, cacheHits: 0, cacheMisses: 0 };
  const keys = new LRUCache<string, Buffer>({ max: maxEntries });
  const latest = new LRUCache<string, { version: number; expiresAt: number }>({ max: maxEntries });
  const unwrapping = new Map<string, Promise<Buffer>>();
  const resolving = new Map<string, Promise<number>>();

  // Looked up once per decrypted field: a plain string, unambiguous because only the scope,
  // which comes last, is free text.
  const idOf = (purpose: KeyPurpose, scope: string, version?: number): string => `${purpose}:${version ?? ''}:${scope}`;
  const contextFor = (purpose: KeyPurpose, scope: string, version: number): EncryptionContext => ({
    purpose,
    scope,
    version: String(version),
  });

  // Callers that miss together share one load; the entry is removed once it settles, so a
  // failure is not remembered and the next caller tries again.
  function singleFlight<T>(inflight: Map<string, Promise<T>>, id: string, load: () => Promise<T>): Promise<T> {
    const pending = inflight.get(id);
    if (pending) return pending;
    const loaded = load().finally(() => inflight.delete(id));
    inflight.set(id, loaded);
    return loaded;
  }

  // Versions only grow, so a slow lookup finishing after a rotation must not move 'latest' back.
  function rememberLatest(purpose: KeyPurpose, scope: string, version: number): void {
    const id = idOf(purpose, scope);
    const known = latest.get(id)?.version ?? 0;
    latest.set(id, { version: Math.max(known, version), expiresAt: Date.now() + latestTtlMs });
  }

  function cachedKey(purpose: KeyPurpose, scope: string, version: number): Buffer | undefined {
    const cached = keys.get(idOf(purpose, scope, version));
    if (cached) stats.cacheHits++;
    return cached;
  }

  function unwrap(purpose: KeyPurpose, scope: string, version: number): Promise<Buffer> {
    const cached = cachedKey(purpose, scope, version);
    if (cached) return Promise.resolve(cached);
    const id = idOf(purpose, scope, version);
    stats.cacheMisses++;
    return singleFlight(unwrapping, id, async () => {
      const record = await fromStore(store.get(purpose, scope, version));
      if (!record) throw unavailable('data key not found', 'key_not_found');
      if (record.provider !== provider.name || record.keyRef !== provider.keyRef) {
        throw unavailable('data key is wrapped under a different master key', 'wrong_master_key');
      }
      stats.kmsCalls++;
      const key = await inSpan('phigate.kms', { 'phigate.kms.operation': 'decrypt' }, () =>
        provider.decryptDataKey(record.wrapped, contextFor(purpose, scope, version)),
      );
      keys.set(id, key);
      return key;
    });
  }

  /** Generates and stores `version`; returns the version now current, which is another replica's when it won the race. */
  async function create(purpose: KeyPurpose, scope: string, version: number): Promise<number> {
    stats.kmsCalls++;
    const { plaintext, wrapped } = await inSpan('phigate.kms', { 'phigate.kms.operation': 'generate' }, () =>
      provider.generateDataKey(contextFor(purpose, scope, version)),
    );
    let inserted: boolean;
    try {
      inserted = await fromStore(store.insert({ purpose, scope, version, wrapped, provider: provider.name, keyRef: provider.keyRef }));
    } catch (e) {
      plaintext.fill(0);
      throw e;
    }
    if (inserted) {
      keys.set(idOf(purpose, scope, version), plaintext);
      return version;
    }
    // Never used: data sealed under it would be unreadable to every other replica.
    plaintext.fill(0);
    const winner = await fromStore(store.latest(purpose, scope));
    if (!winner) throw unavailable('key store lost a key it reported as existing', 'key_store_error');
    return winner.version;
  }

  function currentVersion(purpose: KeyPurpose, scope: string): Promise<number> {
    const cached = latest.get(idOf(purpose, scope));
    if (cached && cached.expiresAt > Date.now()) return Promise.resolve(cached.version);
    return singleFlight(resolving, idOf(purpose, scope), async () => {
      const record = await fromStore(store.latest(purpose, scope));
      const version = record ? record.version : await create(purpose, scope, 1);
      rememberLatest(purpose, scope, version);
      return version;
    });
  }

  return {
    stats,
    async writeKey(scope) {
      checkScope(scope);
      const version = await currentVersion('data', scope);
      return { scope, version, key: await unwrap('data', scope, version) };
    },
    readKey(scope, version) {
      checkScope(scope);
      if (!Number.isInteger(version) || version < 1 || version > MAX_VERSION) {
        throw unavailable('data key not found', 'key_not_found');
      }
      const cached = cachedKey('data', scope, version);
      if (cached) return { scope, version, key: cached };
      return unwrap('data', scope, version).then((key) => ({ scope, version, key }));
    },
    async blindIndexKey(column, scope) {
      checkScope(scope);
      const version = await currentVersion('index', INDEX_ROOT_SCOPE);
      return deriveBlindIndexKey(await unwrap('index', INDEX_ROOT_SCOPE, version), column, scope);
    },
    async probe() {
      const known = latest.get(idOf('index', INDEX_ROOT_SCOPE))?.version;
      const version = known ?? (await fromStore(store.latest('index', INDEX_ROOT_SCOPE)))?.version;
      // Looked up directly, not through unwrap(): probes must not inflate the cache-hit statistics.
      if (version === undefined || keys.get(idOf('index', INDEX_ROOT_SCOPE, version))) return;
      await unwrap('index', INDEX_ROOT_SCOPE, version);
    },
    async blindIndexKeyAt(column, scope, version) {
      checkScope(scope);
      if (!Number.isInteger(version) || version < 1 || version > MAX_VERSION) throw unavailable('blind index key not found', 'key_not_found');
      if (version === 1) return deriveBlindIndexKey(await unwrap('index', INDEX_ROOT_SCOPE, await currentVersion('index', INDEX_ROOT_SCOPE)), column, scope);
      return deriveBlindIndexKey(await unwrap('index', scope, version), column, scope);
    },
    latestIndexVersion(scope) {
      checkScope(scope);
      const id = idOf('index', scope);
      const cached = latest.get(id);
      if (cached && cached.expiresAt > Date.now()) return Promise.resolve(cached.version);
      // Unlike data keys, none is created here: a clinic with no key of its own is at version 1.
      return singleFlight(resolving, id, async () => {
        const version = (await fromStore(store.latest('index', scope)))?.version ?? 1;
        rememberLatest('index', scope, version);
        return version;
      });
    },
    async ensureIndexKey(scope, version) {
      checkScope(scope);
      if (scope === INDEX_ROOT_SCOPE || !Number.isInteger(version) || version < 2 || version > MAX_VERSION) {
        throw new PhigateError('BAD_USER_INPUT', 'a clinic index key version must be 2 or more', { reason: 'invalid_version' });
      }
      if (await fromStore(store.get('index', scope, version))) return;
      await create('index', scope, version);
    },
    async rotate(purpose, scope) {
      // Blind indexes are stored, not recomputed: a new root would silently stop every lookup
      // matching until all rows were re-indexed, which needs a migration, not a rotation.
      if (purpose === 'index') {
        throw new PhigateError('BAD_USER_INPUT', 'the blind-index root key cannot be rotated in place', { reason: 'index_rotation_unsupported' });
      }
      checkScope(scope);
      // From the store, not the cache: a rotation must build on the true latest version.
      const current = await fromStore(store.latest(purpose, scope));
      const version = await create(purpose, scope, (current?.version ?? 0) + 1);
      rememberLatest(purpose, scope, version);
      return version;
    },
  };
}
