import type pg from 'pg';
import { PhigateError } from '../errors.ts';
import { inSpan } from '../telemetry/tracing.ts';
import type { Pool } from './pool.ts';

// Resolvers issue statements concurrently; one connection runs them one after another. node-postgres
// used to queue them itself, but deprecates that (removed in pg 9), so each connection keeps its own
// queue here. A failed statement does not stop the queue: the next one meets the aborted transaction.
const queues = new WeakMap<pg.PoolClient, Promise<unknown>>();

/** One round trip, traced by its first keyword only: statement text can carry escaped values. */
function send<R extends pg.QueryResultRow>(c: pg.PoolClient, text: string, values?: readonly unknown[]): Promise<pg.QueryResult<R>> {
  const operation = /^\s*(\w+)/.exec(text)?.[1]?.toUpperCase() ?? 'UNKNOWN';
  const run = (queues.get(c) ?? Promise.resolve()).then(() =>
    inSpan('phigate.sql', { 'db.system.name': 'postgresql', 'db.operation.name': operation }, () => c.query<R>(text, values as unknown[] | undefined)),
  );
  queues.set(c, run.catch(() => undefined));
  return run;
}

/** What row security reads (see schema/migrations/004_row_security.sql). */
export interface SecurityContext {
  readonly actor: string;
  readonly actorKind: 'user' | 'partner';
  /** Only roles the principal holds AND whose MFA requirement it meets. */
  readonly roles: readonly string[];
  readonly clinics: readonly string[];
  readonly requestId: string;
  readonly purpose: string;
}

export interface TransactionOptions {
  readonly statementTimeoutMs?: number;
  readonly idleInTransactionTimeoutMs?: number;
}

export interface RequestTransaction {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: readonly unknown[]): Promise<pg.QueryResult<R>>;
  /** Commits when anything was sent; throws when the transaction cannot commit (then it is rolled back). */
  commit(): Promise<void>;
  rollback(): Promise<void>;
  /**
   * Ends the transaction from outside the request (timeout, shutdown): rolls back now, and the
   * request can neither query nor commit afterwards. false when a commit had already begun: then
   * the commit decides, and the request's own answer stands.
   */
  abort(): Promise<boolean>;
  /** Round trips sent to PostgreSQL, including BEGIN + context and COMMIT: tests and the bench assert on it. */
  readonly roundTrips: number;
  /** A statement failed: PostgreSQL has aborted the transaction and nothing more can be written in it. */
  readonly failed: boolean;
}

const IDENT = /^[a-z0-9][a-z0-9_-]{0,62}$/;

function contextSql(client: pg.PoolClient, ctx: SecurityContext, opts: TransactionOptions): string {
  for (const c of ctx.clinics) if (!IDENT.test(c)) throw new PhigateError('FORBIDDEN', 'A clinic id in the credentials is not valid.');
  for (const r of ctx.roles) if (!IDENT.test(r)) throw new PhigateError('FORBIDDEN', 'A role in the credentials is not valid.');
  const settings: [string, string][] = [
    ['statement_timeout', String(opts.statementTimeoutMs ?? 5_000)],
    ['idle_in_transaction_session_timeout', String(opts.idleInTransactionTimeoutMs ?? 10_000)],
    ['phigate.actor', ctx.actor],
    ['phigate.actor_kind', ctx.actorKind],
    ['phigate.roles', ctx.roles.join(',')],
    ['phigate.clinics', ctx.clinics.join(',')],
    ['phigate.request_id', ctx.requestId],
    ['phigate.purpose', ctx.purpose],
  ];
  // One round trip: BEGIN and every setting travel as one simple-protocol message. Values are
  // escaped literals; is_local = true scopes them to this transaction only.
  const calls = settings.map(([k, v]) => `set_config(${client.escapeLiteral(k)}, ${client.escapeLiteral(v)}, true)`);
  return `BEGIN ISOLATION LEVEL READ COMMITTED; SELECT ${calls.join(', ')}`;
}

/**
 * One transaction per GraphQL request, opened lazily on the first query so that requests which
 * touch no data cost nothing. Queries issued concurrently by resolvers share the one connection.
 */
export function openRequestTransaction(pool: Pool, ctx: SecurityContext, opts: TransactionOptions = {}): RequestTransaction {
  let client: pg.PoolClient | null = null;
  let opening: Promise<pg.PoolClient> | null = null;
  let failed = false;
  let finished = false;
  // Set the moment COMMIT or ROLLBACK is decided, before anything is awaited: a statement queued
  // behind either would run outside this transaction, or inside the next request's once the
  // connection is back in the pool. abort() ends a transaction while resolvers may still query.
  let ending: 'commit' | 'rollback' | null = null;
  let rollingBack: Promise<void> | null = null;
  let roundTrips = 0;
  // The pool listens for errors of idle clients only. Without this, the server ending the session
  // between two statements (idle_in_transaction_session_timeout, a restart) would be an uncaught
  // exception that takes the whole gateway down; instead the transaction fails and cannot commit.
  const lost = () => {
    failed = true;
  };

  const open = (): Promise<pg.PoolClient> => {
    if (finished || ending) return Promise.reject(new PhigateError('INTERNAL', 'The request transaction has already ended.'));
    opening ??= (async () => {
      const c = await pool.connect().catch((cause: unknown) => {
        throw new PhigateError('INTERNAL', 'The database is unavailable.', { reason: 'db_unavailable', cause });
      });
      c.on('error', lost);
      try {
        roundTrips++;
        await send(c, contextSql(c, ctx, opts));
      } catch (err) {
        failed = true; // nothing can run in it: settle answers with the refusal, not a failed commit
        c.off('error', lost);
        c.release(true);
        throw err instanceof PhigateError ? err : new PhigateError('INTERNAL', 'The database is unavailable.', { reason: 'db_unavailable', cause: err });
      }
      client = c;
      return c;
    })();
    return opening;
  };

  const release = (destroy: boolean) => {
    finished = true;
    client?.off('error', lost);
    client?.release(destroy);
    client = null;
  };

  return {
    async query(text, values) {
      const c = await open();
      if (ending) throw new PhigateError('INTERNAL', 'The request transaction has already ended.', { reason: 'transaction_ended' });
      roundTrips++;
      try {
        return await send(c, text, values);
      } catch (err) {
        failed = true;
        throw err;
      }
    },
    async commit() {
      if (opening === null) {
        finished = true;
        return;
      }
      const c = await opening;
      if (failed) {
        await this.rollback();
        throw new PhigateError('INTERNAL', 'The request could not be completed.', { reason: 'transaction_failed' });
      }
      if (ending) throw new PhigateError('INTERNAL', 'The request could not be completed.', { reason: 'transaction_ended' });
      ending = 'commit';
      roundTrips++;
      try {
        const res = await send(c, 'COMMIT');
        // PostgreSQL answers COMMIT of an aborted transaction with ROLLBACK, not an error.
        if (res.command !== 'COMMIT') throw new Error('transaction was rolled back by the server');
        release(false);
      } catch (cause) {
        release(true);
        throw new PhigateError('INTERNAL', 'The request could not be completed.', { reason: 'commit_failed', cause });
      }
    },
    rollback() {
      ending ??= 'rollback';
      // Once only, however many callers: a second ROLLBACK would reach the connection after release.
      rollingBack ??= (async () => {
        if (opening === null || finished) {
          finished = true;
          return;
        }
        const c = await opening.catch(() => null);
        if (!c) {
          finished = true;
          return;
        }
        roundTrips++;
        try {
          await send(c, 'ROLLBACK');
          release(false);
        } catch {
          // A connection that cannot roll back is not returned to the pool.
          release(true);
        }
      })();
      return rollingBack;
    },
    async abort() {
      if (ending === 'commit') return false;
      failed = true;
      await this.rollback();
      return true;
    },
    get roundTrips() {
      return roundTrips;
    },
    get failed() {
      return failed;
    },
  };
}

/** For code outside GraphQL (CLI, tests): run `fn` in a request transaction, commit or roll back. */
export async function withRequestTransaction<T>(
  pool: Pool,
  ctx: SecurityContext,
  fn: (tx: RequestTransaction) => Promise<T>,
  opts?: TransactionOptions,
): Promise<T> {
  const tx = openRequestTransaction(pool, ctx, opts);
  let result: T;
  try {
    result = await fn(tx);
  } catch (err) {
    await tx.rollback();
    throw err;
  }
  await tx.commit();
  return result;
}
