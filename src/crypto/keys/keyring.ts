import { LRUCache } from 'lru-cache';
import { PhigateError } from '../../errors.ts';
import { inSpan } from '../../telemetry/tracing.ts';
import { blindIndex, deriveBlindIndexKey } from '../blind-index.ts';
import type { BlindIndexColumn } from '../blind-index.ts';
import type { DataKey, PatientKey } from '../envelope.ts';
import { newPatientKey, openPatientKey } from '../patient-key.ts';
import { keyContext, type EncryptionContext, type KeyProvider } from './provider.ts';

export type KeyPurpose = 'data' | 'index';

export interface WrappedKeyRecord {
  readonly purpose: KeyPurpose;
  readonly scope: string;
  readonly version: number;
  readonly wrapped: Buffer;
  readonly provider: string;
  readonly keyRef: string;
}

/** A patient's key, wrapped by its clinic's data key `clinicVersion`; `wrapped` is null once shredded. */
export interface PatientKeyRecord {
  readonly patientId: string;
  readonly version: number;
  readonly clinicId: string;
  readonly clinicVersion: number;
  readonly wrapped: Buffer | null;
}

/**
 * A patient's wrapped key as the row's own statement brought it (phigate.patient_keys joined to
 * the patient row, src/db/patients.ts). Whose key it is comes from the row being read, never from
 * the join: the unwrap's AAD names that patient, its clinic and both versions, so a wrapped key of
 * another row does not open.
 */
export interface JoinedPatientKey {
  readonly version: number;
  readonly clinicVersion: number;
  readonly wrapped: Buffer;
}

/** An unwrapped key in the cache; `live` turns false when the cache lets it go and zero-fills it. */
export interface CachedKey {
  readonly id: string;
  readonly key: DataKey;
  /** On performance.now()'s clock, as the cache's own age limit: a wall-clock step cannot extend a key's life. */
  readonly expiresAt: number;
  uses: number;
  live: boolean;
}

/**
 * One row's keys, made as the row is loaded and dropped with it at the end of its request: the
 * wrapped key its statement brought, and the cache entry its first value was opened with, which
 * its other values use without asking the cache (the entry's bounds still hold).
 */
export interface RowKey {
  readonly joined: JoinedPatientKey | null;
  held: CachedKey | null;
}

export interface KeyStore {
  latest(purpose: KeyPurpose, scope: string): Promise<WrappedKeyRecord | null>;
  get(purpose: KeyPurpose, scope: string, version: number): Promise<WrappedKeyRecord | null>;
  /** inserts; returns false when (purpose, scope, version) already exists (another replica won the race) */
  insert(record: WrappedKeyRecord): Promise<boolean>;
  /** The patient's highest key version (a shredded patient's is a tombstone: `wrapped` null). */
  latestPatientKey(patientId: string): Promise<PatientKeyRecord | null>;
  /** The records of these (patient, version) pairs that exist, in one round trip. */
  patientKeys(refs: readonly { readonly patientId: string; readonly version: number }[]): Promise<PatientKeyRecord[]>;
  /** inserts; false when (patient, version) exists already (another writer, or a shredding, won the race) */
  insertPatientKey(record: PatientKeyRecord & { readonly wrapped: Buffer }): Promise<boolean>;
  /** The newest record of each of these patients that has one, in one round trip. */
  latestPatientKeys(patientIds: readonly string[]): Promise<PatientKeyRecord[]>;
  /** Inserts in one round trip; returns the patients whose record went in (not those that lost a race). */
  insertPatientKeys(records: readonly (PatientKeyRecord & { readonly wrapped: Buffer })[]): Promise<Set<string>>;
}

/** A patient key made for a store the caller chooses, with the record that stores it. */
export interface NewPatientKey {
  readonly key: PatientKey;
  readonly record: PatientKeyRecord & { readonly wrapped: Buffer };
}

export interface KeyringStats {
  kmsCalls: number;
  cacheHits: number;
  cacheMisses: number;
  /** Unwrapped keys the cache let go (age, uses or room) and zero-filled. */
  evictions: number;
  /** Keys asked again because the cache zero-filled the one handed out before a write path used it. */
  zeroedKeyRetries: number;
}

export interface Keyring {
  /** the current data key for a clinic, creating version 1 (wrapped via the provider, stored) when the clinic has none */
  writeKey(scope: string): Promise<DataKey>;
  /** A specific version, for decryption: synchronously when it is cached, as it is in steady state. */
  readKey(scope: string, version: number): DataKey | Promise<DataKey>;
  /**
   * The key new values of a patient are sealed under: the patient's key wrapped by the clinic's
   * current data key, created when the patient has none under that version. KEY_UNAVAILABLE
   * (`shredded`) for a shredded patient.
   */
  patientWriteKey(clinicId: string, patientId: string): Promise<PatientKey>;
  /**
   * The first key of a patient being created, wrapped by the clinic's current data key, and
   * neither stored nor cached: the caller writes `record` in the transaction that writes the
   * patient, so that a request which rolls back leaves no key of a patient who does not exist,
   * seals with `key` and zero-fills it. Reads open the stored record as any other.
   */
  firstPatientKey(clinicId: string, patientId: string): Promise<NewPatientKey>;
  /**
   * patientWriteKey for many patients at once, into the cache: one store lookup and at most one
   * insert for all of them (a re-encryption batch). A shredded patient is left out: its own
   * patientWriteKey then refuses it.
   */
  preparePatientWriteKeys(clinicId: string, patientIds: readonly string[]): Promise<void>;
  /** A patient key for decryption, synchronously when cached; misses of one tick share one store round trip. */
  patientReadKey(clinicId: string, patientId: string, clinicVersion: number, patientVersion: number): PatientKey | Promise<PatientKey>;
  /**
   * patientReadKey for a value of `row`: the row keeps the entry its first value resolved, so a
   * row's values ask the cache once. On a miss, the wrapped key the row's statement brought is
   * opened here, verified as a stored one is, with the cached clinic key and no store round trip,
   * when it is the version the ciphertext names; otherwise (a rotation in flight) the store is asked.
   */
  rowReadKey(row: RowKey, clinicId: string, patientId: string, clinicVersion: number, patientVersion: number): PatientKey | Promise<PatientKey>;
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
   * The blind index of an already-normalised value in a clinic under its index key `version`:
   * synchronously when that version's key is cached. The column key is derived once per cached
   * index key and kept with it (dropped and zero-filled with it); it never leaves the keyring.
   */
  blindIndexAt(column: BlindIndexColumn, scope: string, version: number, normalised: string): Buffer | Promise<Buffer>;
  /**
   * The newest blind-index key version of a clinic (1 when it has none of its own), as cached for
   * `latestTtlMs`: lookups try it and the one before, which covers every row while a rotation runs.
   */
  latestIndexVersion(scope: string): Promise<number>;
  /** Makes sure the clinic's own index key `version` (2 or more) exists; creates it when it does not. */
  ensureIndexKey(scope: string, version: number): Promise<void>;
  /**
   * Readiness: can this replica open data? Unwraps the blind-index root key unless it is cached
   * already and the key service answered its last call (then the answer is yes without a KMS call).
   * Never creates a key: with none stored yet, reaching the key store is the whole check.
   */
  probe(): Promise<void>;
  /**
   * Whether the key service answers now: a real unwrap of the blind-index root key (zeroed at
   * once), whatever the cache holds. For readiness to say "degraded" while cached keys still serve.
   */
  kmsReachable(): Promise<void>;
  readonly stats: Readonly<KeyringStats>;
}

/** How long, how often and how many unwrapped keys stay in memory. */
export interface KeyCacheBounds {
  /** An unwrapped key is dropped (zero-filled) this long after it was unwrapped. */
  readonly maxAgeMs: number;
  /** ... or after this many uses (one per value sealed or opened). */
  readonly maxUses: number;
  /** ... or when this many keys are cached and another is needed (least recently used first). */
  readonly maxEntries: number;
}

export const DEFAULT_KEY_CACHE: KeyCacheBounds = { maxAgeMs: 300_000, maxUses: 1_000_000, maxEntries: 20_000 };

export interface KeyringOptions {
  readonly provider: KeyProvider;
  readonly store: KeyStore;
  /**
   * How long the 'latest version' answer is cached, so a rotation on another replica is picked up:
   * new writes use a new version on every replica within this bound. Default 60 s, never more
   * than the cache's maximum age.
   */
  readonly latestTtlMs?: number;
  /** Bounds of the unwrapped-key cache; DEFAULT_KEY_CACHE for what is not given. */
  readonly cache?: Partial<KeyCacheBounds>;
}

const INDEX_ROOT_SCOPE = '*';
const MAX_VERSION = 0xffff_ffff;
/** How many times a write path asks for a key that keeps coming back zero-filled before it fails closed. */
const ZEROED_KEY_ATTEMPTS = 3;

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

function checkVersion(version: number): void {
  if (!Number.isInteger(version) || version < 1 || version > MAX_VERSION) throw unavailable('data key not found', 'key_not_found');
}

interface Pending {
  readonly clinicId: string;
  readonly patientId: string;
  readonly clinicVersion: number;
  readonly patientVersion: number;
  readonly settle: Array<{ resolve: (k: PatientKey) => void; reject: (e: unknown) => void }>;
}

// performance.now() read once per synchronous run of held-key checks (the microtasks queued
// before its first check), not once per value: a page's values are opened in one run, which lasts
// milliseconds against an age bound of minutes, so a held key is used at most that run's length
// past its age. A run that has not read it yet reads it afresh.
let runNow = -1;
const endRun = (): void => {
  runNow = -1;
};
function clockOfRun(): number {
  if (runNow < 0) {
    runNow = performance.now();
    queueMicrotask(endRun);
  }
  return runNow;
}

/**
 * Data keys and patient keys, unwrapped once and cached within bounds (age, uses, entries), so the
 * steady state makes no KMS calls and no key stays in memory unbounded: an evicted key's bytes are
 * zero-filled. Each wrapped data key's encryption context names its purpose, scope and version: a
 * wrapped key copied to another clinic's row in the key table will not unwrap. Returned key
 * buffers are the cached ones, shared by every caller: never write to them, and use them at once
 * (a key held across an await may be zeroed by then, and is refused by the envelope if so; the
 * keyring's own write paths ask again then, see withLiveKey).
 */
export function createKeyring(opts: KeyringOptions): Keyring {
  const { provider, store } = opts;
  const bounds: KeyCacheBounds = { ...DEFAULT_KEY_CACHE, ...opts.cache };
  if (!(bounds.maxEntries >= 1) || !(bounds.maxUses >= 1) || !(bounds.maxAgeMs >= 1)) {
    throw new PhigateError('INTERNAL', 'key cache bounds must be at least 1');
  }
  const latestTtlMs = Math.min(opts.latestTtlMs ?? 60_000, bounds.maxAgeMs);

  const stats: KeyringStats = { kmsCalls: 0, cacheHits: 0, cacheMisses: 0, evictions: 0, zeroedKeyRetries: 0 };
  // Blind-index column keys derived from a cached index key, by `${column}:${clinic}`: kept with
  // the entry they came from, so that none outlives its root's age, uses or place in the cache.
  const derivedOf = new WeakMap<CachedKey, Map<string, Buffer>>();
  const keys = new LRUCache<string, CachedKey>({
    max: bounds.maxEntries,
    ttl: bounds.maxAgeMs,
    updateAgeOnGet: false,
    // Overwritten, deleted, expired or pushed out: the key's bytes, and those derived from it, go with the entry.
    dispose: (entry) => {
      stats.evictions++;
      entry.live = false;
      entry.key.key.fill(0);
      const derived = derivedOf.get(entry);
      if (derived === undefined) return;
      derivedOf.delete(entry);
      for (const k of derived.values()) k.fill(0);
    },
  });
  const latest = new LRUCache<string, { version: number; clinicId: string; clinicVersion: number; expiresAt: number }>({ max: bounds.maxEntries });
  const unwrapping = new Map<string, Promise<Buffer>>();
  const resolving = new Map<string, Promise<number>>();
  const patientWriting = new Map<string, Promise<PatientKey>>();
  let pending = new Map<string, Pending>();
  // Whether the key service failed its last call: readiness then asks it again rather than trusting the cache.
  let kmsFailing = false;
  let indexRecord: WrappedKeyRecord | null = null;

  // Looked up once per decrypted field: a plain string, unambiguous because only the scope,
  // which comes last, is free text.
  const idOf = (purpose: KeyPurpose | 'patient', scope: string, version?: number): string => `${purpose}:${version ?? ''}:${scope}`;
  const contextFor = (purpose: KeyPurpose, scope: string, version: number): EncryptionContext => keyContext(purpose, scope, version);

  async function kms<T>(operation: 'decrypt' | 'generate', call: () => Promise<T>): Promise<T> {
    stats.kmsCalls++;
    try {
      const out = await inSpan('phigate.kms', { 'phigate.kms.operation': operation }, call);
      kmsFailing = false;
      return out;
    } catch (e) {
      kmsFailing = true;
      throw e;
    }
  }

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
    latest.set(id, { version: Math.max(known, version), clinicId: scope, clinicVersion: 0, expiresAt: Date.now() + latestTtlMs });
  }

  /** A cached key's entry, counted as one use; past its uses it is dropped (zeroed) and the caller misses. */
  function cachedEntry(id: string): CachedKey | undefined {
    const entry = keys.get(id);
    if (!entry) return undefined;
    if (++entry.uses > bounds.maxUses) {
      keys.delete(id);
      return undefined;
    }
    stats.cacheHits++;
    return entry;
  }

  const cached = (id: string): DataKey | undefined => cachedEntry(id)?.key;

  // Two loads of one key may finish together: the first cached copy stays (a caller may be using
  // it), the second is zeroed and not handed out.
  function remember<K extends DataKey>(id: string, key: K): K {
    const existing = keys.peek(id);
    if (existing) {
      key.key.fill(0);
      return existing.key as K;
    }
    keys.set(id, { id, key, expiresAt: performance.now() + bounds.maxAgeMs, uses: 0, live: true });
    return key;
  }

  function unwrap(purpose: KeyPurpose, scope: string, version: number): Promise<Buffer> {
    const id = idOf(purpose, scope, version);
    const hit = cached(id);
    if (hit) return Promise.resolve(hit.key);
    stats.cacheMisses++;
    return singleFlight(unwrapping, id, async () => {
      const record = await fromStore(store.get(purpose, scope, version));
      if (!record) throw unavailable('data key not found', 'key_not_found');
      if (record.provider !== provider.name || record.keyRef !== provider.keyRef) {
        throw unavailable('data key is wrapped under a different master key', 'wrong_master_key');
      }
      if (purpose === 'index') indexRecord = record;
      const key = await kms('decrypt', () => provider.decryptDataKey(record.wrapped, contextFor(purpose, scope, version)));
      return remember(id, { scope, version, key }).key;
    });
  }

  /** Generates and stores `version`; returns the version now current, which is another replica's when it won the race. */
  async function create(purpose: KeyPurpose, scope: string, version: number): Promise<number> {
    const { plaintext, wrapped } = await kms('generate', () => provider.generateDataKey(contextFor(purpose, scope, version)));
    let inserted: boolean;
    try {
      inserted = await fromStore(store.insert({ purpose, scope, version, wrapped, provider: provider.name, keyRef: provider.keyRef }));
    } catch (e) {
      plaintext.fill(0);
      throw e;
    }
    if (inserted) {
      remember(idOf(purpose, scope, version), { scope, version, key: plaintext });
      return version;
    }
    // Never used: data sealed under it would be unreadable to every other replica.
    plaintext.fill(0);
    const winner = await fromStore(store.latest(purpose, scope));
    if (!winner) throw unavailable('key store lost a key it reported as existing', 'key_store_error');
    return winner.version;
  }

  function currentVersion(purpose: KeyPurpose, scope: string): Promise<number> {
    const known = latest.get(idOf(purpose, scope));
    if (known && known.expiresAt > Date.now()) return Promise.resolve(known.version);
    return singleFlight(resolving, idOf(purpose, scope), async () => {
      const record = await fromStore(store.latest(purpose, scope));
      const version = record ? record.version : await create(purpose, scope, 1);
      rememberLatest(purpose, scope, version);
      return version;
    });
  }

  function checkIndexKey(scope: string, version: number): void {
    checkScope(scope);
    if (!Number.isInteger(version) || version < 1 || version > MAX_VERSION) throw unavailable('blind index key not found', 'key_not_found');
  }

  /** A clinic's column key of index key `version`, derived afresh: the caller's to keep and zero-fill. */
  async function indexKeyAt(column: BlindIndexColumn, scope: string, version: number): Promise<Buffer> {
    const derive = (root: Buffer) => deriveBlindIndexKey(root, column, scope);
    if (version === 1) return withLiveKey(async () => unwrap('index', INDEX_ROOT_SCOPE, await currentVersion('index', INDEX_ROOT_SCOPE)), derive);
    return withLiveKey(() => unwrap('index', scope, version), derive);
  }

  /** The cached 'latest version' of a scope while it is fresh, without asking the store. */
  function knownVersion(purpose: KeyPurpose, scope: string): number | undefined {
    const known = latest.get(idOf(purpose, scope));
    return known && known.expiresAt > Date.now() ? known.version : undefined;
  }

  /** The index key entry a clinic's blind-index `version` derives from, when it is cached (one use of it). */
  function cachedIndexEntry(scope: string, version: number): CachedKey | undefined {
    if (version > 1) return cachedEntry(idOf('index', scope, version));
    const root = knownVersion('index', INDEX_ROOT_SCOPE);
    return root === undefined ? undefined : cachedEntry(idOf('index', INDEX_ROOT_SCOPE, root));
  }

  // At most as many column keys per index key as the cache holds keys: a flood of clinic ids
  // cannot grow it; the ones past the bound are derived, used and zero-filled each time.
  function indexDigest(entry: CachedKey, column: BlindIndexColumn, scope: string, normalised: string): Buffer {
    let derived = derivedOf.get(entry);
    if (derived === undefined) {
      derived = new Map();
      derivedOf.set(entry, derived);
    }
    const id = `${column}:${scope}`;
    const kept = derived.get(id);
    if (kept !== undefined) return blindIndex(kept, normalised);
    const key = deriveBlindIndexKey(entry.key.key, column, scope);
    if (derived.size < bounds.maxEntries) {
      derived.set(id, key);
      return blindIndex(key, normalised);
    }
    try {
      return blindIndex(key, normalised);
    } finally {
      key.fill(0);
    }
  }

  async function clinicKey(scope: string, version: number): Promise<DataKey> {
    return { scope, version, key: await unwrap('data', scope, version) };
  }

  // The key `get` gives, used by `use` in the same synchronous run as its check. The cache may have
  // zero-filled it between its hit and the caller resuming (an await apart), which `use` refuses
  // (invalid_key: newPatientKey, openPatientKey, deriveBlindIndexKey); the entry is gone from the cache by then, so
  // asking again unwraps the real key. Still refused after ZEROED_KEY_ATTEMPTS: fails closed.
  async function withLiveKey<K, T>(get: () => Promise<K>, use: (key: K) => T): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const key = await get();
      try {
        return use(key);
      } catch (e) {
        if (attempt >= ZEROED_KEY_ATTEMPTS || !(e instanceof PhigateError) || e.reason !== 'invalid_key') throw e;
        stats.zeroedKeyRetries++;
      }
    }
  }

  /** Opens a stored patient key after checking it belongs where the ciphertext says it does. */
  async function openRecord(record: PatientKeyRecord, clinicId: string, clinicVersion: number): Promise<PatientKey> {
    const wrapped = record.wrapped;
    if (wrapped === null) throw unavailable("the key of this patient's data was destroyed", 'shredded');
    if (record.clinicId !== clinicId || record.clinicVersion !== clinicVersion) throw unavailable('encrypted field could not be decrypted', 'decrypt_failed');
    const key = await withLiveKey(() => clinicKey(clinicId, clinicVersion), (clinic) => openPatientKey(clinic, record.patientId, record.version, wrapped));
    return remember(idOf('patient', record.patientId, record.version), key);
  }

  // Every patient key missed within one tick (a page of patients) is fetched in one round trip.
  function flushPending(): void {
    const batch = [...pending.values()];
    pending = new Map();
    const fail = (p: Pending, e: unknown) => p.settle.forEach((s) => s.reject(e));
    fromStore(store.patientKeys(batch.map((p) => ({ patientId: p.patientId, version: p.patientVersion })))).then(
      (records) => {
        const byId = new Map(records.map((r) => [`${r.version}:${r.patientId}`, r]));
        for (const p of batch) {
          const record = byId.get(`${p.patientVersion}:${p.patientId}`);
          if (!record) {
            fail(p, unavailable('patient key not found', 'key_not_found'));
            continue;
          }
          openRecord(record, p.clinicId, p.clinicVersion).then(
            (k) => p.settle.forEach((s) => s.resolve(k)),
            (e: unknown) => fail(p, e),
          );
        }
      },
      (e: unknown) => batch.forEach((p) => fail(p, e)),
    );
  }

  function loadPatientKey(clinicId: string, patientId: string, clinicVersion: number, patientVersion: number): Promise<PatientKey> {
    return new Promise((resolve, reject) => {
      const id = `${patientVersion}:${patientId}`;
      let entry = pending.get(id);
      if (!entry) {
        if (pending.size === 0) setImmediate(flushPending);
        entry = { clinicId, patientId, clinicVersion, patientVersion, settle: [] };
        pending.set(id, entry);
      }
      entry.settle.push({ resolve, reject });
    });
  }

  function cachedPatientEntry(clinicId: string, patientId: string, clinicVersion: number, patientVersion: number): CachedKey | undefined {
    const entry = cachedEntry(idOf('patient', patientId, patientVersion));
    // The same patient key version under another clinic or clinic key is not this ciphertext's key.
    if (entry && (entry.key.scope !== clinicId || entry.key.version !== clinicVersion)) throw unavailable('encrypted field could not be decrypted', 'decrypt_failed');
    return entry;
  }

  const cachedPatientKey = (clinicId: string, patientId: string, clinicVersion: number, patientVersion: number): PatientKey | undefined =>
    cachedPatientEntry(clinicId, patientId, clinicVersion, patientVersion)?.key as PatientKey | undefined;

  function checkReadKey(clinicId: string, clinicVersion: number, patientVersion: number): void {
    checkScope(clinicId);
    checkVersion(clinicVersion);
    checkVersion(patientVersion);
  }

  // The entry the row's previous value used, when it is this ciphertext's key and still within
  // its bounds: live (not evicted, so not zeroed), young enough, one more use allowed.
  function heldKey(row: RowKey, clinicId: string, patientId: string, clinicVersion: number, patientVersion: number): PatientKey | undefined {
    const held = row.held;
    if (held === null) return undefined;
    if (!held.live) {
      row.held = null;
      return undefined;
    }
    const key = held.key as PatientKey;
    if (key.patientId !== patientId || key.patientVersion !== patientVersion || key.version !== clinicVersion || key.scope !== clinicId) return undefined;
    if (held.expiresAt <= clockOfRun() || ++held.uses > bounds.maxUses) {
      keys.delete(held.id);
      row.held = null;
      return undefined;
    }
    stats.cacheHits++;
    return key;
  }

  /** A miss with the row's joined wrapped key in hand: opened like a stored record, bound to this row's patient. */
  function openJoined(row: RowKey, joined: JoinedPatientKey, clinicId: string, patientId: string): PatientKey | Promise<PatientKey> {
    const record: PatientKeyRecord = { patientId, version: joined.version, clinicId, clinicVersion: joined.clinicVersion, wrapped: joined.wrapped };
    const clinic = cached(idOf('data', clinicId, joined.clinicVersion));
    // The clinic key itself missed (cold replica, or evicted): its unwrap is a KMS call anyway.
    if (clinic === undefined) return openRecord(record, clinicId, joined.clinicVersion);
    const id = idOf('patient', patientId, joined.version);
    const key = remember(id, openPatientKey(clinic, patientId, joined.version, joined.wrapped));
    row.held = keys.peek(id) ?? null;
    return key;
  }

  /** The patient's key under the clinic's current version, creating the next patient key version when needed. */
  async function writablePatientKey(clinicId: string, patientId: string): Promise<PatientKey> {
    const clinicVersion = await currentVersion('data', clinicId);
    const known = latest.get(idOf('patient', patientId));
    if (known && known.clinicId === clinicId && known.clinicVersion >= clinicVersion && known.expiresAt > Date.now()) {
      const hit = cachedPatientKey(clinicId, patientId, known.clinicVersion, known.version);
      if (hit) return hit;
    }
    for (let attempt = 0; attempt < 3; attempt++) {
      const record = await fromStore(store.latestPatientKey(patientId));
      if (record && record.wrapped === null) throw unavailable("the key of this patient's data was destroyed", 'shredded');
      let key: PatientKey;
      // A key under a newer clinic version than this replica knows of (another replica rotated first) is as good.
      if (record && record.clinicId === clinicId && record.clinicVersion >= clinicVersion) {
        key = cachedPatientKey(clinicId, patientId, record.clinicVersion, record.version) ?? (await openRecord(record, clinicId, record.clinicVersion));
      } else {
        const version = (record?.version ?? 0) + 1;
        checkVersion(version);
        const made = await withLiveKey(() => clinicKey(clinicId, clinicVersion), (clinic) => newPatientKey(clinic, patientId, version));
        const inserted = await fromStore(store.insertPatientKey({ patientId, version, clinicId, clinicVersion, wrapped: made.wrapped }));
        if (!inserted) {
          // Another writer or a shredding took this version first: look again.
          made.key.key.fill(0);
          continue;
        }
        key = remember(idOf('patient', patientId, version), made.key);
      }
      latest.set(idOf('patient', patientId), { version: key.patientVersion, clinicId, clinicVersion: key.version, expiresAt: Date.now() + latestTtlMs });
      return key;
    }
    throw unavailable('patient key could not be created', 'key_store_error');
  }

  return {
    stats,
    async writeKey(scope) {
      checkScope(scope);
      const version = await currentVersion('data', scope);
      return clinicKey(scope, version);
    },
    readKey(scope, version) {
      checkScope(scope);
      checkVersion(version);
      const hit = cached(idOf('data', scope, version));
      if (hit) return hit;
      return clinicKey(scope, version);
    },
    patientWriteKey(clinicId, patientId) {
      checkScope(clinicId);
      return singleFlight(patientWriting, `${clinicId}:${patientId}`, () => writablePatientKey(clinicId, patientId));
    },
    async firstPatientKey(clinicId, patientId) {
      checkScope(clinicId);
      const clinicVersion = await currentVersion('data', clinicId);
      const made = await withLiveKey(() => clinicKey(clinicId, clinicVersion), (clinic) => newPatientKey(clinic, patientId, 1));
      return { key: made.key, record: { patientId, version: 1, clinicId, clinicVersion, wrapped: made.wrapped } };
    },
    async preparePatientWriteKeys(clinicId, patientIds) {
      checkScope(clinicId);
      const clinicVersion = await currentVersion('data', clinicId);
      const records = new Map((await fromStore(store.latestPatientKeys(patientIds))).map((r) => [r.patientId, r]));
      const point = (key: PatientKey) =>
        latest.set(idOf('patient', key.patientId), { version: key.patientVersion, clinicId, clinicVersion: key.version, expiresAt: Date.now() + latestTtlMs });
      const fresh: { key: PatientKey; wrapped: Buffer }[] = [];
      for (const patientId of patientIds) {
        const record = records.get(patientId);
        if (record && record.wrapped === null) continue;
        if (record && record.clinicId === clinicId && record.clinicVersion >= clinicVersion) {
          point(cachedPatientKey(clinicId, patientId, record.clinicVersion, record.version) ?? (await openRecord(record, clinicId, record.clinicVersion)));
          continue;
        }
        const version = (record?.version ?? 0) + 1;
        checkVersion(version);
        // Fetched for each: an await above may have let the cache drop (and zero) an earlier copy.
        fresh.push(await withLiveKey(() => clinicKey(clinicId, clinicVersion), (clinic) => newPatientKey(clinic, patientId, version)));
      }
      if (fresh.length === 0) return;
      const inserted = await fromStore(
        store.insertPatientKeys(fresh.map((m) => ({ patientId: m.key.patientId, version: m.key.patientVersion, clinicId, clinicVersion, wrapped: m.wrapped }))),
      );
      for (const m of fresh) {
        if (inserted.has(m.key.patientId)) point(remember(idOf('patient', m.key.patientId, m.key.patientVersion), m.key));
        else m.key.key.fill(0);
      }
    },
    patientReadKey(clinicId, patientId, clinicVersion, patientVersion) {
      checkReadKey(clinicId, clinicVersion, patientVersion);
      const hit = cachedPatientKey(clinicId, patientId, clinicVersion, patientVersion);
      if (hit) return hit;
      stats.cacheMisses++;
      return loadPatientKey(clinicId, patientId, clinicVersion, patientVersion);
    },
    rowReadKey(row, clinicId, patientId, clinicVersion, patientVersion) {
      const held = heldKey(row, clinicId, patientId, clinicVersion, patientVersion);
      if (held) return held;
      checkReadKey(clinicId, clinicVersion, patientVersion);
      const entry = cachedPatientEntry(clinicId, patientId, clinicVersion, patientVersion);
      if (entry) {
        row.held = entry;
        return entry.key as PatientKey;
      }
      stats.cacheMisses++;
      const joined = row.joined;
      if (joined !== null && joined.version === patientVersion && joined.clinicVersion === clinicVersion) return openJoined(row, joined, clinicId, patientId);
      return loadPatientKey(clinicId, patientId, clinicVersion, patientVersion);
    },
    async blindIndexKey(column, scope) {
      checkScope(scope);
      const version = await currentVersion('index', INDEX_ROOT_SCOPE);
      return withLiveKey(() => unwrap('index', INDEX_ROOT_SCOPE, version), (root) => deriveBlindIndexKey(root, column, scope));
    },
    async probe() {
      const known = latest.get(idOf('index', INDEX_ROOT_SCOPE))?.version;
      const version = known ?? (await fromStore(store.latest('index', INDEX_ROOT_SCOPE)))?.version;
      if (version === undefined) return;
      // Looked up directly, not through cached(): probes must not inflate the statistics or use up keys.
      if (!kmsFailing && keys.has(idOf('index', INDEX_ROOT_SCOPE, version))) return;
      stats.cacheMisses++;
      const record = await fromStore(store.get('index', INDEX_ROOT_SCOPE, version));
      if (!record) throw unavailable('data key not found', 'key_not_found');
      // A real call even when the key is cached: after a failure, only the service itself can say it is back.
      const key = await kms('decrypt', () => provider.decryptDataKey(record.wrapped, contextFor('index', INDEX_ROOT_SCOPE, version)));
      remember(idOf('index', INDEX_ROOT_SCOPE, version), { scope: INDEX_ROOT_SCOPE, version, key });
    },
    async kmsReachable() {
      // The key store is the database's to report: a record seen before is enough to ask the KMS.
      const record = indexRecord ?? (await store.latest('index', INDEX_ROOT_SCOPE).catch(() => null));
      if (!record) return;
      indexRecord = record;
      const key = await kms('decrypt', () => provider.decryptDataKey(record.wrapped, contextFor('index', INDEX_ROOT_SCOPE, record.version)));
      key.fill(0);
    },
    async blindIndexKeyAt(column, scope, version) {
      checkIndexKey(scope, version);
      return indexKeyAt(column, scope, version);
    },
    blindIndexAt(column, scope, version, normalised) {
      checkIndexKey(scope, version);
      const entry = cachedIndexEntry(scope, version);
      if (entry !== undefined) return indexDigest(entry, column, scope, normalised);
      // Unwrapped (or its version learnt) now; the next call finds it cached and keeps the column key.
      return indexKeyAt(column, scope, version).then((key) => {
        try {
          return blindIndex(key, normalised);
        } finally {
          key.fill(0);
        }
      });
    },
    latestIndexVersion(scope) {
      checkScope(scope);
      const known = knownVersion('index', scope);
      if (known !== undefined) return Promise.resolve(known);
      const id = idOf('index', scope);
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
