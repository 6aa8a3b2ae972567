import { getOperationAST, type ExecutionArgs } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { commitOutcomeUnknown, requestTimedOut } from '../../db/failure.ts';
import { PhigateError } from '../../errors.ts';
import type { GraphQLContext } from '../../graphql/context.ts';

export interface RequestTimeoutOptions {
  readonly timeoutMs: number;
  /**
   * How long a request whose commit began before its deadline may still wait for that commit's
   * outcome (the statement timeout). Past it the commit has stalled (a hung server, a connection
   * lost but not yet noticed, deferred work that statement_timeout does not bound) and the answer
   * says the outcome is unknown.
   */
  readonly commitWaitMs: number;
  /** Aborted when the gateway's shutdown grace runs out: requests still running end the same way. */
  readonly shutdown: AbortSignal;
}

type CutOff = 'request_timeout' | 'shutting_down';

/**
 * How long an abandoned request may wait for its transaction to end before it is answered. With
 * PostgreSQL hung, ROLLBACK (or a connection still being opened, up to the pool's 5 s connect
 * timeout) never answers, and waiting for it is what turned a 15 s deadline into 22 s and more.
 * Nothing depends on the wait: once aborted the transaction can neither query nor commit.
 */
const SETTLE_GRACE_MS = 250;

const after = <T>(ms: number, value: T): Promise<T> =>
  new Promise((resolve) => setTimeout(resolve, ms, value).unref());

/**
 * Bounds each execution in time. graphql-js cannot stop a running execution, so it is abandoned
 * instead: its transaction is rolled back at once, after which it can neither query nor commit,
 * so nothing it resolved is kept, audited or sent. If its commit has already begun, that commit
 * decides and the request's own answer is awaited: a write is never told that nothing was kept
 * when its COMMIT may have succeeded.
 *
 * Listed after useRequestTransaction, so it wraps it.
 */
export function useRequestTimeout({ timeoutMs, commitWaitMs, shutdown }: RequestTimeoutOptions): Plugin<GraphQLContext> {
  return {
    onExecute({ executeFn, setExecuteFn }) {
      setExecuteFn(async (args: ExecutionArgs) => {
        const ctx = args.contextValue as GraphQLContext;
        const running = Promise.resolve(executeFn(args));
        let cut!: (why: CutOff) => void;
        const cutOff = new Promise<CutOff>((resolve) => (cut = resolve));
        // The deadline counts from when the request's context began (authentication included).
        const timer = setTimeout(() => cut('request_timeout'), Math.max(0, timeoutMs - (performance.now() - ctx.startedAt)));
        const onShutdown = () => cut('shutting_down');
        if (shutdown.aborted) onShutdown();
        else shutdown.addEventListener('abort', onShutdown, { once: true });
        try {
          const first = await Promise.race([running.then((result) => ({ result })), cutOff]);
          if (typeof first !== 'string') return first.result;
          // Whatever the abandoned execution still does ends in an error nobody awaits.
          running.catch(() => undefined);
          // abort() answers false at once when a commit has begun; then that commit decides, and the
          // answer is the request's own (data, or why it failed), whatever the deadline said.
          const aborted = await Promise.race([ctx.tx.abort(), after(SETTLE_GRACE_MS, true)]);
          if (!aborted) {
            const settled = await Promise.race([running.then((result) => ({ result })), after(commitWaitMs + SETTLE_GRACE_MS, null)]);
            if (settled !== null) return settled.result;
            ctx.budget.end();
            ctx.log.warn({ refusal: first, timeoutMs }, 'request abandoned; its commit had begun and has not answered');
            // A read keeps nothing whatever its commit does (its audit rows may stand); a write may have been kept.
            if (getOperationAST(args.document, args.operationName)?.operation === 'mutation') return { errors: [commitOutcomeUnknown()] };
          } else {
            ctx.budget.end();
            ctx.log.warn({ refusal: first, timeoutMs }, 'request abandoned; its transaction was rolled back');
          }
          if (first === 'request_timeout') return { errors: [requestTimedOut()] };
          return {
            errors: [
              new PhigateError('INTERNAL', 'The gateway is shutting down; nothing of this request was kept.', {
                reason: first,
                http: { status: 503, headers: { 'Retry-After': '1' } },
              }),
            ],
          };
        } finally {
          clearTimeout(timer);
          shutdown.removeEventListener('abort', onShutdown);
        }
      });
    },
  };
}
