import { AsyncLocalStorage } from 'node:async_hooks';
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

/** What every log line written while a request is handled says about it. */
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

const current = new AsyncLocalStorage<RequestFacts>();

/**
 * Runs the handling of one request with its facts bound to everything it causes, so that every
 * log line written meanwhile carries them, even from code that never sees the request (error
 * masking, plugins).
 */
export function withRequest<T>(facts: RequestFacts, fn: () => T): T {
  return current.run(facts, fn);
}

/** For code outside the HTTP server (tests, tools) that only has an id to bind. */
export function withRequestId<T>(requestId: string, fn: () => T): T {
  return withRequest({ requestId, clientRequestId: null, clientAddr: null, subject: null }, fn);
}

export function currentRequest(): RequestFacts | undefined {
  return current.getStore();
}

export function currentRequestId(): string | undefined {
  return current.getStore()?.requestId;
}

/**
 * Runs `fn` outside any request, for background work a request merely set off (a batch of spans
 * exported after it ended), so that its log lines are not taken for that request's.
 */
export function outsideRequests<T>(fn: () => T): T {
  return current.exit(fn);
}
