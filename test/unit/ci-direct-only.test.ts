import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

// .ci/direct-only names the test files CI's PgBouncer pass leaves out, because nothing in them
// connects the way the gateway's pools do. The claim is about their code and the test helpers they
// import: once one of them uses a pooled connection, it belongs back in that pass.

const ROOT = path.resolve(import.meta.dirname, '../..');
const TEST = path.join(ROOT, 'test');
// Where the pooled URLs are defined (and the pass's PgBouncers started), not used.
const DEFINITIONS = new Set(['test/support/db.ts', 'test/support/global-setup.ts']);
const POOLED = /\b(appUrl|auxUrl|gatewayEnv|startTestGateway|startProcessStack|startGatewayProcess|viaPgBouncer|preparedStatements)\b/g;

const listed = readFileSync(path.join(ROOT, '.ci/direct-only'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l !== '' && !l.startsWith('#'));

/** The file and every test helper it imports, directly or through another helper. */
function withHelpers(file: string, seen = new Set<string>()): Set<string> {
  seen.add(file);
  const text = readFileSync(path.join(ROOT, file), 'utf8');
  // Static and dynamic imports, either quote (Prettier writes single; a dynamic import can hide a helper).
  for (const [, , spec] of text.matchAll(/(?:from\s+|import\s*\(\s*)(['"])(\.{1,2}\/[^'"]+)\1/g)) {
    const target = path.relative(ROOT, path.resolve(path.dirname(path.join(ROOT, file)), spec!));
    if (target.startsWith(`${path.relative(ROOT, TEST)}/`) && !DEFINITIONS.has(target) && !seen.has(target)) withHelpers(target, seen);
  }
  return seen;
}

describe('the files CI runs once only, not through PgBouncer', () => {
  it('are test files that exist, each named once', () => {
    expect(listed.length).toBeGreaterThan(0);
    expect(new Set(listed).size).toBe(listed.length);
    for (const f of listed) expect(existsSync(path.join(ROOT, f)) && f.endsWith('.test.ts'), f).toBe(true);
  });

  it.each(listed)('%s connects to no pooled URL, test gateway or gateway process', (file) => {
    const uses = [...withHelpers(file)].flatMap((f) => [...readFileSync(path.join(ROOT, f), 'utf8').matchAll(POOLED)].map((m) => `${f}: ${m[1]}`));
    expect(uses).toEqual([]);
  });
});
