import { GraphQLError } from 'graphql';
import { PhigateError } from '../errors.ts';
import { errorSummary } from './plugins/use-request-transaction.ts';

// graphql-js quotes a variable's value when it does not fit its type ('Variable "$input" got
// invalid value {...}; String cannot represent a non string value: ...'). The value may be PHI, so
// the answer names the variable (and an unknown input field) but never repeats what was sent; it
// is the client's mistake, BAD_USER_INPUT, not INTERNAL.
const INVALID_VARIABLE = /^Variable "(\$\w+)" got invalid value /;
const UNKNOWN_INPUT_FIELD = /^Field "\w+" is not defined by type "\w+"\./;

function invalidVariable(located: GraphQLError): GraphQLError | null {
  const variable = located.path ? null : INVALID_VARIABLE.exec(located.message);
  if (!variable) return null;
  const field = UNKNOWN_INPUT_FIELD.exec(located.originalError?.message ?? '');
  return new GraphQLError(`Variable "${variable[1]}" has a value that does not fit its type.${field ? ` ${field[0]}` : ''}`, {
    nodes: located.nodes,
    extensions: { code: 'BAD_USER_INPUT' },
  });
}

/** What an INTERNAL error stands for, for its log line: a summary with no message, SQL or value. */
export interface HiddenError {
  readonly err: Record<string, unknown>;
  readonly path: GraphQLError['path'];
}

export interface ErrorMasking {
  readonly maskError: (error: unknown) => Error;
  /** What the INTERNAL error `masked` (made by maskError) hides; undefined for any other error. */
  hidden(masked: unknown): HiddenError | undefined;
}

/**
 * What a client may learn from an error: our own PhigateErrors pass with their code and message
 * (written to be safe); GraphQL's own parse and validation errors pass (they describe the query);
 * anything else becomes INTERNAL with no message, stack, SQL or value, in every environment.
 *
 * yoga calls maskError without the request, so the INTERNAL error's line is written where the
 * result is (use-unexpected-error-log.ts), through the request's logger, from `hidden`.
 */
export function createErrorMasking(): ErrorMasking {
  const hiddenBy = new WeakMap<object, HiddenError>();
  const maskError = (error: unknown): Error => {
    const located = error instanceof GraphQLError ? error : null;
    const original = located?.originalError ?? error;
    if (original instanceof PhigateError) {
      return new GraphQLError(original.message, { nodes: located?.nodes, path: located?.path, extensions: original.extensions });
    }
    const variable = located ? invalidVariable(located) : null;
    if (variable) return variable;
    if (located && !located.originalError) {
      return new GraphQLError(located.message, {
        nodes: located.nodes,
        extensions: { ...located.extensions, code: located.extensions?.code ?? 'BAD_USER_INPUT' },
      });
    }
    const masked = new GraphQLError('Unexpected error.', { nodes: located?.nodes, path: located?.path, extensions: { code: 'INTERNAL' } });
    hiddenBy.set(masked, { err: errorSummary(original), path: located?.path });
    return masked;
  };
  return { maskError, hidden: (masked) => (typeof masked === 'object' && masked !== null ? hiddenBy.get(masked) : undefined) };
}
