import type pg from 'pg';

/** A pool or a request transaction: key statements run on either. */
export interface Queryable {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: readonly unknown[]): Promise<pg.QueryResult<R>>;
}

/** What the database holds about one key: never its secret, only the keyed hash of it. */
export interface ApiKeyRow {
  readonly id: string;
  readonly partner: string;
  readonly clinics: string[];
  readonly fields: string[];
  readonly purpose: string;
  readonly secret_hash: Buffer;
  readonly pepper_version: number;
  readonly rate_per_minute: number;
  readonly burst: number;
  readonly created_by: string;
  readonly created_at: Date;
  readonly expires_at: Date | null;
  readonly revoked_at: Date | null;
  readonly replaces: string | null;
  readonly last_used_at: Date | null;
}

export interface NewApiKey {
  readonly id: string;
  readonly partner: string;
  readonly clinics: readonly string[];
  readonly fields: readonly string[];
  readonly purpose: string;
  readonly secretHash: Buffer;
  readonly pepperVersion: number;
  readonly ratePerMinute: number;
  readonly burst: number;
  readonly createdBy: string;
  readonly expiresInSeconds: number;
  readonly replaces: string | null;
}

const COLUMNS = `id::text, partner, clinics, fields, purpose, secret_hash, pepper_version, rate_per_minute, burst,
  created_by, created_at, expires_at, revoked_at, replaces::text, last_used_at`;

const q = (db: Queryable, text: string, values: readonly unknown[]) => db.query<ApiKeyRow>(text, values as unknown[]);

const BY_ID = `SELECT ${COLUMNS} FROM phigate.api_keys WHERE id = $1::uuid`;

export async function apiKeyById(db: Queryable, id: string): Promise<ApiKeyRow | null> {
  return (await q(db, BY_ID, [id])).rows[0] ?? null;
}

/** A pool, never a request's transaction: a credential is looked up before there is one. */
export interface LookupPool {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(config: pg.QueryConfig): Promise<pg.QueryResult<R>>;
}

/**
 * apiKeyById for authentication, which whoever sends a made-up key makes run: pg's per-query
 * timeout (its typings leave it out) drops a connection whose answer does not come, so a hung
 * database cannot keep the pool's connections for lookups nobody waits for any more.
 */
export async function lookupApiKey(db: LookupPool, id: string, timeoutMs: number): Promise<ApiKeyRow | null> {
  const query = { text: BY_ID, values: [id], query_timeout: timeoutMs };
  return (await db.query<ApiKeyRow>(query)).rows[0] ?? null;
}

/** Expiry is reckoned from the database's clock, which row security judges it by. */
export async function insertApiKey(db: Queryable, k: NewApiKey): Promise<ApiKeyRow> {
  const { rows } = await q(
    db,
    `INSERT INTO phigate.api_keys
       (id, partner, clinics, fields, purpose, secret_hash, pepper_version, rate_per_minute, burst, created_by, expires_at, replaces)
     VALUES ($1::uuid, $2, $3::text[], $4::text[], $5, $6, $7, $8, $9, $10, now() + make_interval(secs => $11), $12::uuid)
     RETURNING ${COLUMNS}`,
    [k.id, k.partner, k.clinics, k.fields, k.purpose, k.secretHash, k.pepperVersion, k.ratePerMinute, k.burst, k.createdBy, k.expiresInSeconds, k.replaces],
  );
  return rows[0] as ApiKeyRow;
}

/**
 * Keys an administrator of `clinics` answers for: those that can read any of its clinics (null:
 * every key, for the operator's command line), newest first; at most `limit` of them (null: all).
 */
export async function listApiKeys(db: Queryable, clinics: readonly string[] | null, limit: number | null): Promise<ApiKeyRow[]> {
  return (await q(db, `SELECT ${COLUMNS} FROM phigate.api_keys WHERE $1::text[] IS NULL OR clinics && $1::text[] ORDER BY created_at DESC, id LIMIT $2`, [clinics, limit])).rows;
}

/** Revokes now; a key already revoked keeps its first revocation time. null when no such key. */
export async function revokeApiKeyRow(db: Queryable, id: string): Promise<ApiKeyRow | null> {
  const { rows } = await q(
    db,
    `UPDATE phigate.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1::uuid RETURNING ${COLUMNS}`,
    [id],
  );
  return rows[0] ?? null;
}

/**
 * Ends a rotated-out key at the end of the overlap, never later than it would have ended anyway;
 * null when the key is revoked, expired or already rotated. The row is locked by a statement of its
 * own first: under READ COMMITTED a second rotation waits there for the first to end, and only then
 * takes the snapshot in which the UPDATE looks for a successor, so it sees the first one's. In one
 * statement it would wait on the UPDATE's row lock and re-check the row alone, its NOT EXISTS
 * still reading the snapshot from before the first committed (both minted a successor). The
 * unique index of migration 071 refuses a second successor whatever path writes it.
 */
export async function cutApiKeyExpiry(db: Queryable, id: string, overlapSeconds: number): Promise<ApiKeyRow | null> {
  await db.query('SELECT 1 FROM phigate.api_keys WHERE id = $1::uuid FOR UPDATE', [id]);
  const { rows } = await q(
    db,
    `UPDATE phigate.api_keys
       SET expires_at = least(coalesce(expires_at, 'infinity'), now() + make_interval(secs => $2))
     WHERE id = $1::uuid AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
       AND NOT EXISTS (SELECT 1 FROM phigate.api_keys n WHERE n.replaces = $1::uuid)
     RETURNING ${COLUMNS}`,
    [id, overlapSeconds],
  );
  return rows[0] ?? null;
}

/** One statement for every key used since the last write, at most once a minute per key each. */
export async function touchApiKeys(db: Queryable, ids: readonly string[]): Promise<void> {
  await db.query(
    `UPDATE phigate.api_keys SET last_used_at = now()
     WHERE id = ANY ($1::uuid[]) AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`,
    [ids],
  );
}

export interface PepperRow {
  readonly version: number;
  readonly wrapped: Buffer;
  readonly provider: string;
  readonly key_ref: string;
}

export async function latestPepper(db: Queryable): Promise<PepperRow | null> {
  return (await db.query<PepperRow>('SELECT version, wrapped, provider, key_ref FROM phigate.api_key_peppers ORDER BY version DESC LIMIT 1')).rows[0] ?? null;
}

export async function pepperByVersion(db: Queryable, version: number): Promise<PepperRow | null> {
  return (await db.query<PepperRow>('SELECT version, wrapped, provider, key_ref FROM phigate.api_key_peppers WHERE version = $1', [version])).rows[0] ?? null;
}

/** false when another replica stored that version first. */
export async function insertPepper(db: Queryable, p: PepperRow): Promise<boolean> {
  const { rowCount } = await db.query(
    'INSERT INTO phigate.api_key_peppers (version, wrapped, provider, key_ref) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING',
    [p.version, p.wrapped, p.provider, p.key_ref],
  );
  return rowCount === 1;
}
