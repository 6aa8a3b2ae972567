import { getOperationAST, Kind, type DocumentNode, type ExecutionArgs, type ExecutionResult, type FragmentDefinitionNode, type GraphQLError, type SelectionSetNode } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { GraphQLContext } from '../../graphql/context.ts';
import { isCapReason } from '../../records/phi-budget.ts';
import type { RefusalTrail } from '../refusal-trail.ts';

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
          const field = typeof e.path?.[0] === 'string' && definition ? rootField(args.document, definition.selectionSet, e.path[0]) : null;
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

/**
 * The schema field the root response key `key` stands for. A path names the response key, which
 * is the field's alias when the client gave one: the client's own text, whatever it holds, which
 * the audit row and the log line must not take for the name of the field refused.
 */
function rootField(document: DocumentNode, selections: SelectionSetNode, key: string): string | null {
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const d of document.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d);
  const spread = new Set<string>();
  const find = (set: SelectionSetNode): string | null => {
    for (const s of set.selections) {
      if (s.kind === Kind.FIELD) {
        if ((s.alias ?? s.name).value === key) return s.name.value;
        continue;
      }
      let inner: SelectionSetNode | undefined;
      if (s.kind === Kind.INLINE_FRAGMENT) inner = s.selectionSet;
      else if (!spread.has(s.name.value)) {
        spread.add(s.name.value);
        inner = fragments.get(s.name.value)?.selectionSet;
      }
      const found = inner === undefined ? null : find(inner);
      if (found !== null) return found;
    }
    return null;
  };
  return find(selections);
}
