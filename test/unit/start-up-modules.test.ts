import { execFile } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');

/**
 * Every module URL a fresh Node process resolves while it imports `entry`, through a resolve hook
 * registered after tsx's (so it sees the URLs tsx resolves to). In a child process: vitest loads
 * modules its own way, and a module it has already loaded would not show.
 */
function modulesLoadedBy(entry: string): Promise<string[]> {
  const hook = `let port; export function initialize(data) { port = data.port; }
export async function resolve(specifier, context, next) { const r = await next(specifier, context); port.postMessage(r.url); return r; }`;
  const script = `
import { register } from 'node:module';
import { MessageChannel } from 'node:worker_threads';
const { port1, port2 } = new MessageChannel();
const urls = [];
port1.on('message', (url) => urls.push(url));
register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hook)}), { data: { port: port2 }, transferList: [port2] });
await import(${JSON.stringify(path.join(ROOT, entry))});
await new Promise((r) => setTimeout(r, 200));
port1.close();
process.stdout.write(JSON.stringify(urls));
process.exit(0);`;
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, maxBuffer: 64 << 20 }, (err, out) =>
      err ? reject(err) : resolve(JSON.parse(out) as string[]),
    ),
  );
}

// Each of these holds megabytes of heap for the life of the process (bench/README.md, "Node 24's
// baseline: what start-up loads"): the gateway loads one only when its configuration uses it, inside assembleApp.
const BY_CONFIGURATION = ['/node_modules/@aws-sdk/', '/node_modules/redis/', '/node_modules/@redis/', '/node_modules/@opentelemetry/sdk-trace', '/node_modules/@opentelemetry/exporter-'];

describe("the gateway's modules at start-up", () => {
  it('leave out the AWS SDK, the Redis client and the OpenTelemetry SDK until the configuration asks for them', async () => {
    const urls = await modulesLoadedBy('src/app.ts');
    expect(urls.some((u) => u.endsWith('/src/http/gateway.ts'))).toBe(true);
    expect(urls.filter((u) => BY_CONFIGURATION.some((m) => u.includes(m)))).toEqual([]);
  }, 60_000);
});
