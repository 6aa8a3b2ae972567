import { getOperationAST, type ExecutionArgs, type ExecutionResult } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { releasePhiUsage, reservePhiUsage, type Reservation } from '../../db/phi-usage.ts';
import type { Pool } from '../../db/pool.ts';
import { PhigateError } from '../../errors.ts';
import type { GraphQLContext } from '../../graphql/context.ts';
import type { Logger } from '../../log.ts';
import { effectiveLimits } from '../../policy/limits.ts';
import { errorSummary } from './use-request-transaction.ts';

export interface PhiLimitsOptions {
  readonly pool: Pool;
  readonly logger: Logger;
}

const NONE = { rows: 0, values: 0 };

/**
 * Minimum necessary, as numbers (policies/default.yaml, `limits`). Before execution the request
 * reserves its share of the principal's minute in the database, where every replica sees it; a
 * principal whose minute is used up is refused whole (429, Retry-After) and audited. During
 * execution readPhi draws on the reservation and withholds what exceeds it. Afterwards what was
 * not shown goes back, all of it when the answer was withheld (rolled back, timed out).
 *
 * Listed after useRequestTimeout, so it wraps it: the reservation is returned only once the
 * request is over, and ending the budget then stops an abandoned execution from decrypting.
 */
export function usePhiLimits({ pool, logger }: PhiLimitsOptions): Plugin<GraphQLContext> {
  return {
    onExecute({ executeFn, setExecuteFn }) {
      setExecuteFn(async (args: ExecutionArgs) => {
        const ctx = args.contextValue as GraphQLContext;
        const limits = effectiveLimits(ctx.policy, ctx.principal);
        // No role of the principal can show PHI: the budget stays at nothing, and no database work.
        if (limits === null) return executeFn(args);

        let reservation: Reservation;
        try {
          reservation = await reservePhiUsage(
            pool,
            ctx.principal,
            { rows: limits.rowsPerRequest, values: limits.phiValuesPerRequest },
            { rows: limits.rowsPerMinute, values: limits.phiValuesPerMinute },
          );
        } catch (cause) {
          logger.error({ requestId: ctx.requestId, err: errorSummary(cause) }, 'PHI usage could not be reserved; request refused');
          return { errors: [new PhigateError('INTERNAL', 'The database is unavailable.', { reason: 'db_unavailable' })] };
        }
        if (reservation.rows === 0) return refuse(ctx, args, reservation, logger);

        ctx.budget.allow({
          rows: reservation.rows,
          values: reservation.values,
          rowsReason: reservation.rows < limits.rowsPerRequest ? 'phi_minute_cap' : 'phi_request_cap',
          valuesReason: reservation.values < limits.phiValuesPerRequest ? 'phi_minute_cap' : 'phi_request_cap',
        });
        let result: Awaited<ReturnType<typeof executeFn>> | undefined;
        try {
          result = await executeFn(args);
          return result;
        } finally {
          ctx.budget.end();
          // Data leaves only after its transaction committed; a withheld answer carries none.
          const shown = result !== undefined && (result as ExecutionResult).data != null ? ctx.budget.used : NONE;
          await giveBack(pool, ctx, reservation, shown, logger);
        }
      });
    },
  };
}

async function refuse(ctx: GraphQLContext, args: ExecutionArgs, reservation: Reservation, logger: Logger): Promise<ExecutionResult> {
  const operation = getOperationAST(args.document, args.operationName)?.operation ?? 'query';
  ctx.audit.add({
    action: 'limited',
    typeName: operation === 'mutation' ? 'Mutation' : 'Query',
    field: null,
    patientId: null,
    recordId: null,
    role: null,
    purpose: 'unspecified',
    breakGlass: false,
  });
  try {
    await ctx.audit.flush(ctx.tx);
    await ctx.tx.commit();
  } catch (cause) {
    // Refusing stays right without its audit row; the log says the row is missing.
    await ctx.tx.rollback();
    logger.error({ requestId: ctx.requestId, err: errorSummary(cause) }, 'audit of a PHI limit refusal failed');
  }
  logger.warn({ requestId: ctx.requestId, refusal: 'phi_minute_cap', retryAfterSeconds: reservation.retryAfterSeconds }, 'PHI limit per minute reached; request refused');
  return {
    errors: [
      new PhigateError('RATE_LIMITED', 'Your limit of PHI per minute is used up; retry when the minute ends.', {
        reason: 'phi_minute_cap',
        http: { status: 429, headers: { 'Retry-After': String(reservation.retryAfterSeconds) } },
      }),
    ],
  };
}

async function giveBack(pool: Pool, ctx: GraphQLContext, reservation: Reservation, shown: { rows: number; values: number }, logger: Logger): Promise<void> {
  try {
    await releasePhiUsage(pool, ctx.principal, reservation.minute, { rows: reservation.rows - shown.rows, values: reservation.values - shown.values });
  } catch (cause) {
    // Errs on the safe side: the principal has less left of this minute than it should.
    logger.error({ requestId: ctx.requestId, err: errorSummary(cause) }, 'unused PHI reservation could not be returned');
  }
}
