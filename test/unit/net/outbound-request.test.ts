import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { outboundRequest } from '../../../src/net/outbound-request.ts';

let close: (() => Promise<void>) | null = null;
afterEach(async () => {
  await close?.();
  close = null;
});

async function serve(handle: (req: IncomingMessage, body: string, res: ServerResponse) => void): Promise<URL> {
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => handle(req, body, res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  close = () => {
    server.closeAllConnections();
    return new Promise((r) => server.close(() => r()));
  };
  return new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/path?q=1`);
}

const signal = () => AbortSignal.timeout(5_000);

describe('outboundRequest', () => {
  it('answers the status and the body as text, sending the method, headers and body given', async () => {
    const url = await serve((req, body, res) => res.writeHead(201, { 'content-type': 'text/plain' }).end(JSON.stringify({ method: req.method, url: req.url, type: req.headers['content-type'], body, name: 'Zoë' })));
    const answer = await outboundRequest(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}', signal: signal() });
    expect(answer.status).toBe(201);
    expect(JSON.parse(answer.text)).toEqual({ method: 'POST', url: '/path?q=1', type: 'application/json', body: '{"a":1}', name: 'Zoë' });
  });

  it('does not follow a redirect: the 3xx is the answer', async () => {
    const url = await serve((_req, _body, res) => res.writeHead(302, { location: 'http://198.51.100.1/elsewhere' }).end());
    await expect(outboundRequest(url, { signal: signal() })).resolves.toEqual({ status: 302, text: '' });
  });

  it("rejects with the signal's reason when it aborts before the answer", async () => {
    const url = await serve(() => undefined);
    const err = await outboundRequest(url, { signal: AbortSignal.timeout(50) }).catch((e: unknown) => e);
    expect((err as Error).name).toBe('TimeoutError');
  });

  it('fails an answer longer than maxBytes instead of reading it all', async () => {
    const url = await serve((_req, _body, res) => res.end('x'.repeat(5_000)));
    await expect(outboundRequest(url, { signal: signal(), maxBytes: 4_096 })).rejects.toThrow(/longer than 4096 bytes/);
    await expect(outboundRequest(url, { signal: signal(), maxBytes: 5_000 })).resolves.toMatchObject({ status: 200 });
  });

  it("names phigate as the agent unless told otherwise", async () => {
    const url = await serve((req, _body, res) => res.end(String(req.headers['user-agent'])));
    await expect(outboundRequest(url, { signal: signal() })).resolves.toEqual({ status: 200, text: 'phigate' });
    await expect(outboundRequest(url, { signal: signal(), headers: { 'user-agent': 'other' } })).resolves.toEqual({ status: 200, text: 'other' });
  });

  it('without readBody, settles with the status at the head while the body never ends', async () => {
    const url = await serve((_req, _body, res) => res.writeHead(202).write('partial'));
    await expect(outboundRequest(url, { method: 'POST', body: '{}', signal: AbortSignal.timeout(2_000), readBody: false })).resolves.toEqual({ status: 202, text: '' });
    const err = await outboundRequest(url, { signal: AbortSignal.timeout(200) }).catch((e: unknown) => e);
    expect((err as Error).name).toBe('TimeoutError');
  });

  it('refuses a URL carrying credentials, sending nothing', async () => {
    let asked = 0;
    const url = await serve((_req, _body, res) => (asked++, res.end()));
    url.username = 'user';
    url.password = 'secret';
    const err = await outboundRequest(url, { signal: signal() }).catch((e: unknown) => e);
    expect((err as Error).message).toBe('outbound request: a URL with credentials is refused');
    expect(asked).toBe(0);
  });

  it('refuses a scheme other than http: and https:', async () => {
    await expect(outboundRequest(new URL('file:///etc/passwd'), { signal: signal() })).rejects.toThrow(/file: is not http: or https:/);
  });
});
