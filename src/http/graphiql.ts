import type http from 'node:http';

/** Where the page's own files are served: the page references nothing else. */
const ASSETS = '/graphiql/';

/**
 * The page may run only its own files: scripts, workers and queries from this origin, styles and
 * fonts from its stylesheet (inline `data:` fonts and images). No inline script: the options travel
 * in a JSON data block, which the browser never executes. `'unsafe-inline'` styles remain because
 * the editor (Monaco) and React set style attributes and inject style elements at run time.
 */
export const GRAPHIQL_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "font-src 'self' data:",
  "img-src 'self' data:",
  "connect-src 'self'",
  "worker-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** Sets GraphiQL's editor workers to this origin's files, then renders it with the page's options. */
const START_SCRIPT = `'use strict';
const workers = { editorWorkerService: '${ASSETS}editor.worker.js', json: '${ASSETS}json.worker.js', graphql: '${ASSETS}graphql.worker.js' };
self.MonacoEnvironment = { globalAPI: false, getWorkerUrl: (_moduleId, label) => workers[label] };
const options = JSON.parse(document.getElementById('graphiql-options').textContent);
YogaGraphiQL.renderYogaGraphiQL(document.getElementById('root'), options);
`;

export interface GraphiqlOptions {
  /** The GraphQL endpoint the page queries (same origin). */
  readonly endpoint: string;
  /** The request headers the page starts with, computed per page load (a fresh development token). */
  readonly headers: () => Promise<Record<string, string>>;
  readonly defaultQuery: string;
}

/** JSON inside a <script type="application/json"> block: `<` escaped so no text can close the block. */
const jsonInHtml = (value: unknown): string => JSON.stringify(value).replace(/</g, '\\u003c');

/**
 * GraphiQL served from this process only: the page and its files come from the
 * `@graphql-yoga/render-graphiql` package (a development dependency: GraphiQL is served in
 * development only), so it renders offline, and its Content-Security-Policy allows nothing but
 * this origin. Returns a route for the gateway: GET of the endpoint by a browser (`Accept:
 * text/html`) gets the page, `/graphiql/*` its files; anything else is left to GraphQL.
 */
export async function createGraphiqlRoute(opts: GraphiqlOptions): Promise<(req: http.IncomingMessage, res: http.ServerResponse) => boolean> {
  const bundle = await import('@graphql-yoga/render-graphiql/graphiql').catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw err;
    throw new Error('GraphiQL (development) needs the development dependency @graphql-yoga/render-graphiql: run `npm install`');
  });
  const js = 'text/javascript; charset=utf-8';
  const assets = new Map<string, { type: string; body: Buffer }>([
    ['graphiql.css', { type: 'text/css; charset=utf-8', body: Buffer.from(bundle.css) }],
    ['yoga-graphiql.js', { type: js, body: Buffer.from(bundle.js) }],
    ['start.js', { type: js, body: Buffer.from(START_SCRIPT) }],
    ['editor.worker.js', { type: js, body: Buffer.from(bundle.editorWorkerService) }],
    ['json.worker.js', { type: js, body: Buffer.from(bundle.jsonWorker) }],
    ['graphql.worker.js', { type: js, body: Buffer.from(bundle.graphqlWorker) }],
    ['favicon.ico', { type: 'image/x-icon', body: Buffer.from(bundle.favicon.slice(bundle.favicon.indexOf(',') + 1), 'base64') }],
  ]);

  const page = async (): Promise<string> => {
    const options = {
      endpoint: opts.endpoint,
      title: 'phigate GraphiQL',
      method: 'POST',
      useGETForQueries: false,
      headers: JSON.stringify(await opts.headers(), null, 2),
      // A token is a credential: never left behind in the browser's storage.
      shouldPersistHeaders: false,
      defaultQuery: opts.defaultQuery,
    };
    return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>phigate GraphiQL</title>
<link rel="icon" href="${ASSETS}favicon.ico">
<link rel="stylesheet" href="${ASSETS}graphiql.css">
</head>
<body id="body" class="no-focus-outline">
<noscript>GraphiQL needs JavaScript.</noscript>
<div id="root"></div>
<script type="application/json" id="graphiql-options">${jsonInHtml(options)}</script>
<script src="${ASSETS}yoga-graphiql.js"></script>
<script src="${ASSETS}start.js"></script>
</body>
</html>
`;
  };

  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const read = req.method === 'GET' || req.method === 'HEAD';
    if (path.startsWith(ASSETS)) {
      const asset = assets.get(path.slice(ASSETS.length));
      if (!read || asset === undefined) return false;
      res.writeHead(200, { 'content-type': asset.type, 'content-length': asset.body.length });
      res.end(req.method === 'HEAD' ? undefined : asset.body);
      return true;
    }
    if (path !== opts.endpoint || req.method !== 'GET' || !(req.headers.accept ?? '').includes('text/html')) return false;
    void page().then(
      (html) => res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': GRAPHIQL_CSP }).end(html),
      () => res.writeHead(500, { 'content-type': 'text/plain' }).end('GraphiQL page unavailable\n'),
    );
    return true;
  };
}
