import { GraphQLError } from 'graphql';
import { dbFailure } from '../db/failure.ts';
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

/** What a masked error stands for, for its log line: a summary with no message, SQL or value. */
export interface HiddenError {
  readonly err: Record<string, unknown>;
  /** The masked error's own path array, not a copy: use-unexpected-error-log.ts finds its schema path by it. */
  readonly path: GraphQLError['path'];
  /** The reason it was answered as a database failure (src/db/failure.ts); unset when it was answered INTERNAL. */
  readonly refusal?: string;
}

export interface ErrorMasking {
  readonly maskError: (error: unknown) => Error;
  /** What the error `masked` (an INTERNAL or database failure made by maskError) hides; undefined for any other error. */
  hidden(masked: unknown): HiddenError | undefined;
}

/**
 * What a client may learn from an error: our own PhigateErrors pass with their code and message
 * (written to be safe); GraphQL's own parse and validation errors pass (they describe the query,
 * never a value it resolved);
 * a database failure is answered as what it is (src/db/failure.ts: a timeout, the database
 * unavailable), whichever resolver let it through; anything else becomes INTERNAL with no message,
 * stack, SQL or value, in every environment.
 *
 * yoga calls maskError without the request, so the line of an INTERNAL error or a database
 * failure is written where the result is (use-unexpected-error-log.ts), through the request's
 * logger, from `hidden`.
 */
export function createErrorMasking(): ErrorMasking {
  const hiddenBy = new WeakMap<object, HiddenError>();
  const maskError = (error: unknown): Error => {
    const located = error instanceof GraphQLError ? error : null;
    const original = located?.originalError ?? error;
    if (original instanceof PhigateError) {
      return new GraphQLError(original.message, { nodes: located?.nodes, path: located?.path, extensions: original.extensions });
    }
    const failure = dbFailure(original);
    if (failure !== null) {
      const answered = new GraphQLError(failure.message, { nodes: located?.nodes, path: located?.path, extensions: failure.extensions });
      hiddenBy.set(answered, { err: errorSummary(original), path: located?.path, refusal: failure.reason });
      return answered;
    }
    const variable = located ? invalidVariable(located) : null;
    if (variable) return variable;
    // GraphQL's own errors about the document (parse, validation, variables) have no path. One with
    // a path and no original error is the executor's own about a value it was completing ("String
    // cannot represent value: ...", quoting it; graphql-jit makes them so): a decrypted value, ours
    // to hide, not the client's mistake.
    if (located && !located.originalError && located.path === undefined) {
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
