import type { ExecutionArgs } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { LRUCache } from 'lru-cache';
import { PhigateError } from '../../errors.ts';
import type { GraphQLContext } from '../../graphql/context.ts';

export interface FairShareOptions {
  /** Executions of one principal at once; the pool's other connections stay for everyone else. */
  readonly concurrency: number;
  /** Executions of one principal waiting for one of its slots; past it, RATE_LIMITED. */
  readonly queue: number;
  /** Token bucket per principal over every operation, PHI or not. */
  readonly ratePerSecond: number;
  readonly burst: number;
  /** Milliseconds; for tests. */
  readonly now?: () => number;
}

interface Share {
  running: number;
  readonly waiting: Array<() => void>;
  tokens: number;
  refilledAt: number;
}

/** Principals remembered; one forgotten starts again with a full bucket, which only ever favours it. */
const PRINCIPALS_KEPT = 10_000;

const refuse = (reason: 'request_rate' | 'too_many_concurrent', retryAfterSeconds: number) => ({
  errors: [
    new PhigateError('RATE_LIMITED', reason === 'request_rate' ? 'Too many requests; retry shortly.' : 'Too many requests at once; retry shortly.', {
      reason,
      http: { status: 429, headers: { 'Retry-After': String(retryAfterSeconds) } },
    }),
  ],
});

/**
 * Fair shares of this replica between principals. Each principal has a request rate (a token
 * bucket: `burst` at once, `ratePerSecond` after) and at most `concurrency` executions at once, so
 * one principal paging as fast as it can holds at most that many of the pool's connections and
 * another clinic's request finds one free instead of queueing behind all of its pages. Its excess
 * waits in its own queue (FIFO), and past `queue` it is refused.
 *
 * Listed before useRequestTimeout, so time spent waiting here counts against the request's
 * deadline. The counts are this replica's own, like its connections: with N replicas a principal
 * may use N times the rate, which bounds each replica's work, not a principal's total (the PHI
 * caps per minute, in PostgreSQL, bound that).
 */
export function useFairShare(opts: FairShareOptions): Plugin<GraphQLContext> {
  const now = opts.now ?? (() => performance.now());
  const shares = new LRUCache<string, Share>({ max: PRINCIPALS_KEPT });
  const shareOf = (key: string): Share => {
    let share = shares.get(key);
    if (share === undefined) shares.set(key, (share = { running: 0, waiting: [], tokens: opts.burst, refilledAt: now() }));
    return share;
  };
  return {
    onExecute({ executeFn, setExecuteFn }) {
      setExecuteFn(async (args: ExecutionArgs) => {
        const ctx = args.contextValue as GraphQLContext;
        const share = shareOf(`${ctx.principal.kind}:${ctx.principal.subject}`);
        const at = now();
        share.tokens = Math.min(opts.burst, share.tokens + ((at - share.refilledAt) / 1000) * opts.ratePerSecond);
        share.refilledAt = at;
        if (share.tokens < 1) return refuse('request_rate', Math.ceil((1 - share.tokens) / opts.ratePerSecond));
        if (share.running >= opts.concurrency) {
          if (share.waiting.length >= opts.queue) return refuse('too_many_concurrent', 1);
          share.tokens -= 1;
          await new Promise<void>((resolve) => share.waiting.push(resolve));
        } else {
          share.tokens -= 1;
          share.running++;
        }
        try {
          // Abandoned by the deadline while it waited: its transaction is over, nothing to run.
          if (ctx.tx.failed) return { errors: [new PhigateError('INTERNAL', 'The request could not be completed.', { reason: 'request_timeout' })] };
          return await executeFn(args);
        } finally {
          // The slot passes straight to the next waiter: `running` stays as it is.
          const next = share.waiting.shift();
          if (next) next();
          else share.running--;
        }
      });
    },
  };
}
