import { describe, expect, it } from 'vitest';
import { commitOutcomeUnknown, dbFailure, isConnectionLost } from '../../../src/db/failure.ts';
import { PhigateError } from '../../../src/errors.ts';

/** A server error as pg gives it: its message may quote SQL or values, so none of it may pass. */
const serverError = (code: string) => Object.assign(new Error(`canceling statement: SELECT ssn FROM phigate.patients WHERE ssn = '123-45-6789' (${code})`), { code, severity: 'ERROR' });
const socketError = (code: string) => Object.assign(new Error(`connect ${code} 10.0.0.5:5432`), { code });

const answer = (e: PhigateError | null) => e && { code: e.code, reason: e.reason, message: e.message, http: e.extensions.http };

describe('dbFailure', () => {
  it('a statement timeout or cancel (57014) is answered as the request deadline is: 503, Retry-After', () => {
    expect(answer(dbFailure(serverError('57014')))).toEqual({
      code: 'INTERNAL',
      reason: 'request_timeout',
      message: 'The request took too long and was abandoned; nothing of it was kept.',
      http: { status: 503, headers: { 'Retry-After': '1' } },
    });
  });

  it.each([
    ['admin shutdown', serverError('57P01')],
    ['crash shutdown', serverError('57P02')],
    ['server starting up', serverError('57P03')],
    ['idle session timeout', serverError('57P05')],
    ['idle in transaction timeout', serverError('25P03')],
    ['too many connections', serverError('53300')],
    ['a role connection limit', serverError('53400')],
    ['a connection failure (class 08)', serverError('08006')],
    ['a refused socket', socketError('ECONNREFUSED')],
    ['a reset socket', socketError('ECONNRESET')],
    ["pg-pool's wait for a connection", new Error('timeout exceeded when trying to connect')],
    ["pg-pool's connect timeout", new Error('Connection terminated due to connection timeout')],
    ['a connection lost mid-query', new Error('Connection terminated unexpectedly')],
    ['a client whose connection broke', new Error('Client has encountered a connection error and is not queryable')],
    ["a statement's query_timeout", new Error('Query read timeout')],
  ])('%s: 503, Retry-After, db_unavailable, none of the cause in the answer', (_what, cause) => {
    const e = dbFailure(cause);
    expect(answer(e)).toEqual({ code: 'INTERNAL', reason: 'db_unavailable', message: 'The database is unavailable.', http: { status: 503, headers: { 'Retry-After': '1' } } });
    expect(isConnectionLost(cause)).toBe(true);
    expect(JSON.stringify(e!.toJSON())).not.toContain(cause.message);
  });

  it.each([
    ['a unique violation', serverError('23505')],
    ['a permission refusal', serverError('42501')],
    ['a bug', new TypeError("Cannot read properties of undefined (reading 'rows')")],
    ['a driver message that only resembles one', new Error('Connection terminated unexpectedly: SELECT 1')],
    ['a server error with the words of the driver', Object.assign(new Error('timeout exceeded when trying to connect'), { code: '42000' })],
    ['nothing', undefined],
  ])('%s is not a database failure: the caller answers it', (_what, cause) => {
    expect(dbFailure(cause)).toBeNull();
  });

  it.each([
    ['a serialization failure', serverError('40001')],
    ['a deadlock', serverError('40P01')],
  ])('%s: rolled back whole, answered 503 with Retry-After (db_conflict), none of the cause in the answer', (_what, cause) => {
    const e = dbFailure(cause);
    expect(answer(e)).toEqual({
      code: 'INTERNAL',
      reason: 'db_conflict',
      message: 'The request met a concurrent one in the database and was rolled back; nothing of it was kept.',
      http: { status: 503, headers: { 'Retry-After': '1' } },
    });
    expect(isConnectionLost(cause)).toBe(false);
    expect(JSON.stringify(e!.toJSON())).not.toContain(cause.message);
  });

  it('an answer of our own is left as it is', () => {
    expect(dbFailure(new PhigateError('KEY_UNAVAILABLE', 'gone', { reason: 'shredded' }))).toBeNull();
  });

  it('an unknown commit outcome carries no Retry-After: resending a write that was kept would make it twice', () => {
    expect(answer(commitOutcomeUnknown(socketError('ECONNRESET')))).toMatchObject({ reason: 'commit_outcome_unknown', http: { status: 504 } });
    expect(commitOutcomeUnknown().extensions.http).toEqual({ status: 504 });
  });
});
