import type { ExecutionArgs } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { PhigateError } from '../../errors.ts';
import type { GraphQLContext } from '../../graphql/context.ts';

export interface SaturationOptions {
  /** Executions at once: the pool's connections plus the requests allowed to queue for one. */
  readonly capacity: number;
}

/**
 * Admission in front of execution. Past capacity a request would only wait for a connection until
 * the pool's timeout and fail anyway, holding memory and a socket meanwhile; refusing it at once
 * (503, Retry-After) tells the client, or its load balancer, to come back or go elsewhere.
 *
 * Listed last, so it wraps every other execution wrapper and the count covers all their work.
 */
export function useSaturation({ capacity }: SaturationOptions): Plugin<GraphQLContext> {
  let running = 0;
  return {
    onExecute({ executeFn, setExecuteFn }) {
      setExecuteFn(async (args: ExecutionArgs) => {
        if (running >= capacity) {
          (args.contextValue as GraphQLContext).log.warn({ capacity }, 'at capacity; request refused');
          return {
            errors: [
              new PhigateError('INTERNAL', 'The gateway is at capacity; retry shortly.', {
                reason: 'overloaded',
                http: { status: 503, headers: { 'Retry-After': '1' } },
              }),
            ],
          };
        }
        running++;
        try {
          return await executeFn(args);
        } finally {
          running--;
        }
      });
    },
  };
}
