import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { freePort } from '../support/free-port.ts';

// What production runs: `npm run build`'s dist/, started with plain node (no tsx loaded), as the
// image's CMD and `npm start` with PHIGATE_ENV=production do.

const ROOT = path.resolve(import.meta.dirname, '../..');
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

const cleanEnv = () => Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PHIGATE_') && !k.startsWith('npm_') && k !== 'NODE_OPTIONS'));

describe('the compiled gateway (dist/)', () => {
  it('bin/phigate.js runs the compiled CLI in production', async () => {
    expect(existsSync(path.join(ROOT, 'dist/cli/main.js'))).toBe(true);
    const { stderr } = await run(process.execPath, ['bin/phigate.js', '--help'], { cwd: ROOT, env: { ...cleanEnv(), PHIGATE_ENV: 'production' } });
    expect(stderr).toMatch(/^usage: phigate <command>/);
  });

  it('node dist/main.js serves GraphQL (and, in development, GraphiQL with a working token), and stops on SIGTERM', { timeout: 90_000 }, async () => {
    const port = await freePort();
    const child = spawn(process.execPath, ['dist/main.js'], {
      cwd: ROOT,
      env: {
        ...cleanEnv(),
        PHIGATE_ENV: 'development',
        PHIGATE_PORT: String(port),
        PHIGATE_DATA_DIR: dataDir,
        DATABASE_URL: db.appUrl,
        PHIGATE_LOCAL_MASTER_KEY: randomBytes(32).toString('base64'),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (output += c.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const deadline = Date.now() + 60_000;
      while (!output.includes('"msg":"phigate listening"')) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`dist/main.js did not listen:\n${output}`);
        await new Promise((r) => setTimeout(r, 50));
      }
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
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(output).not.toMatch(/tsx/);
  });
});
