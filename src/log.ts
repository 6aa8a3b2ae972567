import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs. Call sites log ids, codes and counts, never values; the redaction list
 * is the second line of defence for anything that slips through (credentials, PHI field names).
 */
export const REDACT_PATHS = [
  'authorization',
  '*.authorization',
  'req.headers.authorization',
  'req.headers.cookie',
  'token',
  '*.token',
  'password',
  '*.password',
  'key',
  '*.key',
  'variables',
  '*.variables',
  ...['mrn', 'ssn', 'givenName', 'familyName', 'birthDate', 'phone', 'email', 'address', 'reason', 'diagnosisCodes', 'notes'].flatMap((f) => [f, `*.${f}`]),
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino({ level, base: { service: 'phigate' }, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, destination);
}
