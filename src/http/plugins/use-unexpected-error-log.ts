import type { ExecutionResult } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { requestLogger, type Logger } from '../../log.ts';
import type { ErrorMasking } from '../mask-error.ts';
import type { RequestFacts } from '../request-id.ts';

/**
 * Logs each INTERNAL error and database failure a result carries, with what it hides (mask-error.ts), through the
 * request's logger. Result processing is the first place after masking that has the request: yoga
 * masks an execution's errors and a failed context alike without it.
 */
export function useUnexpectedErrorLog(masking: ErrorMasking, logger: Logger): Plugin {
  return {
    onResultProcess({ result, serverContext }) {
      const results = (Array.isArray(result) ? result : [result]) as ExecutionResult[];
      for (const r of results) {
        for (const error of r.errors ?? []) {
          const hidden = masking.hidden(error);
          if (hidden === undefined) continue;
          const facts = (serverContext as { facts?: RequestFacts }).facts;
          const log = facts === undefined ? logger : requestLogger(logger, facts);
          if (hidden.refusal === undefined) log.error({ err: hidden.err, path: hidden.path }, 'unexpected error');
          else log.warn({ err: hidden.err, path: hidden.path, refusal: hidden.refusal }, 'database failure');
        }
      }
    },
  };
}
