import type http from 'node:http';
import type { ExecutionResult } from 'graphql';
import { isPromise, processRegularResult, type GraphQLParams, type Plugin, type YogaServerInstance } from 'graphql-yoga';
import type { GraphQLContext } from '../graphql/context.ts';
import { requestLogger, type Logger } from '../log.ts';
import { errorSummary } from './plugins/use-request-transaction.ts';
import type { RequestFacts } from './request-id.ts';

/**
 * The common GraphQL request answered without yoga's Request/Response layer (whatwg-node's
 * Request, Headers, body stream and Response piping: ~0.2-0.4 ms of CPU per read, issue 10).
 *
 * Only one shape qualifies: POST /graphql, `content-type: application/json` (charset utf-8 at
 * most), a `content-length` within the body limit, no `transfer-encoding`, and a body that is one
 * JSON object of the parameters yoga accepts. That shape is exactly what useHttpHygiene's,
 * useQueryLimits' and useNoEcho's request hooks let through untouched, so they have nothing to do
 * here. Anything else, and any request an `onParams` hook refuses (a hook that runs before any
 * context, transaction or audit), goes to yoga unchanged, its body handed over as read.
 *
 * From the parameters on it is yoga's own code: `getResultForParams` runs the `onParams` hooks
 * (trusted documents, yoga's parameter checks) and the one envelop, the same plugin instances in
 * the same order; the `onResultProcess` hooks (metrics, then yoga's Accept negotiation) and the
 * chosen result processor make the status, headers and body; the `onRequest`/`onResponse` hooks
 * that matter for this shape (metrics' clock, CORS headers) are called as yoga's adapter would.
 */
export interface FastPathOptions {
  readonly yoga: YogaServerInstance<{ req: http.IncomingMessage; facts: RequestFacts }, GraphQLContext>;
  readonly maxBodyBytes: number;
  /** Trusted documents are on: a request may name its document by `documentId` instead of `query`. */
  readonly documentIds: boolean;
  /** The HTTP-level hooks of the gateway's yoga plugins, in yoga's order. */
  readonly plugins: readonly Plugin[];
  readonly logger: Logger;
}

/** `facts` go into yoga's server context, where the GraphQL context and the plugins find them. */
type Answer = (req: http.IncomingMessage, res: http.ServerResponse, facts: RequestFacts) => Promise<void>;

const JSON_MEDIA_TYPE = /^application\/json\s*(;\s*charset\s*=\s*"?utf-8"?\s*)?$/i;
const DIGITS = /^\d+$/;

/** Whether the request's line and headers are of the one shape; its body is checked once read. */
export function qualifies(req: http.IncomingMessage, maxBodyBytes: number): boolean {
  if (req.method !== 'POST' || req.url !== '/graphql') return false;
  const { headers } = req;
  if (headers['transfer-encoding'] !== undefined) return false;
  const type = headers['content-type'];
  if (type === undefined || !JSON_MEDIA_TYPE.test(type)) return false;
  const length = headers['content-length'];
  return length !== undefined && DIGITS.test(length) && Number(length) > 0 && Number(length) <= maxBodyBytes;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The body's parameters when they are one operation's that yoga would accept as they are, else null. */
export function paramsOf(body: Buffer, documentIds: boolean): GraphQLParams | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return null;
  }
  if (!isPlainObject(parsed)) return null;
  for (const [key, value] of Object.entries(parsed)) {
    const fits =
      key === 'query' || key === 'operationName' || (key === 'documentId' && documentIds)
        ? typeof value === 'string'
        : (key === 'variables' || key === 'extensions') && isPlainObject(value);
    if (!fits) return null;
  }
  if (typeof parsed.query !== 'string' && !documentIds) return null;
  return parsed as GraphQLParams;
}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.once('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    req.once('error', reject);
    // A client gone before the end of its body: nothing to answer.
    req.once('close', () => {
      if (!req.complete) reject(new Error('request body incomplete'));
    });
  });
}

/** Just what yoga's hooks read of a Request (method, url, headers.get), over node's headers. */
function requestView(req: http.IncomingMessage): Request {
  const get = (name: string): string | null => {
    const value = req.headers[name.toLowerCase()];
    if (value === undefined) return null;
    return Array.isArray(value) ? value.join(', ') : value;
  };
  const headers = { get, has: (name: string) => get(name) !== null };
  return { method: 'POST', url: `http://localhost${req.url ?? '/'}`, headers } as unknown as Request;
}

/** A result processRegularResult answers with 200 and the result as it is. */
const isPlainData = (result: ExecutionResult): boolean =>
  !Array.isArray(result) && !(Symbol.asyncIterator in result) && !result.errors?.length && !(result.extensions as { http?: unknown } | undefined)?.http;

type ResultProcessHook = NonNullable<Plugin['onResultProcess']>;
type ResultProcessor = (result: unknown, fetchAPI: unknown, mediaType: string) => Response | Promise<Response>;

export function createFastPath({ yoga, maxBodyBytes, documentIds, plugins, logger }: FastPathOptions): { qualifies: (req: http.IncomingMessage) => boolean; answer: Answer } {
  // yoga keeps these private; the parity test (test/integration/graphql/fast-path.test.ts) pins
  // that using them answers as yoga does.
  const resultProcessHooks = (yoga as unknown as { onResultProcessHooks: ResultProcessHook[] }).onResultProcessHooks;
  const onRequest = plugins.flatMap((p) => (p.onRequest ? [p.onRequest] : []));
  const onResponse = plugins.flatMap((p) => (p.onResponse ? [p.onResponse] : []));
  const { fetchAPI } = yoga;

  const toYoga = (req: http.IncomingMessage, res: http.ServerResponse, facts: RequestFacts, body: Buffer): Promise<void> => {
    // whatwg-node takes a body already read from `req.body` (a Buffer is a body as it is).
    (req as http.IncomingMessage & { body?: Buffer }).body = body;
    return Promise.resolve(yoga(req, res, { facts }));
  };

  const answer: Answer = async (req, res, facts) => {
    let body: Buffer;
    try {
      body = await readBody(req);
    } catch {
      return void res.destroy();
    }
    const params = paramsOf(body, documentIds);
    if (params === null) return toYoga(req, res, facts, body);
    const request = requestView(req);
    const serverContext = { req, res, facts };
    // Each hook is awaited only when it returns a promise, as yoga's own loops do: an `await` of
    // a plain value still makes a promise, and on Node 20 every promise runs the async-context hooks.
    for (const hook of onRequest) {
      const pending = hook({ request, serverContext, fetchAPI, endResponse: refuseEarly, url: undefined } as never);
      if (isPromise(pending)) await pending;
    }
    let result: ExecutionResult;
    try {
      result = (await yoga.getResultForParams({ params, request }, serverContext as never)) as ExecutionResult;
    } catch (e) {
      // An onParams hook refused (trusted documents, yoga's parameter checks): nothing has run,
      // so yoga answers it as it would have. Past the hooks (yoga's handleParams has put the
      // params on the context) execution may have begun: never run it twice, fail closed.
      if ('params' in serverContext) throw e;
      return toYoga(req, res, facts, body);
    }
    let processor: ResultProcessor | undefined;
    let mediaType = '*/*';
    const acceptableMediaTypes: string[] = [];
    for (const hook of resultProcessHooks) {
      const pending = hook({
        request,
        acceptableMediaTypes,
        result,
        setResult: (next: unknown) => void (result = next as ExecutionResult),
        resultProcessor: processor,
        setResultProcessor: (next: unknown, type: string) => {
          processor = next as ResultProcessor;
          mediaType = type;
        },
        serverContext,
      } as never);
      if (isPromise(pending)) await pending;
    }
    let response: Response;
    let answered: Buffer | string | null = null;
    if (processor === processRegularResult && isPlainData(result)) {
      // What processRegularResult answers for data without errors or HTTP extensions (status 200,
      // its content type and length, the body as its stringifier writes it), without building a
      // Response only to read its text back; the hooks below see the same status and headers.
      // Encoded once, here: its length is the Buffer's, and node writes the Buffer behind the
      // headers as it is. A string is measured, then joined to the headers, flattened and
      // encoded again on the socket (a page's ~100 KB twice more in the young generation).
      answered = Buffer.from(((result as { stringify?: (r: unknown) => string }).stringify ?? JSON.stringify)(result), 'utf8');
      const headers = new fetchAPI.Headers({ 'content-type': `${mediaType}; charset=utf-8`, 'content-length': String(answered.length) });
      response = { status: 200, statusText: 'OK', ok: true, headers } as Response;
    } else {
      const processed = processor
        ? processor(result, fetchAPI, mediaType)
        : new fetchAPI.Response(null, { status: 406, statusText: 'Not Acceptable', headers: { accept: acceptableMediaTypes.join('; charset=utf-8, ') } });
      response = isPromise(processed) ? await processed : processed;
    }
    const made = response;
    for (const hook of onResponse) {
      const pending = hook({ request, response, serverContext, fetchAPI, setResponse: (next: Response) => void (response = next) } as never);
      if (isPromise(pending)) await pending;
    }
    if (answered === null || response !== made) answered = await response.text();
    response.headers.forEach((value, name) => res.setHeader(name, value));
    res.writeHead(response.status, response.statusText);
    res.end(answered);
  };
  // Nothing above is expected to throw (yoga turns execution's errors into results); if something
  // does, the request fails closed, with no body, as yoga's adapter answers an error of its own.
  const guarded: Answer = (req, res, facts) =>
    answer(req, res, facts).catch((err: unknown) => {
      requestLogger(logger, facts).error({ err: errorSummary(err) }, 'fast path failed');
      if (res.headersSent) res.destroy();
      else res.writeHead(500).end();
    });
  return { qualifies: (req) => qualifies(req, maxBodyBytes), answer: guarded };
}

// No onRequest hook of the gateway's answers a POST to /graphql early (hygiene answers OPTIONS).
const refuseEarly = (): never => {
  throw new Error('an onRequest hook answered a request of the fast path');
};
