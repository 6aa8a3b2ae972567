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

interface HttpStatus {
  readonly status: number;
  readonly headers?: Record<string, string>;
}

const http: Partial<Record<ErrorCode, HttpStatus>> = {
  UNAUTHENTICATED: { status: 401, headers: { 'WWW-Authenticate': 'Bearer realm="phigate", ApiKey realm="phigate"' } },
  // RFC 9470's step-up challenge. A status, not only an error beside `data`: a client set to keep
  // partial data (graphql-request's errorPolicy 'all') would otherwise read a refused `patient` as a
  // patient that does not exist; with a 4xx every client raises it.
  MFA_REQUIRED: {
    status: 401,
    headers: { 'WWW-Authenticate': 'Bearer realm="phigate", error="insufficient_user_authentication", error_description="sign in with multi-factor authentication"' },
  },
  RATE_LIMITED: { status: 429 },
  QUERY_TOO_COMPLEX: { status: 400 },
  // Nothing is shown without its audit rows; the client may well succeed a moment later.
  AUDIT_UNAVAILABLE: { status: 503, headers: { 'Retry-After': '1' } },
};

/**
 * The only error type whose message reaches a client. Messages must never contain PHI, tokens,
 * keys or SQL: they are written by us, about the request's shape, not copied from a cause.
 * `reason` is a machine-readable refinement of `code` (e.g. which JWT check failed).
 */
export class PhigateError extends GraphQLError {
  readonly code: ErrorCode;
  readonly reason: string | undefined;

  /**
   * `http` overrides the code's usual status, for refusals that HTTP has a better word for (413, 405, 415);
   * `null` drops it, for a field refused inside an answer that otherwise stands (HTTP 200).
   */
  constructor(code: ErrorCode, message: string, options: { reason?: string; cause?: unknown; http?: HttpStatus | null } = {}) {
    const status = options.http === undefined ? http[code] : options.http;
    super(message, {
      extensions: {
        code,
        ...(options.reason ? { reason: options.reason } : {}),
        // A copy: yoga marks validation errors' `http` in place, which must not leak into the table.
        ...(status ? { http: { ...status } } : {}),
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
