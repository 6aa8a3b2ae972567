import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';

/** A caller's X-Request-Id is kept when it is a plain token (it ends up in logs and audit rows). */
export function requestIdFrom(header: string | null): string {
  return header && /^[A-Za-z0-9._-]{8,64}$/.test(header) ? header : randomUUID();
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
