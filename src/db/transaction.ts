import type pg from 'pg';
import { PhigateError } from '../errors.ts';
import type { RequestPhases } from '../telemetry/phases.ts';
import { inSpan, tracing } from '../telemetry/tracing.ts';
import { CONTEXT_NAME as IDENT } from './context-name.ts';
import { dbUnavailable } from './failure.ts';
import type { Pool } from './pool.ts';
import { isParsed, sendInTick, sendTickNow } from './one-sync.ts';

/** One statement and its parameters, for a caller that wants it sent in a later round trip. */
export interface Statement {
  readonly text: string;
  readonly values?: readonly unknown[];
}

/**
 * Read with BEGIN and the context, in their round trip; `onRows` sees its rows before any statement's
 * caller does. It runs inside the context's own statement, after the settings are made; its text
 * numbers its parameters from $1, and the transaction renumbers them after the context's.
 */
export interface Preamble extends Statement {
  readonly onRows: (rows: readonly pg.QueryResultRow[]) => void;
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
  /**
   * Named prepared statements (default on). Off for a connection pooler that cannot keep them
   * per client, e.g. PgBouncer in transaction mode before 1.21 or without max_prepared_statements.
   */
  readonly preparedStatements?: boolean;
}

export interface RequestTransaction {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: readonly unknown[]): Promise<pg.QueryResult<R>>;
  /**
   * Sends `final` (in order) and COMMIT in one round trip. Throws when the transaction cannot
   * commit, CommitFailed naming the final statement that failed; then it is rolled back.
   */
  commit(final?: readonly Statement[]): Promise<void>;
  rollback(): Promise<void>;
  /**
   * Ends the transaction from outside the request (timeout, shutdown): rolls back now, and the
   * request can neither query nor commit afterwards. false when a commit had already begun: then
   * the commit decides, and the request's own answer stands.
   */
  abort(): Promise<boolean>;
  /**
   * Round trips to PostgreSQL, BEGIN + context and COMMIT included, i.e. the times the request
   * waited for the database with nothing else in flight: tests and the bench assert on it.
   */
  readonly roundTrips: number;
  /** A statement failed: PostgreSQL has aborted the transaction and nothing more can be written in it. */
  readonly failed: boolean;
  /**
   * What failed it first (a statement's error, the session ending under it), for the answer to
   * classify (src/db/failure.ts); never shown as it is. undefined while it has not failed, or when
   * it was aborted from outside.
   */
  readonly failure: unknown;
  /**
   * Makes the transaction BEGIN READ ONLY when called before its first query (the request is a
   * query, not a mutation); no effect once it has begun. A read then writes nothing, no WAL and
   * no durable COMMIT: its audit rows go to the audit writer (src/audit/writer.ts).
   */
  readOnly(): void;
  /**
   * The next statement is the request's last: a read-only transaction sends its COMMIT right behind
   * it, in the same round trip, and gives the connection back as that COMMIT leaves; commit() then
   * waits for its answer. A statement sent after it fails (the transaction has ended). No effect on
   * a transaction that may write.
   */
  endWithNext(): void;
}

const SHREDDED_SQLSTATE = 'PH410';
const NO_VALUES: readonly unknown[] = [];

const CONTEXT_SETTINGS = [
  'statement_timeout',
  'idle_in_transaction_session_timeout',
  'phigate.actor',
  'phigate.actor_kind',
  'phigate.roles',
  'phigate.clinics',
  'phigate.request_id',
  'phigate.purpose',
] as const;
// is_local = true scopes every setting to this transaction only.
//
// plan_cache_mode: under `auto` PostgreSQL planned the request's statements again on every
// execution (0.4-1 ms of planning for a 0.05 ms lookup by id: the generic plan's estimate for
// `= ANY($1)` is ten rows, so it never looked cheaper than a custom one). The statements are the
// gateway's own, written so that a generic plan serves every parameter (no `$1 IS NULL OR`, which
// a generic plan cannot turn into an index condition), and they are prepared once per connection:
// each is planned once per connection instead of once per request.
const SET_CONTEXT = `${CONTEXT_SETTINGS.map((name, i) => `set_config('${name}', $${i + 1}, true)`).join(', ')}, set_config('plan_cache_mode', 'force_generic_plan', true) AS ready`;
const CONTEXT_SQL = `SELECT ${SET_CONTEXT}`;

// Marks the preamble's own rows in the statement that carries both.
const PREAMBLE_ROW = 'phigate_preamble_row';

/**
 * The context and the preamble as one statement: one statement fewer to bind, execute and answer on
 * every request. The context is the preserved side of a LEFT JOIN, so the settings are made whatever
 * the preamble returns, and the preamble is LATERAL to it, so it runs after them and sees them.
 */
function contextStatement(values: readonly string[], preamble: Preamble | undefined): Statement {
  if (preamble === undefined) return { text: CONTEXT_SQL, values };
  return { text: withPreamble(preamble.text), values: [...values, ...(preamble.values ?? [])] };
}

// The preambles are the code's own few texts (the PHI minute's): each is combined once, not per request.
const combined = new Map<string, string>();
function withPreamble(text: string): string {
  let statement = combined.get(text);
  if (statement === undefined) {
    const inner = text.replace(/\$(\d+)/g, (_, n: string) => `$${Number(n) + CONTEXT_SETTINGS.length}`);
    statement = `SELECT preamble.* FROM (SELECT ${SET_CONTEXT}) AS context LEFT JOIN LATERAL (SELECT true AS ${PREAMBLE_ROW}, p.* FROM (${inner}) AS p WHERE context.ready IS NOT NULL) AS preamble ON true`;
    if (combined.size < MAX_NAMED_STATEMENTS) combined.set(text, statement);
  }
  return statement;
}

function contextValues(ctx: SecurityContext, opts: TransactionOptions): string[] {
  for (const c of ctx.clinics) if (!IDENT.test(c)) throw new PhigateError('FORBIDDEN', 'A clinic id in the credentials is not valid.');
  for (const r of ctx.roles) if (!IDENT.test(r)) throw new PhigateError('FORBIDDEN', 'A role in the credentials is not valid.');
  return [
    String(opts.statementTimeoutMs ?? 5_000),
    String(opts.idleInTransactionTimeoutMs ?? 10_000),
    ctx.actor,
    ctx.actorKind,
    ctx.roles.join(','),
    ctx.clinics.join(','),
    ctx.requestId,
    ctx.purpose,
  ];
}

// Parsing and planning a statement again for every request was a large part of PostgreSQL's CPU
// per request. Parameterised statements are prepared once per connection under a name derived
// from their text. The texts are the code's own (a few hundred at most, counting the column
// subsets of writes); past the bound a text simply goes unnamed.
const MAX_NAMED_STATEMENTS = 512;
const statementNames = new Map<string, string>();
function nameFor(text: string): string | undefined {
  let name = statementNames.get(text);
  if (name === undefined && statementNames.size < MAX_NAMED_STATEMENTS) statementNames.set(text, (name = `phigate_${statementNames.size + 1}`));
  return name;
}

/** commit() failed: `statement` is the index of the final statement that failed, null when COMMIT itself did. */
export class CommitFailed extends PhigateError {
  constructor(
    readonly statement: number | null,
    cause: unknown,
  ) {
    super('INTERNAL', 'The request could not be completed.', { reason: 'commit_failed', cause });
  }
}

/**
 * One transaction per GraphQL request, opened lazily on the first query so that requests which
 * touch no data cost nothing. Queries issued concurrently by resolvers share the one connection.
 *
 * Statements are pipelined (the pool's clients run in pg's pipeline mode): BEGIN and the context
 * travel with the first query, and the final statements (audit rows, PHI usage) with COMMIT, so a
 * request of one statement costs two round trips, or one when it is a read that says so
 * (endWithNext). Those sent in one tick also share one Sync (src/db/one-sync.ts):
 * BEGIN, the context and the first query are answered with one ReadyForQuery, not three. A
 * statement that fails aborts the transaction, and every statement behind it fails too: nothing
 * sent after a failure can be committed.
 */
export function openRequestTransaction(
  pool: Pool,
  ctx: SecurityContext,
  opts: TransactionOptions = {},
  preamble?: Preamble,
  phases: RequestPhases | null = null,
): RequestTransaction {
  let client: pg.PoolClient | null = null;
  let opening: Promise<pg.PoolClient> | null = null;
  // Settles when BEGIN, the context and the preamble have: no result reaches a caller before.
  let ready: Promise<unknown> = Promise.resolve();
  const tx = new Transaction();
  const fail = (cause: unknown) => {
    tx.failed = true;
    tx.failure ??= cause;
  };
  let finished = false;
  // Set the moment COMMIT or ROLLBACK is decided, before anything is awaited: a statement queued
  // behind either would run outside this transaction, or inside the next request's once the
  // connection is back in the pool. abort() ends a transaction while resolvers may still query.
  let ending: 'commit' | 'rollback' | null = null;
  let rollingBack: Promise<void> | null = null;
  let inFlight = 0;
  let begin = 'BEGIN ISOLATION LEVEL READ COMMITTED';
  let readOnly = false;
  // endWithNext() was called: the next query sends COMMIT behind it, whose end is then `committedAhead`.
  let commitNext = false;
  let committedAhead: Promise<pg.QueryResult> | null = null;
  // A named statement was sent whose Parse PostgreSQL had not answered on this session (see endWithNext's release).
  let parseUnanswered = false;
  // BEGIN, the context and the preamble have succeeded.
  let contextReady = false;
  // The pool listens for errors of idle clients only. Without this, the server ending the session
  // between two statements (idle_in_transaction_session_timeout, a restart) would be an uncaught
  // exception that takes the whole gateway down; instead the transaction fails and cannot commit.
  const lost = fail;

  /** Sends at once; a statement sent while others are unanswered rides in their round trip. */
  const send = <R extends pg.QueryResultRow>(c: pg.PoolClient, text: string, values?: readonly unknown[]): Promise<pg.QueryResult<R>> => {
    if (inFlight++ === 0) tx.roundTrips++;
    const name = values !== undefined && opts.preparedStatements !== false ? nameFor(text) : undefined;
    if (name !== undefined && !isParsed(c, name, text)) parseUnanswered = true;
    const run = () => sendInTick<R>(c, text, values, name);
    // Traced by the first keyword only: statement text can carry escaped values.
    const sent = tracing() ? inSpan('phigate.sql', { 'db.system.name': 'postgresql', 'db.operation.name': /^\s*(\w+)/.exec(text)?.[1]?.toUpperCase() ?? 'UNKNOWN' }, run) : run();
    void sent.then(
      () => inFlight--,
      () => inFlight--,
    );
    return sent;
  };

  const open = (): Promise<pg.PoolClient> => {
    if (finished || ending) return Promise.reject(new PhigateError('INTERNAL', 'The request transaction has already ended.'));
    opening ??= (async () => {
      let context: string[];
      try {
        context = contextValues(ctx, opts);
      } catch (err) {
        fail(err);
        throw err;
      }
      if (phases !== null) phases.connectAsked = performance.now();
      const c = await pool.connect().catch((cause: unknown) => {
        const refused = dbUnavailable(cause);
        fail(refused);
        throw refused;
      });
      if (phases !== null) phases.connected = performance.now();
      c.on('error', lost);
      client = c;
      const setContext = contextStatement(context, preamble);
      ready = Promise.all([
        // With (no) parameters, so that it shares its Sync with the context and the first query.
        send(c, begin, NO_VALUES),
        send(c, setContext.text, setContext.values).then((r) => preamble?.onRows(r.rows.filter((row) => row[PREAMBLE_ROW] === true))),
      ]).then(
        () => {
          contextReady = true;
        },
        (cause: unknown) => {
          // Nothing can run in it: settle answers with the refusal, not a failed commit.
          const refused = cause instanceof PhigateError ? cause : dbUnavailable(cause);
          fail(refused);
          throw refused;
        },
      );
      ready.catch(() => undefined);
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

  /**
   * A read that succeeded gives its connection back the moment its COMMIT is sent, not when it is
   * answered: the next request's BEGIN, context and first query then leave behind that COMMIT, in
   * the same socket write when that request was waiting for a connection (one write and one round
   * trip fewer per read under load). PostgreSQL runs a connection's statements in order, so those
   * run after this transaction, and its context with it, has ended. The request still waits for the
   * answer: a COMMIT that fails fails the request. The connection needs no ROLLBACK then, whatever
   * happened: a read-only transaction none of whose statements failed ends with its COMMIT, or
   * the session is gone: the server's FATAL answers this COMMIT, and the pool drops the connection
   * then (pool.ts), so a next holder that takes it afterwards gets a fresh one. One already waiting
   * when it was given back has its statements behind this COMMIT, and fails with it, as
   * db_unavailable.
   */
  const commitReadOnly = async (c: pg.PoolClient): Promise<void> => {
    const committing = send(c, 'COMMIT');
    committing.catch(() => undefined);
    sendTickNow(c);
    release(false);
    let result: pg.QueryResult;
    try {
      result = await committing;
    } catch (cause) {
      throw new CommitFailed(null, cause);
    }
    if (result.command !== 'COMMIT') throw new CommitFailed(null, new Error('transaction was rolled back by the server'));
  };

  /** commit() of a transaction whose COMMIT went ahead (endWithNext): it has nothing more to send. */
  const commitAhead = async (ahead: Promise<pg.QueryResult>, final: readonly Statement[]): Promise<void> => {
    if (tx.failed || final.length > 0) {
      await rollback();
      throw new PhigateError('INTERNAL', 'The request could not be completed.', { reason: tx.failed ? 'transaction_failed' : 'transaction_ended' });
    }
    let result: pg.QueryResult;
    try {
      [, result] = await Promise.all([ready, ahead]);
    } catch (cause) {
      throw new CommitFailed(null, cause);
    }
    if (result.command !== 'COMMIT') throw new CommitFailed(null, new Error('transaction was rolled back by the server'));
  };

  const rollback = (): Promise<void> => {
    ending ??= 'rollback';
    // Once only, however many callers: a second ROLLBACK would reach the connection after release.
    rollingBack ??= (async () => {
      if (committedAhead !== null) {
        // Nothing of a read is kept whichever way its COMMIT went; the request's answer is its error.
        await committedAhead.catch(() => undefined);
        return;
      }
      if (opening === null || finished) {
        finished = true;
        return;
      }
      const c = await opening.catch(() => null);
      if (!c) {
        finished = true;
        return;
      }
      try {
        await send(c, 'ROLLBACK');
        release(false);
      } catch {
        // A connection that cannot roll back is not returned to the pool.
        release(true);
      }
    })();
    return rollingBack;
  };

  tx.query = async <R extends pg.QueryResultRow>(text: string, values?: readonly unknown[]): Promise<pg.QueryResult<R>> => {
    const c = await open();
    if (ending) throw new PhigateError('INTERNAL', 'The request transaction has already ended.', { reason: 'transaction_ended' });
    const result = send<R>(c, text, values);
    result.catch(() => undefined);
    if (commitNext) {
      commitNext = false;
      ending = 'commit';
      // The connection goes back to the pool as this COMMIT leaves, as commitReadOnly's does, not
      // when it answers: a request waiting for a connection then sends its BEGIN, context and first
      // query behind it, in the same socket write, and the read's fields are resolved without
      // holding it. COMMIT has no parameters, so it goes after the statement's Sync: a statement
      // that failed leaves it to answer ROLLBACK, the connection clean for that next holder; a
      // session that ended answers it with its FATAL, and the pool drops the connection (pool.ts).
      //
      // Unless a Parse of this transaction may still be unanswered: had its group failed before it,
      // PostgreSQL would skip it while pg counts it as submitted, and a next holder sending the same
      // statement behind this COMMIT would only Bind it and fail (26000) for this request's failure.
      // Such a connection goes back when the COMMIT answers (a connection's first uses only).
      committedAhead = send(c, 'COMMIT');
      committedAhead.catch(() => undefined);
      sendTickNow(c);
      if (!parseUnanswered) release(false);
      else
        void committedAhead.then(
          () => release(false),
          () => release(true),
        );
    }
    try {
      await ready;
      return await result;
    } catch (err) {
      fail(err);
      // schema/migrations/027_refuse_shredded_writes.sql: a write to a patient whose keys were destroyed.
      if ((err as { code?: unknown }).code === SHREDDED_SQLSTATE) throw new PhigateError('KEY_UNAVAILABLE', "The key of this patient's data was destroyed.", { reason: 'shredded' });
      throw err;
    }
  };
  tx.commit = async (final = []) => {
    if (opening === null && final.length === 0) {
      finished = true;
      return;
    }
    if (committedAhead !== null) return commitAhead(committedAhead, final);
    const c = await open();
    if (tx.failed) {
      await rollback();
      throw new PhigateError('INTERNAL', 'The request could not be completed.', { reason: 'transaction_failed' });
    }
    if (ending) throw new PhigateError('INTERNAL', 'The request could not be completed.', { reason: 'transaction_ended' });
    ending = 'commit';
    if (readOnly && contextReady && final.length === 0 && inFlight === 0) return commitReadOnly(c);
    const finals = final.map((s) => send(c, s.text, s.values));
    const committing = send(c, 'COMMIT');
    const [opened, commit, ...outcomes] = await Promise.allSettled([ready, committing, ...finals]);
    const failedAt = outcomes.findIndex((o) => o.status === 'rejected');
    if (opened.status === 'rejected' || failedAt !== -1) {
      // PostgreSQL answers COMMIT of an aborted transaction with ROLLBACK: the connection is clean.
      release(commit.status === 'rejected');
      const cause = opened.status === 'rejected' ? opened.reason : (outcomes[failedAt] as PromiseRejectedResult).reason;
      throw new CommitFailed(opened.status === 'rejected' ? null : failedAt, cause);
    }
    if (commit.status === 'rejected' || commit.value.command !== 'COMMIT') {
      release(true);
      throw new CommitFailed(null, commit.status === 'rejected' ? commit.reason : new Error('transaction was rolled back by the server'));
    }
    release(false);
  };
  tx.rollback = rollback;
  tx.abort = async () => {
    // A read whose COMMIT went ahead keeps nothing either way: it is ended like any read.
    if (ending === 'commit' && committedAhead === null) return false;
    tx.failed = true;
    await rollback();
    return true;
  };
  tx.endWithNext = () => {
    if (readOnly && ending === null) commitNext = true;
  };
  tx.readOnly = () => {
    if (opening !== null) return;
    begin = 'BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY';
    readOnly = true;
  };
  return tx;
}

/**
 * A request's handle on its transaction: an instance with plain fields, its methods the closures of
 * openRequestTransaction, because an object literal with getters, made per request, cost 1-3 us
 * to create (V8 defines each accessor at run time) against ~0.1 us for an instance. Only this
 * module writes the fields; callers see them read-only through RequestTransaction.
 */
class Transaction implements RequestTransaction {
  roundTrips = 0;
  failed = false;
  failure: unknown = undefined;
  query!: RequestTransaction['query'];
  commit!: RequestTransaction['commit'];
  rollback!: RequestTransaction['rollback'];
  abort!: RequestTransaction['abort'];
  readOnly!: RequestTransaction['readOnly'];
  endWithNext!: RequestTransaction['endWithNext'];
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
