import { GraphQLError } from 'graphql';
import { PhigateError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { errorSummary } from './plugins/use-request-transaction.ts';

/**
 * What a client may learn from an error: our own PhigateErrors pass with their code and message
 * (written to be safe); GraphQL's own parse and validation errors pass (they describe the query);
 * anything else becomes INTERNAL with no message, stack, SQL or value, in every environment.
 */
export function createMaskError(logger: Logger) {
  return (error: unknown): Error => {
    const located = error instanceof GraphQLError ? error : null;
    const original = located?.originalError ?? error;
    if (original instanceof PhigateError) {
      return new GraphQLError(original.message, { nodes: located?.nodes, path: located?.path, extensions: original.extensions });
    }
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
