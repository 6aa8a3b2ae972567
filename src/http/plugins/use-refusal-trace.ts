import { getOperationAST, type ExecutionArgs, type ExecutionResult, type GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { GraphQLContext } from '../../graphql/context.ts';
import { isCapReason } from '../../records/phi-budget.ts';
import type { RefusalTrail } from '../refusal-trail.ts';
import { schemaPath } from '../schema-path.ts';

const TRACED = new Set(['MFA_REQUIRED', 'FORBIDDEN', 'RATE_LIMITED']);

// A PHI value withheld past the principal's caps already has its `limited` audit row.
const traced = (e: GraphQLError): boolean => {
  const code = e.extensions?.code;
  return typeof code === 'string' && TRACED.has(code) && !(code === 'RATE_LIMITED' && isCapReason(e.extensions?.reason));
};

/**
 * Every MFA_REQUIRED, FORBIDDEN and RATE_LIMITED an execution ends with goes to the refusal trail
 * (log line and audit event), once per root field and reason. Listed last, so it wraps every other
 * execution wrapper and sees the refusals they answer with (rate limits) as well as the resolvers'.
 */
export function useRefusalTrace(trail: RefusalTrail): Plugin<GraphQLContext> {
  return {
    onExecute({ executeFn, setExecuteFn }) {
      setExecuteFn(async (args: ExecutionArgs) => {
        const result = (await executeFn(args)) as ExecutionResult;
        const refusals = (result.errors ?? []).filter(traced);
        if (refusals.length === 0) return result;
        const ctx = args.contextValue as GraphQLContext;
        const definition = getOperationAST(args.document, args.operationName);
        const operation = definition?.operation;
        const seen = new Set<string>();
        const traces: Promise<void>[] = [];
        for (const e of refusals) {
          // The root field's name, not the client's alias for it (schema-path.ts).
          const root = typeof e.path?.[0] === 'string' && definition ? schemaPath(args.document, definition, [e.path[0]])?.[0] : undefined;
          const field = typeof root === 'string' ? root : null;
          const reason = typeof e.extensions?.reason === 'string' ? e.extensions.reason : undefined;
          const key = `${String(e.extensions?.code)}:${reason}:${field}`;
          if (seen.has(key)) continue;
          seen.add(key);
          traces.push(trail.refused({
            requestId: ctx.requestId,
            subject: ctx.principal.subject,
            authenticated: true,
            clientAddr: ctx.facts.clientAddr,
            code: String(e.extensions?.code),
            reason,
            typeName: operation === 'mutation' ? 'Mutation' : 'Query',
            field,
            log: ctx.log,
          }));
        }
        await Promise.all(traces);
        return result;
      });
    },
  };
}
