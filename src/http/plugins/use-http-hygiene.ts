import type { Plugin } from 'graphql-yoga';

/**
 * On every response of the server, GraphQL or not (gateway.ts sets them before routing): an API
 * of patient data is never cached, framed, sniffed, sent over plain HTTP once seen over TLS, or
 * allowed to load anything into a page.
 */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'Strict-Transport-Security': 'max-age=63072000; includeSubDomains',
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-store',
  'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'",
  'X-Frame-Options': 'DENY',
};

/**
 * Said to every client that sends GET (urql's default for queries): what to change, and why GET stays
 * refused. A query and its variables in a URL (`patientBySsn(ssn: ...)`) land in proxy, load-balancer
 * and server access logs, browser history and Referer headers, none of which the audit controls.
 */
export const GET_REFUSED =
  'Use POST: GraphQL is served over POST with content-type application/json only, because queries and variables in URLs end up in proxy and server logs. urql: createClient({ preferGetMethod: false }); Apollo Client: HttpLink({ useGETForQueries: false }).';

const CORS_ALLOWED_HEADERS = 'authorization, content-type, x-request-id';

export interface HttpHygieneOptions {
  /** Origins a browser may call from; `*` (refused in production) for any. Empty: no CORS headers at all. */
  readonly corsOrigins: readonly string[];
}

/**
 * GraphQL is POST with `content-type: application/json` and nothing else. Neither GET nor the
 * content types an HTML form or a `no-cors` fetch may send (text/plain, form encodings, multipart)
 * reach the executor, so a page on another site cannot make a signed-in browser run an operation
 * (CSRF), and a query never lands in URLs, proxies or history.
 *
 * CORS answers only origins of the allow-list, with their own name (never `*` with credentials:
 * the gateway sends no Access-Control-Allow-Credentials at all, tokens travel in Authorization).
 * yoga's own CORS is off: it reflects any origin, with credentials, when left to its defaults.
 * Its options cannot say ours either: an allow-list of one origin is answered to every origin, an
 * unlisted origin is answered `Access-Control-Allow-Origin: null` (which a sandboxed iframe's
 * origin matches), `*` reflects the caller's origin, and `Vary: Origin` is not always sent.
 */
export function useHttpHygiene({ corsOrigins }: HttpHygieneOptions): Plugin {
  const anyOrigin = corsOrigins.includes('*');
  const allowOrigin = (origin: string | null): string | null => {
    if (origin === null || corsOrigins.length === 0) return null;
    if (anyOrigin) return '*';
    return corsOrigins.includes(origin) ? origin : null;
  };
  const corsHeaders = (headers: Headers, origin: string | null) => {
    if (corsOrigins.length === 0) return;
    // Answers differ by Origin: caches must keep them apart.
    headers.append('Vary', 'Origin');
    const allowed = allowOrigin(origin);
    if (allowed !== null) headers.set('Access-Control-Allow-Origin', allowed);
  };
  return {
    onRequest({ request, endResponse, fetchAPI }) {
      if (request.method !== 'OPTIONS') return;
      const response = new fetchAPI.Response(null, { status: 204, headers: { Allow: 'POST, OPTIONS', 'Content-Length': '0' } });
      corsHeaders(response.headers, request.headers.get('origin'));
      if (response.headers.has('Access-Control-Allow-Origin')) {
        response.headers.set('Access-Control-Allow-Methods', 'POST');
        response.headers.set('Access-Control-Allow-Headers', CORS_ALLOWED_HEADERS);
        response.headers.set('Access-Control-Max-Age', '600');
      }
      endResponse(response);
    },
    onRequestParse({ request, endResponse, fetchAPI }) {
      // Answered here as JSON whatever the client accepts: yoga's error path would answer a
      // browser's `Accept: text/html` with 406 instead.
      const refuse = (status: number, reason: string, message: string, headers: Record<string, string> = {}) =>
        endResponse(
          new fetchAPI.Response(JSON.stringify({ errors: [{ message, extensions: { code: 'BAD_USER_INPUT', reason } }] }), {
            status,
            headers: { 'Content-Type': 'application/json; charset=utf-8', ...headers },
          }),
        );
      if (request.method !== 'POST') return refuse(405, 'method_not_allowed', GET_REFUSED, { Allow: 'POST' });
      const mediaType = request.headers.get('content-type')?.split(';')[0]?.trim().toLowerCase();
      if (mediaType !== 'application/json') return refuse(415, 'unsupported_media_type', 'GraphQL requests must be sent as content-type application/json.');
    },
    onResponse({ request, response }) {
      if (request.method !== 'OPTIONS') corsHeaders(response.headers, request.headers.get('origin'));
    },
  };
}
