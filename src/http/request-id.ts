import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';

// A caller's id ends up in logs and audit rows: a plain token of 8 to 64 characters with at least
// one letter, so that an identifier-shaped value (an SSN, a phone number) is never kept.
const ACCEPTED = /^(?=[^A-Za-z]*[A-Za-z])[A-Za-z0-9._-]{8,64}$/;

/** The caller's X-Request-Id when it is acceptable, else a fresh UUID. */
export function requestIdFrom(header: string | null): string {
  return header && ACCEPTED.test(header) ? header : randomUUID();
}

const current = new AsyncLocalStorage<string>();

/**
 * Runs the handling of one request with its id bound to everything it causes, so that every log
 * line written meanwhile carries the id, even from code that never sees the request (error
 * masking, plugins).
 */
export function withRequestId<T>(requestId: string, fn: () => T): T {
  return current.run(requestId, fn);
}

export function currentRequestId(): string | undefined {
  return current.getStore();
}

/**
 * Runs `fn` outside any request, for background work a request merely set off (a batch of spans
 * exported after it ended), so that its log lines are not taken for that request's.
 */
export function outsideRequests<T>(fn: () => T): T {
  return current.exit(fn);
}
