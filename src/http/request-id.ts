import { randomUUID } from 'node:crypto';

/** A caller's X-Request-Id is kept when it is a plain token (it ends up in logs and audit rows). */
export function requestIdFrom(header: string | null): string {
  return header && /^[A-Za-z0-9._-]{8,64}$/.test(header) ? header : randomUUID();
}
