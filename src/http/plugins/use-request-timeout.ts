import type { ExecutionArgs } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { PhigateError } from '../../errors.ts';
import type { GraphQLContext } from '../../graphql/context.ts';
import type { Logger } from '../../log.ts';

export interface RequestTimeoutOptions {
  readonly timeoutMs: number;
  /** Aborted when the gateway's shutdown grace runs out: requests still running end the same way. */
  readonly shutdown: AbortSignal;
  readonly logger: Logger;
}

type CutOff = 'request_timeout' | 'shutting_down';

/**
 * Bounds each execution in time. graphql-js cannot stop a running execution, so it is abandoned
 * instead: its transaction is rolled back at once, after which it can neither query nor commit,
 * so nothing it resolved is kept, audited or sent. If its commit has already begun, that commit
 * decides and the request's own answer is awaited.
 *
 * Listed after useRequestTransaction, so it wraps it.
 */
export function useRequestTimeout({ timeoutMs, shutdown, logger }: RequestTimeoutOptions): Plugin<GraphQLContext> {
  return {
    onExecute({ executeFn, setExecuteFn }) {
      setExecuteFn(async (args: ExecutionArgs) => {
        const ctx = args.contextValue as GraphQLContext;
        const running = Promise.resolve(executeFn(args));
        let cut!: (why: CutOff) => void;
        const cutOff = new Promise<CutOff>((resolve) => (cut = resolve));
        const timer = setTimeout(() => cut('request_timeout'), timeoutMs);
        const onShutdown = () => cut('shutting_down');
        if (shutdown.aborted) onShutdown();
        else shutdown.addEventListener('abort', onShutdown, { once: true });
        try {
          const first = await Promise.race([running.then((result) => ({ result })), cutOff]);
          if (typeof first !== 'string') return first.result;
          // Whatever the abandoned execution still does ends in an error nobody awaits.
          running.catch(() => undefined);
          if (!(await ctx.tx.abort())) return await running;
          ctx.budget.end();
          logger.warn({ requestId: ctx.requestId, refusal: first, timeoutMs }, 'request abandoned; its transaction was rolled back');
          const message = first === 'request_timeout' ? 'The request took too long and was abandoned; nothing of it was kept.' : 'The gateway is shutting down; nothing of this request was kept.';
          return { errors: [new PhigateError('INTERNAL', message, { reason: first, http: { status: 503, headers: { 'Retry-After': '1' } } })] };
        } finally {
          clearTimeout(timer);
          shutdown.removeEventListener('abort', onShutdown);
        }
      });
    },
  };
}
