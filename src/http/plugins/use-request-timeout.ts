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

/** An execution's place in the list of those running (the list's head has no execution). */
interface Running {
  readonly cut: (why: CutOff) => void;
  prev: Running | null;
  next: Running | null;
}

function link(head: Running, entry: Running): void {
  entry.prev = head;
  entry.next = head.next;
  if (head.next !== null) head.next.prev = entry;
  head.next = entry;
}

function unlink(entry: Running): void {
  if (entry.prev === null) return;
  entry.prev.next = entry.next;
  if (entry.next !== null) entry.next.prev = entry.prev;
  entry.prev = entry.next = null;
}

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
  // The cut-offs of executions running, a list linked through them: one shutdown listener for all,
  // where an AbortSignal listener added and removed by each request, or a Set (whose table grows
  // and shrinks as requests come and go), cost more than the rest of this wrapper.
  const running: Running = { cut: () => undefined, prev: null, next: null };
  const onShutdown = () => {
    for (let r = running.next; r !== null; r = r.next) r.cut('shutting_down');
  };
  if (!shutdown.aborted) shutdown.addEventListener('abort', onShutdown, { once: true });
  return {
    onExecute({ executeFn, setExecuteFn }) {
      setExecuteFn(async (args: ExecutionArgs) => {
        const ctx = args.contextValue as GraphQLContext;
        const execution = Promise.resolve(executeFn(args));
        let cut!: (why: CutOff) => void;
        // Whichever comes first, in one promise: the execution's result (an object, never a
        // string) or why it was cut off. Promise.race over a cut-off promise and a wrapped result
        // made five promises and an object a request.
        const first = new Promise<Awaited<typeof execution> | CutOff>((resolve, reject) => {
          cut = resolve;
          execution.then(resolve, reject);
        });
        // The deadline counts from when the request's context began (authentication included).
        const timer = setTimeout(() => cut('request_timeout'), Math.max(0, timeoutMs - (performance.now() - ctx.startedAt)));
        const entry: Running = { cut, prev: null, next: null };
        if (shutdown.aborted) cut('shutting_down');
        else link(running, entry);
        try {
          const outcome = await first;
          if (typeof outcome !== 'string') return outcome;
          // Whatever the abandoned execution still does ends in an error nobody awaits.
          execution.catch(() => undefined);
          // abort() answers false at once when a commit has begun; then that commit decides, and the
          // answer is the request's own (data, or why it failed), whatever the deadline said.
          const aborted = await Promise.race([ctx.tx.abort(), after(SETTLE_GRACE_MS, true)]);
          if (!aborted) {
            const settled = await Promise.race([execution.then((result) => ({ result })), after(commitWaitMs + SETTLE_GRACE_MS, null)]);
            if (settled !== null) return settled.result;
            ctx.budget.end();
            ctx.log.warn({ refusal: outcome, timeoutMs }, 'request abandoned; its commit had begun and has not answered');
            // A read keeps nothing whatever its commit does (its audit rows may stand); a write may have been kept.
            if (getOperationAST(args.document, args.operationName)?.operation === 'mutation') return { errors: [commitOutcomeUnknown()] };
          } else {
            ctx.budget.end();
            ctx.log.warn({ refusal: outcome, timeoutMs }, 'request abandoned; its transaction was rolled back');
          }
          if (outcome === 'request_timeout') return { errors: [requestTimedOut()] };
          return {
            errors: [
              new PhigateError('INTERNAL', 'The gateway is shutting down; nothing of this request was kept.', {
                reason: outcome,
                http: { status: 503, headers: { 'Retry-After': '1' } },
              }),
            ],
          };
        } finally {
          clearTimeout(timer);
          unlink(entry);
        }
      });
    },
  };
}
