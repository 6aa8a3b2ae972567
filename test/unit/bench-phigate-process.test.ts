import { describe, expect, it } from 'vitest';
import { importsFromDist, phigateVariants } from '../../bench/phigate-process.ts';

describe('bench --phigate-variants', () => {
  it('reads each label with its flags and environment', () => {
    expect(phigateVariants('[{"label":"head"},{"label":"no-maglev","flags":["--no-maglev"],"env":{"MALLOC_ARENA_MAX":"4"}}]')).toEqual([
      { label: 'head' },
      { label: 'no-maglev', flags: ['--no-maglev'], env: { MALLOC_ARENA_MAX: '4' } },
    ]);
  });

  it('refuses what would start an unnamed, duplicated or malformed process, saying what is wrong', () => {
    expect(() => phigateVariants('no-maglev')).toThrow(/--phigate-variants: not JSON/);
    expect(() => phigateVariants('[]')).toThrow(/not a non-empty array/);
    expect(() => phigateVariants('[{"flags":["--no-maglev"]}]')).toThrow(/an entry without a label/);
    expect(() => phigateVariants('[{"label":"a"},{"label":"a"}]')).toThrow(/labels must differ/);
    expect(() => phigateVariants('[{"label":"a","flags":"--no-maglev"}]')).toThrow(/a: flags must be strings/);
    expect(() => phigateVariants('[{"label":"a","env":{"MALLOC_ARENA_MAX":4}}]')).toThrow(/a: env must map names to strings/);
    expect(() => phigateVariants('[{"label":"a","env":["MALLOC_ARENA_MAX=4"]}]')).toThrow(/a: env must map names to strings/);
  });
});

describe('the phigate target compiled as the image runs the gateway', () => {
  const dist = 'file:///app/dist/';
  const compiled = [
    "import v8 from 'node:v8';",
    "import { createAuditWriter } from '../../src/audit/writer.js';",
    "import { limitHeapGrowth } from '../../src/heap.js';",
  ].join('\n');

  it("points every import of the sources at dist/'s module of the same path", () => {
    const seen: string[] = [];
    const js = importsFromDist(compiled, dist, (url) => (seen.push(url.href), true));
    expect(js).toBe(["import v8 from 'node:v8';", "import { createAuditWriter } from 'file:///app/dist/audit/writer.js';", "import { limitHeapGrowth } from 'file:///app/dist/heap.js';"].join('\n'));
    expect(seen).toEqual(['file:///app/dist/audit/writer.js', 'file:///app/dist/heap.js']);
  });

  it('refuses a module the build did not write, and an import of the sources it could not point', () => {
    expect(() => importsFromDist(compiled, dist, (url) => !url.href.endsWith('heap.js'))).toThrow(/imports src\/heap\.js, which npm run build did not write to dist/);
    expect(() => importsFromDist(`${compiled}\nconst late = await import('../../src/log.js');`, dist, () => true)).toThrow(/still imports the sources/);
  });
});
