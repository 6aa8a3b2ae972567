import { getOperationAST, type DocumentNode, type ExecutionResult, type OperationDefinitionNode } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { requestLogger, type Logger } from '../../log.ts';
import type { ErrorMasking } from '../mask-error.ts';
import type { RequestFacts } from '../request-id.ts';
import { schemaPath } from '../schema-path.ts';

/**
 * Logs each INTERNAL error and database failure a result carries, with what it hides (mask-error.ts), through the
 * request's logger. Result processing is the first place after masking that has the request: yoga
 * masks an execution's errors and a failed context alike without it.
 *
 * The line names the schema path (field names), not the response path, whose keys are the client's
 * aliases (client text into logs). Only the execution has the document that maps one to the other,
 * and it ends before masking (yoga's masking is the last plugin): each error's schema path is kept
 * by its response path array, which masking passes on as it is (mask-error.ts). An error of no
 * execution, or one whose path was not kept, is logged without one. The path is worked out only for
 * an error masking hid: kept for every error, it would be a walk of the document per refused field
 * (a page's FIELD_DENIED errors run to thousands), work any principal could ask for.
 */
export function useUnexpectedErrorLog(masking: ErrorMasking, logger: Logger): Plugin {
  const executed = new WeakMap<object, { readonly document: DocumentNode; readonly operation: OperationDefinitionNode }>();
  return {
    onExecute({ args }) {
      return {
        onExecuteDone({ result }) {
          if (!('errors' in result) || result.errors === undefined) return;
          const operation = getOperationAST(args.document, args.operationName);
          if (!operation) return;
          const execution = { document: args.document, operation };
          for (const e of result.errors) if (e.path !== undefined) executed.set(e.path, execution);
        },
      };
    },
    onResultProcess({ result, serverContext }) {
      const results = (Array.isArray(result) ? result : [result]) as ExecutionResult[];
      for (const r of results) {
        for (const error of r.errors ?? []) {
          const hidden = masking.hidden(error);
          if (hidden === undefined) continue;
          const facts = (serverContext as { facts?: RequestFacts }).facts;
          const log = facts === undefined ? logger : requestLogger(logger, facts);
          const at = hidden.path;
          const execution = at === undefined ? undefined : executed.get(at);
          const path = at === undefined || execution === undefined ? undefined : (schemaPath(execution.document, execution.operation, at) ?? undefined);
          if (hidden.refusal === undefined) log.error({ err: hidden.err, path }, 'unexpected error');
          else log.warn({ err: hidden.err, path, refusal: hidden.refusal }, 'database failure');
        }
      }
    },
  };
}
