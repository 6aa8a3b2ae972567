import http from 'node:http';
import https from 'node:https';

/**
 * One HTTP request from the gateway to another service (the issuer's discovery document and JWKS,
 * the alert webhook), through node:http.
 *
 * Not fetch(): Node's fetch is undici, whose HTTP parser is WebAssembly that V8 compiles on the
 * first connection, and what that compilation touched stays resident for the life of the process:
 * 7-15 MB on Node 24.22 after the gateway's modules (mostly glibc's heap, ~2 MB of the binary's
 * Wasm compiler text), 3-23 MB on Node 20.20, for the few requests a gateway makes to its issuer
 * (bench/README.md, "Node 24's baseline: what start-up loads").
 *
 * As the callers used fetch: redirects are not followed (a 3xx is an answer like any other), and
 * when `signal` aborts the promise rejects with its reason (AbortSignal.timeout's TimeoutError).
 */
export interface OutboundRequest {
  readonly method?: 'GET' | 'POST';
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string;
  readonly signal: AbortSignal;
  /** An answer longer than this fails the request rather than filling memory. */
  readonly maxBytes?: number;
  /**
   * false: settle with the status once the answer's head arrives, draining its body unread (the
   * webhook: a 2xx whose body then stalls was delivered, and retrying it would send the alert twice).
   */
  readonly readBody?: boolean;
}

export interface OutboundAnswer {
  readonly status: number;
  /** The answer's body decoded as UTF-8. */
  readonly text: string;
}

/** Far above any discovery document, JWKS or webhook reply. */
const MAX_BYTES = 1024 * 1024;

/** Some identity providers' firewalls refuse a request that names no agent; fetch sent its own. */
const USER_AGENT = 'phigate';

export function outboundRequest(url: URL, { method = 'GET', headers = {}, body, signal, maxBytes = MAX_BYTES, readBody = true }: OutboundRequest): Promise<OutboundAnswer> {
  const transport = url.protocol === 'https:' ? https : url.protocol === 'http:' ? http : null;
  if (transport === null) return Promise.reject(new TypeError(`outbound request: ${url.protocol} is not http: or https:`));
  // As fetch did: node:http would send them as Basic authorization; the URL is not the place for a secret.
  if (url.username !== '' || url.password !== '') return Promise.reject(new TypeError('outbound request: a URL with credentials is refused'));
  return new Promise((resolve, reject) => {
    const fail = (err: unknown) => reject(signal.aborted ? signal.reason : err);
    const req = transport.request(url, { method, headers: { 'user-agent': USER_AGENT, ...headers }, signal }, (res) => {
      if (!readBody) {
        res.on('error', () => undefined).resume();
        resolve({ status: res.statusCode ?? 0, text: '' });
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBytes) res.destroy(new RangeError(`outbound request: the answer is longer than ${maxBytes} bytes`));
        else chunks.push(chunk);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', fail);
      res.on('close', () => {
        if (!res.complete) fail(new Error('outbound request: the connection closed before the answer was complete'));
      });
    });
    req.on('error', fail);
    req.end(body);
  });
}
