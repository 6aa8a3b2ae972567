import { GraphQLError } from 'graphql';

/** The error codes of the contract; clients switch on these, never on messages. */
export type ErrorCode =
  | 'UNAUTHENTICATED'
  | 'MFA_REQUIRED'
  | 'FORBIDDEN'
  | 'FIELD_DENIED'
  | 'BAD_USER_INPUT'
  | 'RATE_LIMITED'
  | 'QUERY_TOO_COMPLEX'
  | 'AUDIT_UNAVAILABLE'
  | 'KEY_UNAVAILABLE'
  | 'BREAK_GLASS_DENIED'
  | 'INTERNAL';

const http: Partial<Record<ErrorCode, { status: number; headers?: Record<string, string> }>> = {
  UNAUTHENTICATED: { status: 401, headers: { 'WWW-Authenticate': 'Bearer realm="phigate", ApiKey realm="phigate"' } },
  RATE_LIMITED: { status: 429 },
};

/**
 * The only error type whose message reaches a client. Messages must never contain PHI, tokens,
 * keys or SQL: they are written by us, about the request's shape, not copied from a cause.
 * `reason` is a machine-readable refinement of `code` (e.g. which JWT check failed).
 */
export class PhigateError extends GraphQLError {
  readonly code: ErrorCode;
  readonly reason: string | undefined;

  constructor(code: ErrorCode, message: string, options: { reason?: string; cause?: unknown } = {}) {
    const status = http[code];
    super(message, {
      extensions: {
        code,
        ...(options.reason ? { reason: options.reason } : {}),
        ...(status ? { http: status } : {}),
      },
    });
    this.name = 'PhigateError';
    this.code = code;
    this.reason = options.reason;
    // Kept for logs only; `cause` is never serialised into a response.
    if (options.cause !== undefined) Object.defineProperty(this, 'cause', { value: options.cause, enumerable: false });
  }
}

export const isPhigateError = (e: unknown): e is PhigateError => e instanceof PhigateError;
