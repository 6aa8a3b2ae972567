import type { DocumentNode, ExecutionArgs } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { PhigateError } from '../../errors.ts';
import type { GraphQLContext } from '../../graphql/context.ts';
import { measureDocument } from './use-query-limits.ts';

export interface ExecutionBudgetOptions {
  /**
   * The summed cost (use-query-limits' measure: fields resolved, a page's selection times its
   * length) of the executions that may run at once. An execution costlier than the whole budget
   * runs alone.
   */
  readonly budget: number;
  /** The page size assumed where a query leaves `first` open, as useQueryLimits assumes it. */
  readonly maxPageSize: number;
}

interface Waiter {
  readonly cost: number;
  readonly admit: () => void;
}

/** The gate alone, without GraphQL: what it admits depends only on the costs taken and given back. */
export interface CostGate {
  /** Resolves once `cost` fits: at once when nothing waits and it fits (or nothing runs), else in arrival order. */
  take(cost: number): Promise<void> | null;
  give(cost: number): void;
  /** Cost running now, and executions waiting. */
  readonly used: number;
  readonly waiting: number;
}

export function createCostGate(budget: number): CostGate {
  if (!Number.isFinite(budget) || budget < 1) throw new RangeError(`execution budget must be a number of at least 1, got ${budget}`);
  let used = 0;
  const queue: Waiter[] = [];
  const fits = (cost: number) => used === 0 || used + cost <= budget;
  return {
    take(cost) {
      if (queue.length === 0 && fits(cost)) {
        used += cost;
        return null;
      }
      return new Promise<void>((admit) => queue.push({ cost, admit }));
    },
    give(cost) {
      used -= cost;
      // Strictly in arrival order: a cheap execution never passes a page that waits, so pages
      // are never starved by a stream of reads by id.
      while (queue.length > 0 && fits(queue[0]!.cost)) {
        const next = queue.shift()!;
        used += next.cost;
        next.admit();
      }
    },
    get used() {
      return used;
    },
    get waiting() {
      return queue.length;
    },
  };
}

/**
 * Bounds what executions running at once may hold by their cost, and makes the rest wait for it
 * in arrival order; none is refused here (useSaturation bounds how many wait).
 *
 * Why: the gateway's CPU, not PostgreSQL, is what a page waits for at full load, so every page
 * admitted past what keeps the CPU busy only waits in the event loop, holding its rows, its
 * decrypted answer and its audit events, and lives through enough scavenges to be promoted: the
 * old space then fills with dead pages, grows to 1.5x what a full GC keeps (src/heap.ts) plus what
 * is promoted while the next marking runs, and Node 24's V8 keeps that high-water resident
 * (bench/README.md, "Node 24's page peak RSS: pages admitted by cost"). A page waiting here holds
 * its parsed request and its context, nothing read. A read by id costs ~11 against a page of 100
 * with encounters' ~4,600, so reads by id are not held back until pages fill the budget.
 *
 * Listed right after useRequestTransaction: it wraps the transaction (which takes its connection
 * at the first statement, so a waiting execution holds none) and the audit wait, and the deadline
 * and the fair share wrap it, so the time spent waiting here counts against the request's
 * deadline, and one principal's pages wait in its own queue before they wait in this one.
 */
export function useExecutionBudget({ budget, maxPageSize }: ExecutionBudgetOptions): Plugin<GraphQLContext> {
  const gate = createCostGate(budget);
  // A document's cost depends on the document alone (and the one schema); yoga hands every request
  // of a document the same parsed object.
  const costs = new WeakMap<DocumentNode, number>();
  return {
    onExecute({ executeFn, setExecuteFn }) {
      setExecuteFn(async (args: ExecutionArgs) => {
        let cost = costs.get(args.document);
        if (cost === undefined) costs.set(args.document, (cost = Math.max(1, measureDocument(args.schema, args.document, maxPageSize).cost)));
        const waited = gate.take(cost);
        if (waited !== null) await waited;
        try {
          // Abandoned by the deadline while it waited: its transaction is over, nothing to run.
          if ((args.contextValue as GraphQLContext).tx.failed) {
            return { errors: [new PhigateError('INTERNAL', 'The request could not be completed.', { reason: 'request_timeout' })] };
          }
          return await executeFn(args);
        } finally {
          gate.give(cost);
        }
      });
    },
  };
}
