import type { Plugin } from 'graphql-yoga';
import { isPhigateError, PhigateError } from '../../errors.ts';

/**
 * A body that is not JSON is refused without a word of it: yoga's own error quotes the parser's
 * message, which quotes the body (an SSN in a variable, a token pasted by mistake), in
 * `extensions.originalError`, in production too. Our errors (size limits) pass as they are.
 *
 * Listed after useQueryLimits, so it wraps the parser that counts a chunked body's bytes.
 */
export function useNoEcho(): Plugin {
  return {
    onRequestParse({ requestParser, setRequestParser }) {
      if (!requestParser) return;
      setRequestParser(async (request) => {
        try {
          return await requestParser(request);
        } catch (e) {
          if (isPhigateError(e)) throw e;
          throw new PhigateError('BAD_USER_INPUT', 'The request body is not valid JSON.', { reason: 'malformed_json', http: { status: 400 } });
        }
      });
    },
  };
}
