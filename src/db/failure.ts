import { PhigateError } from '../errors.ts';

/**
 * What a failure of the database means to the client, said in one place for every path that meets
 * one (a request's transaction, the search quota, the clinic list, API-key lookups, and whatever a
 * resolver lets through to the error mask). The answer names a code and a reason, never the
 * driver's message, SQL or a value: those may carry PHI.
 */

/**
 * No connection came (the pool's wait ran out, the server refused or dropped it), or the session
 * ended under the request: nothing of the request was kept, and the same request may well succeed a
 * moment later. Said with 503 and Retry-After, like an admission refusal: a 200 carrying INTERNAL
 * reads, to a client or a balancer, as a bug, not as something to retry.
 */
export const dbUnavailable = (cause: unknown): PhigateError =>
  new PhigateError('INTERNAL', 'The database is unavailable.', { reason: 'db_unavailable', cause, http: { status: 503, headers: { 'Retry-After': '1' } } });

/**
 * The request ran out of time: its deadline (use-request-timeout.ts) or a statement's
 * (statement_timeout, 57014). Either way it was rolled back whole.
 */
export const requestTimedOut = (cause?: unknown): PhigateError =>
  new PhigateError('INTERNAL', 'The request took too long and was abandoned; nothing of it was kept.', {
    reason: 'request_timeout',
    ...(cause === undefined ? {} : { cause }),
    http: { status: 503, headers: { 'Retry-After': '1' } },
  });

/**
 * A write's COMMIT was sent and no answer came (the connection was lost, or the request's deadline
 * passed while it waited): it may or may not have been kept. No Retry-After: resending a write that
 * was kept would make it twice. 504, like a gateway whose upstream did not answer in time.
 */
export const commitOutcomeUnknown = (cause?: unknown): PhigateError =>
  new PhigateError('INTERNAL', 'The request took too long; whether its changes were kept is not known.', {
    reason: 'commit_outcome_unknown',
    ...(cause === undefined ? {} : { cause }),
    http: { status: 504 },
  });

/**
 * PostgreSQL ended the request's transaction to break a deadlock (40P01) or a serialization failure
 * (40001) with a concurrent one: it was rolled back whole, and the same request sent again will
 * most likely succeed. 503 with Retry-After, like db_unavailable, rather than 409: a 409 asks the
 * client to change something before resending, and here nothing about the request was wrong;
 * clients and balancers already retry a 503 that carries Retry-After, and nothing was kept, so a
 * write resent cannot be made twice. No code of the contract means a conflict; INTERNAL with a
 * reason of its own, as the other database answers.
 */
export const dbConflict = (cause: unknown): PhigateError =>
  new PhigateError('INTERNAL', 'The request met a concurrent one in the database and was rolled back; nothing of it was kept.', {
    reason: 'db_conflict',
    cause,
    http: { status: 503, headers: { 'Retry-After': '1' } },
  });

const STATEMENT_TIMEOUT = '57014';
const CONFLICT = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
]);

// SQLSTATEs of a session or server that went away or could not take the request: the statement did
// not run, or ran in a transaction that is now rolled back.
const UNAVAILABLE = new Set([
  '25P03', // idle_in_transaction_session_timeout: the server ended the session
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, shutting down, recovering)
  '57P05', // idle_session_timeout
  '53300', // too_many_connections
  '53400', // configuration_limit_exceeded (a role's or database's connection limit)
]);

// Socket errors of the connection to the server.
const SOCKET = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

// pg and pg-pool say a lost or refused connection with a plain Error and no code: these are their
// own messages (pg 8: lib/client.js, pg-pool/index.js), matched whole, never a server's.
const DRIVER_MESSAGES = new Set([
  'timeout exceeded when trying to connect',
  'Connection terminated due to connection timeout',
  'Connection terminated unexpectedly',
  'Connection terminated',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable',
  'timeout expired',
  // A statement's query_timeout (lookupApiKey): the server did not answer, and pg gives the connection up.
  'Query read timeout',
]);

/** True for a failure that means the connection or session is gone (class 08, the codes above, a socket, the driver). */
export function isConnectionLost(cause: unknown): boolean {
  const e = cause as { code?: unknown; message?: unknown } | null;
  if (e === null || typeof e !== 'object') return false;
  const code = typeof e.code === 'string' ? e.code : '';
  if (code.startsWith('08') || UNAVAILABLE.has(code) || SOCKET.has(code)) return true;
  return code === '' && typeof e.message === 'string' && DRIVER_MESSAGES.has(e.message);
}

/**
 * The answer for `cause` when it is a database failure the client should be told of as such: a
 * statement timeout as a request timeout, a deadlock or serialization failure as db_conflict, a
 * session or server gone as db_unavailable. null for
 * anything else (a constraint, a bug), which stays the caller's to answer.
 */
export function dbFailure(cause: unknown): PhigateError | null {
  if (cause instanceof PhigateError) return null;
  const code = (cause as { code?: unknown } | null)?.code;
  if (code === STATEMENT_TIMEOUT) return requestTimedOut(cause);
  if (typeof code === 'string' && CONFLICT.has(code)) return dbConflict(cause);
  return isConnectionLost(cause) ? dbUnavailable(cause) : null;
}
