import { GraphQLError } from 'graphql';
import { dbFailure } from '../db/failure.ts';
import { PhigateError } from '../errors.ts';
import type { Logger } from '../log.ts';
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

/**
 * What a client may learn from an error: our own PhigateErrors pass with their code and message
 * (written to be safe); GraphQL's own parse and validation errors pass (they describe the query);
 * a database failure is answered as what it is (src/db/failure.ts: a timeout, the database
 * unavailable), whichever resolver let it through; anything else becomes INTERNAL with no message,
 * stack, SQL or value, in every environment.
 */
export function createMaskError(logger: Logger) {
  return (error: unknown): Error => {
    const located = error instanceof GraphQLError ? error : null;
    const original = located?.originalError ?? error;
    const known = original instanceof PhigateError ? original : dbFailure(original);
    if (known !== null) {
      if (known !== original) logger.warn({ err: errorSummary(original), path: located?.path, refusal: known.reason }, 'database failure');
      return new GraphQLError(known.message, { nodes: located?.nodes, path: located?.path, extensions: known.extensions });
    }
    const variable = located ? invalidVariable(located) : null;
    if (variable) return variable;
    if (located && !located.originalError) {
      return new GraphQLError(located.message, {
        nodes: located.nodes,
        extensions: { ...located.extensions, code: located.extensions?.code ?? 'BAD_USER_INPUT' },
      });
    }
    logger.error({ err: errorSummary(original), path: located?.path }, 'unexpected error');
    return new GraphQLError('Unexpected error.', { nodes: located?.nodes, path: located?.path, extensions: { code: 'INTERNAL' } });
  };
}
