import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { onFreePort } from '../support/free-port.ts';
import { ROOT, startGatewayProcess } from '../support/gateway-process.ts';

// What production runs: `npm run build`'s dist/, started with plain node (no tsx loaded), as the
// image's CMD and `npm start` with PHIGATE_ENV=production do.

const run = promisify(execFile);
let db: TestDatabase;
let dataDir: string;

beforeAll(async () => {
  db = await createTestDatabase();
  dataDir = await mkdtemp(path.join(tmpdir(), 'phigate-compiled-'));
  await run('npm', ['run', 'build'], { cwd: ROOT });
}, 180_000);
afterAll(async () => {
  await db?.drop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe('the compiled gateway (dist/)', () => {
  it('bin/phigate.js runs the compiled CLI in production', async () => {
    expect(existsSync(path.join(ROOT, 'dist/cli/main.js'))).toBe(true);
    const { stderr } = await run(process.execPath, ['bin/phigate.js', '--help'], { cwd: ROOT, env: { PATH: process.env.PATH ?? '', PHIGATE_ENV: 'production' } });
    expect(stderr).toMatch(/^usage: phigate <command>/);
  });

  it('node dist/main.js serves GraphQL (and, in development, GraphiQL with a working token), and stops on SIGTERM', { timeout: 90_000 }, async () => {
    // The development issuer's URL names the gateway's port, so the port is chosen first.
    const { port, gateway } = await onFreePort(async (port) => ({
      port,
      gateway: await startGatewayProcess(process.execPath, ['dist/main.js'], {
        PHIGATE_ENV: 'development',
        PHIGATE_PORT: String(port),
        PHIGATE_DATA_DIR: dataDir,
        ...db.gatewayEnv,
        PHIGATE_LOCAL_MASTER_KEY: randomBytes(32).toString('base64'),
      }),
    }));
    try {
      const base = `http://127.0.0.1:${port}`;
      const html = await (await fetch(`${base}/graphql`, { headers: { accept: 'text/html' } })).text();
      const options = JSON.parse(/id="graphiql-options">([^<]*)</.exec(html)![1]!) as { headers: string };
      const { Authorization } = JSON.parse(options.headers) as { Authorization: string };
      const res = await fetch(`${base}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: Authorization },
        body: JSON.stringify({ query: '{ me { subject mfa } }' }),
      });
      expect(await res.json()).toEqual({ data: { me: { subject: 'dr-north-1', mfa: true } } });
    } finally {
      process.kill(gateway.pid, 'SIGTERM');
    }
    expect((await gateway.exited).code).toBe(0);
    expect(gateway.output()).not.toMatch(/tsx/);
  });
});
