import { getOperationAST, type ExecutionArgs, type ExecutionResult, type GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { AuditEvent } from '../../audit/event.ts';
import type { AuditWriter, Coming, Written } from '../../audit/writer.ts';
import { commitOutcomeUnknown, dbFailure, isConnectionLost } from '../../db/failure.ts';
import { minuteCapRetryAfter } from '../../db/phi-usage.ts';
import { CommitFailed, type Statement } from '../../db/transaction.ts';
import { PhigateError } from '../../errors.ts';
import type { GraphQLContext } from '../../graphql/context.ts';
import { releaseScopeCache } from '../../graphql/scope-cache.ts';
import { flatLineWriter, requestFields, type FlatFields, type Logger } from '../../log.ts';
import { eventsMissing } from '../../records/events-missing.ts';
import type { CapReason } from '../../records/phi-budget.ts';
import { disclosesSearch } from '../../records/search.ts';
import { inSpan } from '../../telemetry/tracing.ts';

const isAsyncIterable = (x: unknown): x is AsyncIterable<unknown> => typeof x === 'object' && x !== null && Symbol.asyncIterator in x;

const codeOf = (e: GraphQLError): unknown => e.extensions?.code ?? (e.originalError as PhigateError | undefined)?.code;

// A field denied to the principal leaves a mutation standing: the refusal is about what is shown,
// not about what was done. (A request past its PHI limits is refused whole before this is asked.)
const withholdsField = (e: GraphQLError): boolean => codeOf(e) === 'FIELD_DENIED';

/** Told how each executed operation ended (the summary line's outcome); metrics count from it. */
export type OnSettled = (ctx: GraphQLContext, outcome: string, operation: string | undefined) => void;

type Done = (outcome: string) => void;

/**
 * Ends each request's transaction, and it is the only place that does; no result leaves before
 * the audit rows of every PHI value in it are durably committed, and if they are not, the client
 * receives an error and no data.
 *
 * A query runs in a READ ONLY transaction, which writes nothing; its events and the PHI it showed
 * go to the audit writer, which commits them in a batch shared with concurrent requests and
 * charges the PHI to the principal's minute there. A mutation writes its audit rows and its charge
 * in its own transaction, with its COMMIT; with any error other than a withheld field it rolls
 * back whole.
 */
export function useRequestTransaction(logger: Logger, writer: AuditWriter, onSettled: OnSettled = () => undefined): Plugin<GraphQLContext> {
  const summary = flatLineWriter(logger);
  return {
    onExecute({ setExecuteFn, executeFn }) {
      setExecuteFn(async (args: ExecutionArgs) => {
        const ctx = args.contextValue as GraphQLContext;
        if (ctx.phases !== null) ctx.phases.admitted = performance.now();
        const operation = getOperationAST(args.document, args.operationName)?.operation;
        if (operation === 'query') {
          // Refused before it reads anything: an answer that cannot be audited soon must not be prepared.
          if (writer.saturated) {
            await ctx.tx.rollback();
            ctx.log.warn('audit queue full; request refused');
            onSettled(ctx, 'audit_queue_full', operation);
            return { errors: [new PhigateError('AUDIT_UNAVAILABLE', 'The gateway cannot record accesses fast enough; retry shortly.', { reason: 'audit_queue_full' })] };
          }
          ctx.tx.readOnly();
        }
        // A read past admission: its entry is on its way, so a batch about to leave may wait for it.
        const coming = operation === 'query' ? writer.expect(ctx.audit.request) : null;
        try {
          let result: Awaited<ReturnType<typeof executeFn>>;
          try {
            result = await executeFn(args);
          } catch (err) {
            await ctx.tx.rollback();
            throw err;
          }
          if (ctx.phases !== null) ctx.phases.executed = performance.now();
          if (isAsyncIterable(result)) {
            await ctx.tx.rollback();
            return { errors: [new PhigateError('BAD_USER_INPUT', 'Incremental delivery is not supported.')] };
          }
          return await settle(ctx, result as ExecutionResult, operation, summary, writer, onSettled, coming);
        } finally {
          coming?.end();
          releaseScopeCache(ctx);
        }
      });
    },
  };
}

async function settle(
  ctx: GraphQLContext,
  result: ExecutionResult,
  operation: string | undefined,
  summary: (fields: FlatFields, msg: string) => void,
  writer: AuditWriter,
  onSettled: OnSettled,
  coming: Coming | null,
): Promise<ExecutionResult> {
  // Execution is over: nothing more may be counted or decrypted for this request.
  ctx.budget.end();
  const errors = result.errors ?? [];
  const done: Done = (outcome) => {
    // The request's fields, then the summary's, assigned into the fresh object requestFields
    // returns: `{ ...requestFields(ctx.facts), operation, ... }` cost ~10 us a request on Node 20.
    const line: Record<string, FlatFields[string]> = requestFields(ctx.facts);
    line.operation = operation;
    line.outcome = outcome;
    line.roundTrips = ctx.tx.roundTrips;
    line.auditEvents = ctx.audit.size;
    line.durationMs = durationSince(ctx.startedAt);
    line.errors = errors.map(codeOf);
    if (ctx.phases !== null) line.phasesMs = ctx.phases.toLog();
    summary(line, 'request');
    onSettled(ctx, outcome, operation);
  };
  // A read refused here records its refusal through the writer, in a batch that must not wait for
  // the read's own entry: that entry will not come.
  const usedUp = ctx.minute.usedUp();
  if (usedUp !== null) {
    coming?.end();
    return refuseWhole(ctx, operation, usedUp, done);
  }
  const over = ctx.budget.over;
  if (over !== null) {
    coming?.end();
    return refuseOverCap(ctx, operation, over, done);
  }
  if (operation === 'mutation' && !errors.every(withholdsField)) {
    await ctx.tx.rollback();
    await recordRefusedFields(ctx);
    done('rolled_back');
    return { data: null, errors };
  }
  // The database aborted the transaction: the audit rows of what was already resolved cannot be
  // written, so that data must not leave either.
  if (ctx.tx.failed) {
    coming?.end();
    await ctx.tx.rollback();
    await recordRefusedFields(ctx);
    done('transaction_failed');
    return { data: null, errors: withFailure(errors, ctx.tx.failure) };
  }
  const auditFailed = (cause: unknown): ExecutionResult => {
    ctx.log.error({ events: ctx.audit.size, err: errorSummary(cause) }, 'audit write failed; result withheld');
    done('audit_failed');
    const reason = cause instanceof PhigateError && cause.code === 'AUDIT_UNAVAILABLE' ? cause.reason : undefined;
    return { data: null, errors: [new PhigateError('AUDIT_UNAVAILABLE', 'The access could not be recorded, so nothing is returned.', reason ? { reason } : {})] };
  };
  const commitFailed = (cause: unknown): ExecutionResult => {
    ctx.log.error({ err: errorSummary(cause) }, 'commit failed; result withheld');
    done('commit_failed');
    return { data: null, errors: [commitFailure(cause, operation)] };
  };
  // The charge and the events must agree, one for one, before either is made durable: PHI counted
  // without its event was shown unrecorded somewhere, so nothing of the request is kept or answered.
  if (eventsMissing(ctx.budget.charges, ctx.audit.events)) {
    await ctx.tx.rollback();
    return auditFailed(new PhigateError('AUDIT_UNAVAILABLE', 'PHI was counted without its audit event.', { reason: 'events_missing' }));
  }
  return operation === 'mutation' ? settleWrite(ctx, result, operation, done, auditFailed, commitFailed) : settleRead(ctx, result, operation, writer, coming, done, auditFailed, commitFailed);
}

/** A read: its transaction ends with a plain COMMIT, while the audit writer commits its events. */
async function settleRead(
  ctx: GraphQLContext,
  result: ExecutionResult,
  operation: string | undefined,
  writer: AuditWriter,
  coming: Coming | null,
  done: Done,
  auditFailed: (cause: unknown) => ExecutionResult,
  commitFailed: (cause: unknown) => ExecutionResult,
): Promise<ExecutionResult> {
  const events = ctx.audit.close();
  const charge = ctx.minute.usage(ctx.budget.used);
  // Nothing to make durable: the COMMIT of a read-only transaction runs beside the audit batch.
  const { phases } = ctx;
  const ended = ctx.tx.commit();
  ended.catch(() => undefined);
  if (phases !== null) void ended.then(() => (phases.committed = performance.now()), () => undefined);
  let written: Written = { outcome: 'committed' };
  if (events.length > 0) {
    if (phases !== null) phases.writing = performance.now();
    try {
      written = await inSpan('phigate.audit', { 'phigate.audit.events': events.length }, () =>
        writer.write({ request: ctx.audit.request, events, charge, refusal: limitedEvent(operation) }, coming ?? undefined),
      );
    } catch (cause) {
      return auditFailed(cause);
    }
    if (phases !== null) phases.written = performance.now();
  }
  try {
    await ended;
  } catch (cause) {
    return commitFailed(cause);
  }
  if (written.outcome === 'limited') return limitedAnswer(ctx, written.retryAfterSeconds, done);
  done('committed');
  return result;
}

/** A write: its audit rows (row count checked in SQL) and its PHI charge go with its COMMIT, in that order. */
async function settleWrite(
  ctx: GraphQLContext,
  result: ExecutionResult,
  operation: string | undefined,
  done: Done,
  auditFailed: (cause: unknown) => ExecutionResult,
  commitFailed: (cause: unknown) => ExecutionResult,
): Promise<ExecutionResult> {
  let audit: Statement | null;
  try {
    audit = ctx.audit.seal();
  } catch (cause) {
    await ctx.tx.rollback();
    return auditFailed(cause);
  }
  // The charge takes the principal's row lock last, so it is held for the commit only.
  const charge = ctx.minute.charge(ctx.budget.used);
  const final = [audit, charge].filter((s) => s !== null);
  try {
    await inSpan('phigate.audit', { 'phigate.audit.events': ctx.audit.size }, () => ctx.tx.commit(final));
  } catch (cause) {
    const failedStatement = cause instanceof CommitFailed && cause.statement !== null ? final[cause.statement] : undefined;
    if (failedStatement !== undefined && failedStatement === charge) {
      const retryAfter = minuteCapRetryAfter((cause as CommitFailed).cause);
      if (retryAfter !== null) return refuseWhole(ctx, operation, retryAfter, done);
    }
    if (failedStatement !== undefined && failedStatement === audit) return auditFailed(cause);
    return commitFailed(cause);
  }
  done('committed');
  return result;
}

const couldNotComplete = () => new PhigateError('INTERNAL', 'The request could not be completed.');

/**
 * The errors of a request whose transaction failed: its resolvers' own, and what failed it when
 * none of theirs is that (the session ended under it between statements, a statement whose error
 * a resolver turned into another), so that a timeout or a database gone is answered as such.
 */
function withFailure(errors: readonly GraphQLError[], failure: unknown): readonly GraphQLError[] {
  const known = failure instanceof PhigateError ? failure : dbFailure(failure);
  if (known === null) return errors.length ? errors : [couldNotComplete()];
  return errors.some((e) => e.originalError === failure) ? errors : [...errors, known];
}

/**
 * What a failed commit is answered with. Nothing was kept when a statement before COMMIT failed,
 * when the transaction never opened, or when the server answered COMMIT with an error; a write
 * whose COMMIT got no answer at all may have been kept, and is told so, never to simply retry.
 */
function commitFailure(cause: unknown, operation: string | undefined): PhigateError {
  const inner = cause instanceof CommitFailed ? cause.cause : cause;
  if (inner instanceof PhigateError) return inner.extensions.http ? inner : couldNotComplete();
  if (operation === 'mutation' && cause instanceof CommitFailed && cause.statement === null && isConnectionLost(inner)) return commitOutcomeUnknown(inner);
  return dbFailure(inner) ?? couldNotComplete();
}

// Refusals of a field: one its principal may not see (denied) and one whose value did not open (refused).
const FIELD_REFUSALS: ReadonlySet<AuditEvent['action']> = new Set(['denied', 'refused']);

const refusedField = (e: AuditEvent): boolean => FIELD_REFUSALS.has(e.action) && (e.typeName === 'Patient' || e.typeName === 'Encounter');

/**
 * A request rolled back (a write with an error, a transaction the database failed) loses the events
 * it would have committed, but not the refusals of fields it was to answer: a field denied to the
 * principal, a value that did not open (read-phi.ts). Every refusal is traced (CONTRACT.md, Audit),
 * so they are kept, outside the transaction, like the other refusals of a write (write-helpers.ts,
 * recordAfterRollback). So is every search that disclosed nothing (refused, limited, failed:
 * search.ts): a search is traced whatever its end. The answer is an error either way.
 */
async function recordRefusedFields(ctx: GraphQLContext, more: readonly AuditEvent[] = []): Promise<void> {
  const refused = [...ctx.audit.events.filter((e) => refusedField(e) || (e.action === 'search' && !disclosesSearch(e))), ...more];
  if (refused.length === 0) return;
  try {
    await ctx.recorder.record(ctx.audit.request, refused);
  } catch (cause) {
    ctx.log.error({ err: errorSummary(cause) }, 'audit of a refused field failed');
  }
}

const limitedEvent = (operation: string | undefined): AuditEvent => ({
  action: 'limited',
  typeName: operation === 'mutation' ? 'Mutation' : 'Query',
  field: null,
  patientId: null,
  recordId: null,
  role: null,
  purpose: 'unspecified',
  breakGlass: false,
});

/**
 * The principal's minute of PHI is used up: before the request began, or by concurrent requests
 * that committed first. Nothing of the request is kept or shown (429, Retry-After); the refusal
 * itself is audited, outside the request's transaction, which was rolled back.
 */
async function refuseWhole(ctx: GraphQLContext, operation: string | undefined, retryAfterSeconds: number, done: Done): Promise<ExecutionResult> {
  await ctx.tx.rollback();
  try {
    await ctx.recorder.record(ctx.audit.request, [limitedEvent(operation)]);
  } catch (cause) {
    // Refusing stays right without its audit row; the log says the row is missing.
    ctx.log.error({ err: errorSummary(cause) }, 'audit of a PHI limit refusal failed');
  }
  return limitedAnswer(ctx, retryAfterSeconds, done);
}

/**
 * The request went past its PHI limits (phi-budget.ts, `over`): a value or a search was withheld.
 * It is refused whole, like a request past the minute (429, no data; a write is rolled back), so
 * that the answer never grows with what was withheld: one error, and one `limited` event for the
 * request whose detail is the limit and the number of values and searches withheld
 * (`phi_request_cap:38004`), never an event per value (docs/audit-log.md, "Refusals past the PHI
 * limits"). The refusals of fields and searches it traced are kept as a rolled-back request's are.
 * Retry-After only when what was left of the minute withheld it: past the request's own limit the
 * same request is refused again, and must ask for less.
 */
async function refuseOverCap(ctx: GraphQLContext, operation: string | undefined, reason: CapReason, done: Done): Promise<ExecutionResult> {
  await ctx.tx.rollback();
  await recordRefusedFields(ctx, [{ ...limitedEvent(operation), detail: `${reason}:${ctx.budget.withheld}` }]);
  ctx.log.warn({ refusal: reason, withheld: ctx.budget.withheld }, 'PHI limit reached; request refused');
  done('limited');
  const retryAfter = reason === 'phi_minute_cap' ? ctx.minute.endsIn() : null;
  const message =
    reason === 'phi_minute_cap'
      ? 'Your limit of PHI per minute is reached; retry when the minute ends, or ask for less.'
      : 'This request asks for more PHI than one request may show; ask for fewer patients or fields.';
  return {
    errors: [
      new PhigateError('RATE_LIMITED', message, {
        reason,
        http: { status: 429, ...(retryAfter === null ? {} : { headers: { 'Retry-After': String(retryAfter) } }) },
      }),
    ],
  };
}

function limitedAnswer(ctx: GraphQLContext, retryAfterSeconds: number, done: Done): ExecutionResult {
  ctx.log.warn({ refusal: 'phi_minute_cap', retryAfterSeconds }, 'PHI limit per minute reached; request refused');
  done('limited');
  return {
    errors: [
      new PhigateError('RATE_LIMITED', 'Your limit of PHI per minute is used up; retry when the minute ends.', {
        reason: 'phi_minute_cap',
        http: { status: 429, headers: { 'Retry-After': String(retryAfterSeconds) } },
      }),
    ],
  };
}

const durationSince = (startedAt: number): number => Math.round((performance.now() - startedAt) * 100) / 100;

/** Enough to diagnose (type, SQLSTATE, our code), nothing that could carry PHI or SQL text. */
export function errorSummary(err: unknown): Record<string, unknown> {
  const e = err as { name?: unknown; code?: unknown; reason?: unknown; cause?: { code?: unknown } };
  // `refusal`, not `reason`: that key is redacted in logs because Encounter.reason is PHI.
  return { name: e?.name, code: e?.code, refusal: e?.reason, causeCode: e?.cause?.code };
}
