import pino, { type Logger } from 'pino';
import type { RequestFacts } from './http/request-id.ts';
import { PHI_LOG_KEYS } from './policy/phi-fields.ts';

export type { Logger };

/**
 * Structured JSON logs. Call sites log ids, codes and counts, never values; the redaction list
 * is the second line of defence for anything that slips through: credentials, GraphQL documents
 * and variables (a document can spell a PHI value inline), SQL text and parameters, and every
 * field, input and column name of the PHI catalogue (src/policy/phi-fields.ts) and of a
 * break-glass grant's texts. Pino matches a wildcard at one level only, so call sites log flat summaries (see
 * errorSummary), never whole error or request objects.
 */
export const REDACT_PATHS = [
  ...['headers.authorization', 'headers.cookie'].flatMap((p) => [p, `*.${p}`]),
  // A break-glass grant's reason and review comment are PHI too (src/records/grant-text.ts); `reason` is in the catalogue.
  ...['authorization', 'cookie', 'token', 'password', 'secret', 'key', 'apiKey', 'query', 'document', 'variables', 'sql', 'values', 'comment', 'reviewComment', 'review_comment', 'reason_sealed', 'review_comment_sealed', ...PHI_LOG_KEYS].flatMap(
    (f) => [f, `*.${f}`],
  ),
];

/**
 * Without a destination, standard output written asynchronously: a request's summary line is
 * queued and written by the next free write, with the lines of concurrent requests, instead of a
 * write(2) of its own on the request's path. pino flushes what is queued when the process exits.
 */
export function createLogger(level: string, destination: pino.DestinationStream = pino.destination({ dest: 1, sync: false })): Logger {
  return pino(
    {
      level,
      base: { service: 'phigate' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    },
    destination,
  );
}

/**
 * What a line written while a request is handled says about it: who (subject) and from where
 * (client address), which log-in monitoring reads, and its ids.
 */
export function requestFields(facts: RequestFacts): { requestId: string; clientRequestId?: string; clientAddr?: string; subject?: string } {
  // Assigned one by one into a fresh object, which the caller may add its own keys to: on Node 20,
  // keys added to a spread's copy (`{ ...fields, operation }`) each take V8 11.3's slow path,
  // ~1-1.5 us a key against ~0.05 on Node 24.
  const fields: { requestId: string; clientRequestId?: string; clientAddr?: string; subject?: string } = { requestId: facts.requestId };
  if (facts.clientRequestId !== null) fields.clientRequestId = facts.clientRequestId;
  if (facts.clientAddr !== null) fields.clientAddr = facts.clientAddr;
  if (facts.subject !== null) fields.subject = facts.subject;
  return fields;
}

/** What code handed a request logs through: a pino Logger has these too. */
export interface RequestLog {
  info(fields: object, msg: string): void;
  info(msg: string): void;
  warn(fields: object, msg: string): void;
  warn(msg: string): void;
  error(fields: object, msg: string): void;
  error(msg: string): void;
}

type Level = 'info' | 'warn' | 'error';

/**
 * Lines that name the request, with its facts as they are when each line is written (the subject
 * is known only once authenticated). Not a pino child: one costs ~10 us to make, and most requests
 * write no line but their summary.
 */
class BoundToRequest implements RequestLog {
  private readonly logger: Logger;
  private readonly facts: RequestFacts;
  constructor(logger: Logger, facts: RequestFacts) {
    this.logger = logger;
    this.facts = facts;
  }
  info(a: object | string, msg?: string): void {
    this.write('info', a, msg);
  }
  warn(a: object | string, msg?: string): void {
    this.write('warn', a, msg);
  }
  error(a: object | string, msg?: string): void {
    this.write('error', a, msg);
  }
  private write(level: Level, a: object | string, msg: string | undefined): void {
    if (!this.logger.isLevelEnabled(level)) return;
    if (typeof a === 'string') this.logger[level](requestFields(this.facts), a);
    else this.logger[level](Object.assign(requestFields(this.facts), a), msg);
  }
}

/** Every line written through it names the request: for code handed the request (the GraphQL context, yoga's server context). */
export function requestLogger(logger: Logger, facts: RequestFacts): RequestLog {
  return new BoundToRequest(logger, facts);
}

/** A line of one level only: values that hold no keys, so only the line's own keys can need censoring. */
export type FlatFields = Readonly<Record<string, string | number | boolean | null | undefined | readonly unknown[]>>;

/**
 * Writes the request's summary line through `logger` with its top-level keys censored as every
 * line's are. Censoring one level down is left out because a flat line has nothing there (an
 * array's elements are not matched by key either way), and it is what costs: with wildcard paths
 * pino runs the redactor on every value of every line, ~30 us a line against ~1 us, on every request.
 */
export function flatLineWriter(logger: Logger): (fields: FlatFields, msg: string) => void {
  const flat = logger.child({}, { redact: { paths: REDACT_PATHS.filter((p) => !p.includes('.')), censor: '[redacted]' } });
  return (fields, msg) => flat.info(fields, msg);
}
