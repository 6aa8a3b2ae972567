import { getOperationAST, type ExecutionResult } from 'graphql';
import type { Plugin, YogaInitialContext } from 'graphql-yoga';
import type { GraphQLContext } from '../../graphql/context.ts';
import type { GatewayMetrics } from '../metrics.ts';

// Error codes become label values: only our own upper-case codes, so the label set stays bounded.
const codeLabel = (code: unknown): string => (typeof code === 'string' && /^[A-Z][A-Z_]{0,39}$/.test(code) ? code : 'OTHER');

/**
 * Counts what the request transaction does not see: requests refused before execution, errors
 * by code in every response, and latency from request to response. Executed operations are
 * counted by use-request-transaction through `metrics.settled`, which knows their outcome.
 */
export function useMetrics(metrics: GatewayMetrics): Plugin<GraphQLContext> {
  const started = new WeakMap<Request, number>();
  const operations = new WeakMap<Request, string>();
  return {
    onRequest({ request }) {
      started.set(request, performance.now());
    },
    onExecute({ args }) {
      // Yoga builds every context on its initial one, which holds the request.
      const { request } = args.contextValue as unknown as YogaInitialContext;
      operations.set(request, getOperationAST(args.document, args.operationName)?.operation ?? 'none');
    },
    onResultProcess({ request, result }) {
      if (Symbol.asyncIterator in result) return; // no streamed results: the schema has no subscriptions
      const results = (Array.isArray(result) ? result : [result]) as ExecutionResult[];
      for (const r of results) {
        for (const e of r.errors ?? []) metrics.errors.inc({ code: codeLabel(e.extensions?.code) });
        // A response without `data` never reached execution (GraphQL over HTTP): nothing settled it.
        if (!('data' in r)) metrics.requests.inc({ operation: 'none', outcome: 'refused' });
      }
    },
    onResponse({ request }) {
      const start = started.get(request);
      if (start !== undefined) metrics.duration.observe({ operation: operations.get(request) ?? 'none' }, (performance.now() - start) / 1000);
    },
  };
}
