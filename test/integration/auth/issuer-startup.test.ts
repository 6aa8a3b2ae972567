import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../support/db.ts';
import { startTestIssuer, type TestIssuer } from '../../support/oidc-issuer.ts';

// `phigate` started as an operator starts it, with an issuer URL that differs from what the
// issuer's discovery document names by a trailing slash: it must not start, and must say both.

const ROOT = path.resolve(import.meta.dirname, '../../..');
let db: TestDatabase;
let issuer: TestIssuer;
let dataDir: string;

beforeAll(async () => {
  [db, issuer, dataDir] = await Promise.all([createTestDatabase(), startTestIssuer(), mkdtemp(path.join(tmpdir(), 'phigate-issuer-startup-'))]);
});
afterAll(async () => {
  await Promise.all([db?.drop(), issuer?.close(), dataDir && rm(dataDir, { recursive: true, force: true })]);
});

it('start-up stops with one line naming the configured issuer and the one its discovery document names', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      PHIGATE_ENV: 'development',
      PHIGATE_HOST: '127.0.0.1',
      PHIGATE_PORT: '0',
      PHIGATE_DATA_DIR: dataDir,
      ...db.gatewayEnv,
      PHIGATE_OIDC_ISSUER: `${issuer.issuer}/`,
      PHIGATE_LOCAL_MASTER_KEY: randomBytes(32).toString('base64'),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  expect(code).toBe(1);
  expect(stderr).toBe(
    `phigate: PHIGATE_OIDC_ISSUER: is "${issuer.issuer}/" but its discovery document names "${issuer.issuer}"; tokens carry the document's value, so set exactly that\n`,
  );
}, 60_000);
