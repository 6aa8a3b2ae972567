import pg from 'pg';
import { isConnectionLost } from './failure.ts';
import { pgConnection } from './tls.ts';
import { GATEWAY_TYPES } from './type-parsers.ts';

export type Pool = pg.Pool;

export interface PoolOptions {
  readonly max?: number;
  readonly applicationName?: string;
  /** PHIGATE_DATABASE_CA_FILE: the CA that verifies the server when the URL asks for TLS. */
  readonly caFile?: string | null;
  /** How long a request may wait for a connection, opened or freed, before it is refused; default 5 s. */
  readonly connectionTimeoutMs?: number;
}

/** The gateway's pool, connected as its own login role. */
export function createPool(url: string, opts: PoolOptions = {}): Pool {
  const pool = new pg.Pool({
    ...pgConnection(url, opts.caFile ?? null),
    max: opts.max ?? 10,
    application_name: opts.applicationName ?? 'phigate',
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: opts.connectionTimeoutMs ?? 5_000,
    // A request's statements go out without waiting for the one before (src/db/transaction.ts).
    pipeline: true,
    types: GATEWAY_TYPES,
  });
  // An idle client that errors (server restart, network) must not crash the process; the pool
  // drops it and the next request gets a fresh connection.
  pool.on('error', () => undefined);
  // So must a checked-out one whose server connection dies between two of its queries (a
  // terminated backend, PgBouncer's "server conn crashed?"): without a listener the client's
  // 'error' event is an uncaught exception. Its holder sees the failure on its next query.
  pool.on('connect', (client) => {
    client.on('error', () => undefined);
    (client as unknown as Internals).connection.on('errorMessage', (msg: unknown) => endsSession(client as unknown as Internals, msg));
  });
  return pool;
}

/** The parts of pg's client (pg/lib/client.js) that say whether it can still be queried. */
interface Internals {
  readonly _queryable: boolean;
  readonly connection: { on(event: 'errorMessage', listener: (msg: unknown) => void): void; emit(event: 'error', err: Error): boolean };
}

/**
 * A server error that ends the session (FATAL, or a code that means so) answers the statement in
 * flight, and pg leaves the client queryable until the socket's end is read, a read later. A read
 * gives its connection back as its COMMIT leaves (transaction.ts, commitReadOnly): without this the
 * connection would sit in the pool in between, and its next holder would be the one told of a loss
 * that was the read's. Said as a connection error, pg's own path for a dead socket: the client
 * stops taking queries and the pool drops it, from its idle list or when its holder releases it.
 */
function endsSession(client: Internals, msg: unknown): void {
  const severity = (msg as { severity?: unknown }).severity;
  if (!client._queryable || !(severity === 'FATAL' || severity === 'PANIC' || isConnectionLost(msg))) return;
  client.connection.emit('error', new Error('Connection terminated unexpectedly', { cause: msg }));
}

export class UnsafeRoleError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`DATABASE_URL: the gateway's role is unsafe: ${problems.join('; ')}`);
    this.name = 'UnsafeRoleError';
  }
}

/**
 * Fail closed at start-up: row security only protects anything if the gateway's role cannot
 * bypass it. Refuse a superuser, BYPASSRLS, the owner of a PHI table, membership in the owner
 * role, and PHI tables without FORCE ROW LEVEL SECURITY.
 */
export async function assertSafeAppRole(pool: Pool): Promise<void> {
  const { rows } = await pool.query<{
    rolsuper: boolean;
    rolbypassrls: boolean;
    owner_member: boolean;
    owns_phi: boolean;
    unforced: string[];
  }>(`
    SELECT r.rolsuper, r.rolbypassrls,
           pg_has_role(current_user, 'phigate_owner', 'MEMBER') AS owner_member,
           EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'phigate' AND pg_has_role(current_user, c.relowner, 'MEMBER')) AS owns_phi,
           ARRAY(SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'phigate' AND c.relname IN ('patients', 'encounters', 'care_team')
                   AND NOT (c.relrowsecurity AND c.relforcerowsecurity)) AS unforced
    FROM pg_roles r WHERE r.rolname = current_user`);
  const r = rows[0];
  if (!r) throw new UnsafeRoleError(['role not found']);
  const problems: string[] = [];
  if (r.rolsuper) problems.push('it is a superuser');
  if (r.rolbypassrls) problems.push('it has BYPASSRLS');
  if (r.owner_member) problems.push('it is a member of phigate_owner');
  if (r.owns_phi) problems.push('it owns phigate tables');
  if (r.unforced.length) problems.push(`row security is not forced on ${r.unforced.join(', ')}`);
  if (problems.length) throw new UnsafeRoleError(problems);
}
