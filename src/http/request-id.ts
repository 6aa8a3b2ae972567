import { randomUUID } from 'node:crypto';

// A caller's id ends up in logs: a plain token of 8 to 64 characters with at least one letter, so
// that an identifier-shaped value (an SSN, a phone number) is never kept.
const ACCEPTED = /^(?=[^A-Za-z]*[A-Za-z])[A-Za-z0-9._-]{8,64}$/;

/**
 * The caller's X-Request-Id when it is acceptable, else null. It is only ever kept beside the
 * gateway's own id (`clientRequestId` in log lines), never in its place: a client choosing the id
 * that audit rows and logs carry could make two requests look like one, or someone else's.
 */
export function clientRequestIdFrom(header: string | null | undefined): string | null {
  return header && ACCEPTED.test(header) ? header : null;
}

/**
 * What every log line written while a request is handled says about it. They travel with the
 * request explicitly (yoga's server context, the GraphQL context, a logger bound to them), not in
 * an AsyncLocalStorage: on Node 20 one in use runs a hook on every promise the process creates.
 */
export interface RequestFacts {
  /** The gateway's own id: the one in the response's X-Request-Id, audit rows and log lines. */
  readonly requestId: string;
  readonly clientRequestId: string | null;
  readonly clientAddr: string | null;
  /** The subject once authenticated, or the subject a refused token claimed. */
  subject: string | null;
}

export function newRequestFacts(clientRequestIdHeader: string | null | undefined, clientAddr: string | null): RequestFacts {
  return { requestId: randomUUID(), clientRequestId: clientRequestIdFrom(clientRequestIdHeader), clientAddr, subject: null };
}
