import pino, { type Logger } from 'pino';
import { currentRequestId } from './http/request-id.ts';

export type { Logger };

const PHI_FIELDS = ['mrn', 'ssn', 'givenName', 'familyName', 'birthDate', 'phone', 'email', 'address', 'occurredAt', 'kind', 'reason', 'diagnosisCodes', 'notes'];

/**
 * Structured JSON logs. Call sites log ids, codes and counts, never values; the redaction list
 * is the second line of defence for anything that slips through: credentials, GraphQL documents
 * and variables (a document can spell a PHI value inline), SQL text and parameters, PHI field
 * names. Pino matches a wildcard at one level only, so call sites log flat summaries (see
 * errorSummary), never whole error or request objects.
 */
export const REDACT_PATHS = [
  ...['headers.authorization', 'headers.cookie'].flatMap((p) => [p, `*.${p}`]),
  ...['authorization', 'cookie', 'token', 'password', 'secret', 'key', 'apiKey', 'query', 'document', 'variables', 'sql', 'values', ...PHI_FIELDS].flatMap(
    (f) => [f, `*.${f}`],
  ),
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'phigate' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      // Every line written while a request is handled names it, whoever writes the line.
      mixin: () => {
        const requestId = currentRequestId();
        return requestId === undefined ? {} : { requestId };
      },
    },
    destination,
  );
}
