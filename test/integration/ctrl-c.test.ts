import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/db.ts';
import { startGatewayProcess, type GatewayProcess } from '../support/gateway-process.ts';

// `npm start` as a developer runs it, in a process group of its own as a terminal's foreground job
// is: Ctrl-C is SIGINT to the whole group (npm, and the gateway, which npm also relays the signal
// to); `kill -INT <npm>` reaches npm alone.

let db: TestDatabase;
let dataDir: string;

beforeAll(async () => {
  db = await createTestDatabase();
  dataDir = await mkdtemp(path.join(tmpdir(), 'phigate-ctrl-c-'));
});
afterAll(async () => {
  await db?.drop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

const npmStart = (): Promise<GatewayProcess> =>
  startGatewayProcess(
    'npm',
    ['start'],
    { PHIGATE_ENV: 'development', PHIGATE_PORT: '0', PHIGATE_DATA_DIR: dataDir, ...db.gatewayEnv, PHIGATE_LOCAL_MASTER_KEY: randomBytes(32).toString('base64') },
    { detached: true },
  );

/** Resolves with the exit, or with null after `ms` (then kills the group so nothing lingers). */
async function exitWithin(run: GatewayProcess, ms: number) {
  let timer: NodeJS.Timeout | undefined;
  const result = await Promise.race([run.exited, new Promise<null>((r) => (timer = setTimeout(() => r(null), ms)))]);
  clearTimeout(timer);
  if (result === null) process.kill(-run.pid, 'SIGKILL');
  return result;
}

const count = (text: string, needle: string) => text.split(needle).length - 1;

describe('stopping npm start', () => {
  it('takes one Ctrl-C (SIGINT to the process group, relayed again by npm) as one graceful stop', { timeout: 90_000 }, async () => {
    const run = await npmStart();
    process.kill(-run.pid, 'SIGINT');
    expect(await exitWithin(run, 20_000)).toEqual({ code: 0, signal: null });
    const out = run.output();
    expect(count(out, '"msg":"stopping: no new connections')).toBe(1);
    expect(out).not.toContain('stopping now');
    expect(out).toContain('"msg":"stopped"');
  });

  it('stops gracefully, at once, on SIGINT to npm alone', { timeout: 90_000 }, async () => {
    const run = await npmStart();
    const started = performance.now();
    process.kill(run.pid, 'SIGINT');
    expect(await exitWithin(run, 10_000)).toEqual({ code: 0, signal: null });
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(run.output()).toContain('"msg":"stopped"');
  });
});
