import { getOperationAST, type ExecutionArgs, type ExecutionResult, type GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { PhigateError } from '../../errors.ts';
import type { GraphQLContext } from '../../graphql/context.ts';
import type { Logger } from '../../log.ts';
import { isCapReason } from '../../records/phi-budget.ts';

const isAsyncIterable = (x: unknown): x is AsyncIterable<unknown> => typeof x === 'object' && x !== null && Symbol.asyncIterator in x;

const codeOf = (e: GraphQLError): unknown => e.extensions?.code ?? (e.originalError as PhigateError | undefined)?.code;

// A field withheld from the answer (denied, or past the principal's PHI limits) leaves a mutation
// standing: the refusal is about what is shown, not about what was done.
const withholdsField = (e: GraphQLError): boolean =>
  codeOf(e) === 'FIELD_DENIED' || (codeOf(e) === 'RATE_LIMITED' && isCapReason(e.extensions?.reason));

/** Told how each executed operation ended (the summary line's outcome); metrics count from it. */
export type OnSettled = (ctx: GraphQLContext, outcome: string, operation: string | undefined) => void;

/**
 * Ends each request's transaction, and it is the only place that does: the audit rows of every
 * PHI value in the result are inserted, then the transaction commits, and only then does the
 * result leave. If the audit insert or the commit fails, the client receives an error and no data.
 * A mutation with any error other than a withheld field rolls back whole.
 */
export function useRequestTransaction(logger: Logger, onSettled: OnSettled = () => undefined): Plugin<GraphQLContext> {
  return {
    onExecute({ setExecuteFn, executeFn }) {
      setExecuteFn(async (args: ExecutionArgs) => {
        const ctx = args.contextValue as GraphQLContext;
        let result: Awaited<ReturnType<typeof executeFn>>;
        try {
          result = await executeFn(args);
        } catch (err) {
          await ctx.tx.rollback();
          throw err;
        }
        if (isAsyncIterable(result)) {
          await ctx.tx.rollback();
          return { errors: [new PhigateError('BAD_USER_INPUT', 'Incremental delivery is not supported.')] };
        }
        return settle(ctx, result as ExecutionResult, getOperationAST(args.document, args.operationName)?.operation, logger, onSettled);
      });
    },
  };
}

async function settle(ctx: GraphQLContext, result: ExecutionResult, operation: string | undefined, logger: Logger, onSettled: OnSettled): Promise<ExecutionResult> {
  const errors = result.errors ?? [];
  const done = (outcome: string) => {
    logger.info({ requestId: ctx.requestId, operation, outcome, roundTrips: ctx.tx.roundTrips, auditEvents: ctx.audit.size, errors: errors.map(codeOf) }, 'request');
    onSettled(ctx, outcome, operation);
  };
  if (operation === 'mutation' && !errors.every(withholdsField)) {
    await ctx.tx.rollback();
    done('rolled_back');
    return { data: null, errors };
  }
  // The database aborted the transaction: the audit rows of what was already resolved cannot be
  // written, so that data must not leave either.
  if (ctx.tx.failed) {
    await ctx.tx.rollback();
    done('transaction_failed');
    return { data: null, errors: errors.length ? errors : [new PhigateError('INTERNAL', 'The request could not be completed.')] };
  }
  try {
    await ctx.audit.flush(ctx.tx);
  } catch (cause) {
    await ctx.tx.rollback();
    logger.error({ requestId: ctx.requestId, events: ctx.audit.size, err: errorSummary(cause) }, 'audit write failed; result withheld');
    done('audit_failed');
    return { data: null, errors: [new PhigateError('AUDIT_UNAVAILABLE', 'The access could not be recorded, so nothing is returned.')] };
  }
  try {
    await ctx.tx.commit();
  } catch (cause) {
    logger.error({ requestId: ctx.requestId, err: errorSummary(cause) }, 'commit failed; result withheld');
    done('commit_failed');
    return { data: null, errors: [new PhigateError('INTERNAL', 'The request could not be completed.')] };
  }
  done('committed');
  return result;
}

/** Enough to diagnose (type, SQLSTATE, our code), nothing that could carry PHI or SQL text. */
export function errorSummary(err: unknown): Record<string, unknown> {
  const e = err as { name?: unknown; code?: unknown; reason?: unknown; cause?: { code?: unknown } };
  // `refusal`, not `reason`: that key is redacted in logs because Encounter.reason is PHI.
  return { name: e?.name, code: e?.code, refusal: e?.reason, causeCode: e?.cause?.code };
}
