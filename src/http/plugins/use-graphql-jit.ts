import { useGraphQlJit } from '@envelop/graphql-jit';
import { getOperationAST, getVariableValues, type ExecutionArgs, type ExecutionResult } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { GraphQLContext } from '../../graphql/context.ts';
import type { Logger } from '../../log.ts';

type Execute = (args: ExecutionArgs) => unknown;

/**
 * Executes each document through a function graphql-jit compiled for it once (cached by the parsed
 * document, which yoga's parser cache keeps), instead of graphql-js walking the document for
 * every value of every request.
 *
 * Listed before every plugin that wraps execution (transaction, deadline, admission): a plugin
 * that sets the execute function after them would replace their wrappers, not be wrapped by them.
 *
 * graphql-jit's variable-coercion messages are generic or name the wrong variable. A result
 * without `data` is one where execution never started (jit answers bad variables that way), and
 * only then are the variables coerced again by graphql-js, whose messages say which variable is
 * wrong and why; the hot path never pays for it.
 */
export function useGraphQlJitExecution(logger: Logger): Plugin {
  // graphql-jit compiles a document within the execute call that first meets it, synchronously:
  // while one runs, this holds its arguments, so that a failure's line names that request.
  let compiling: ExecutionArgs | null = null;
  const jit = useGraphQlJit(
    {},
    {
      // The document already passed validation, so this is a jit limitation, not the client's
      // fault; the result it stands for carries the errors the client sees.
      onError: (result) => ((compiling?.contextValue as GraphQLContext | undefined)?.log ?? logger).error({ errors: result.errors?.length ?? 0 }, 'graphql-jit could not compile a document'),
    },
  );
  const wrapped = new WeakMap<Execute, Execute>();
  const withVariableMessages = (execute: Execute): Execute => {
    let wrapper = wrapped.get(execute);
    if (wrapper === undefined) {
      const run = execute;
      wrapper = (args) => {
        let result: ReturnType<Execute>;
        compiling = args;
        try {
          result = run(args);
        } finally {
          compiling = null;
        }
        return result instanceof Promise
          ? result.then((r: ExecutionResult) => explainVariables(args, r))
          : explainVariables(args, result as ExecutionResult);
      };
      wrapped.set(execute, wrapper);
    }
    return wrapper;
  };
  return {
    onExecute(payload) {
      return jit.onExecute!({ ...payload, setExecuteFn: (execute) => payload.setExecuteFn(withVariableMessages(execute) as typeof execute) });
    },
  };
}

function explainVariables(args: ExecutionArgs, result: ExecutionResult): ExecutionResult {
  if ('data' in result || !result.errors?.length) return result;
  const definitions = getOperationAST(args.document, args.operationName)?.variableDefinitions ?? [];
  const coerced = getVariableValues(args.schema, definitions, args.variableValues ?? {});
  return coerced.errors ? { errors: coerced.errors } : result;
}
