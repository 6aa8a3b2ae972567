import { getOperationAST, type ExecutionArgs, type ExecutionResult, type GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { PhigateError } from '../../errors.ts';
import type { GraphQLContext } from '../../graphql/context.ts';
import type { Logger } from '../../log.ts';

const isAsyncIterable = (x: unknown): x is AsyncIterable<unknown> => typeof x === 'object' && x !== null && Symbol.asyncIterator in x;

const codeOf = (e: GraphQLError): unknown => e.extensions?.code ?? (e.originalError as PhigateError | undefined)?.code;

/**
 * Ends each request's transaction, and it is the only place that does: the audit rows of every
 * PHI value in the result are inserted, then the transaction commits, and only then does the
 * result leave. If the audit insert or the commit fails, the client receives an error and no data.
 * A mutation with any error other than FIELD_DENIED rolls back whole.
 */
export function useRequestTransaction(logger: Logger): Plugin<GraphQLContext> {
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
        return settle(ctx, result as ExecutionResult, getOperationAST(args.document, args.operationName)?.operation, logger);
      });
    },
  };
}

async function settle(ctx: GraphQLContext, result: ExecutionResult, operation: string | undefined, logger: Logger): Promise<ExecutionResult> {
  const errors = result.errors ?? [];
  const done = (outcome: string) =>
    logger.info({ requestId: ctx.requestId, operation, outcome, roundTrips: ctx.tx.roundTrips, auditEvents: ctx.audit.size, errors: errors.map(codeOf) }, 'request');
  if (operation === 'mutation' && errors.some((e) => codeOf(e) !== 'FIELD_DENIED')) {
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
  return { name: e?.name, code: e?.code, reason: e?.reason, causeCode: e?.cause?.code };
}
