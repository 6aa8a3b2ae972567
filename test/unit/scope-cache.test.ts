import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

// Pothos' scope cache holds each request's context from a WeakMap keyed by that context: until
// released, the scavenges keep the whole request and promote it (src/graphql/scope-cache.ts). Run in
// a child process so that the measure is of that alone: 20,000 contexts of ~4 KB, each with its
// scopes cached as a field with `authScopes` does, released or not; the old generation's growth.
describe('releaseScopeCache', () => {
  const promotedPerContext = (release: boolean): number => {
    const script = `
      import v8 from 'node:v8';
      import { RequestCache } from '@pothos/plugin-scope-auth';
      import { builder } from './src/graphql/builder.ts';
      import { releaseScopeCache } from './src/graphql/scope-cache.ts';
      const old = () => v8.getHeapSpaceStatistics().filter((s) => !s.space_name.startsWith('new')).reduce((a, s) => a + s.space_used_size, 0);
      // Pothos' WeakMap and its table made and moved to the old generation, as in a gateway that has run.
      RequestCache.fromContext({}, builder);
      globalThis.gc();
      globalThis.gc();
      const before = old();
      for (let i = 0; i < 20_000; i++) {
        const ctx = { payload: new Array(500).fill(i) };
        RequestCache.fromContext(ctx, builder);
        // The execution's wait, as a resolver's on PostgreSQL.
        await null;
        if (${release}) releaseScopeCache(ctx);
      }
      console.log('PROMOTED', (old() - before) / 20_000);
    `;
    const out = execFileSync(process.execPath, ['--expose-gc', '--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
    const promoted = Number(out.slice(out.indexOf('PROMOTED')).split(/\s+/)[1]);
    console.log(`promoted per context, ${release ? 'released' : 'kept'}: ${promoted.toFixed(0)} B`);
    return promoted;
  };

  it('lets the scavenges free a request whose execution is over', () => {
    const kept = promotedPerContext(false);
    const released = promotedPerContext(true);
    // Unreleased, the scavenges promote 8-75% of each ~4 KB context (as the GCs fall); released, next to nothing.
    expect(kept).toBeGreaterThan(200);
    expect(released).toBeGreaterThanOrEqual(0);
    expect(released).toBeLessThan(kept / 10);
  }, 60_000);
});
