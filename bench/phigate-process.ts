/**
 * How bench/run.ts starts the phigate target: as the image runs the gateway (compiled JavaScript,
 * src/heap.ts's flags and environment), and with --phigate-variants once per set of extra settings.
 */

/** One phigate process of --phigate-variants: node flags and environment added to the image's. */
export interface PhigateVariant {
  readonly label: string;
  readonly flags?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
}

const EXAMPLE = `'[{"label":"head"},{"label":"no-maglev","flags":["--no-maglev"],"env":{"MALLOC_ARENA_MAX":"4"}}]'`;

/** --phigate-variants' JSON: a non-empty array of distinct labels, each with optional flags and env. */
export function phigateVariants(json: string): PhigateVariant[] {
  const bad = (why: string) => new Error(`--phigate-variants: ${why}; expected e.g. ${EXAMPLE}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    throw bad('not JSON');
  }
  if (!Array.isArray(parsed) || parsed.length === 0) throw bad('not a non-empty array');
  const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
  const variants = parsed.map((v: unknown): PhigateVariant => {
    const o = (typeof v === 'object' && v !== null ? v : {}) as { label?: unknown; flags?: unknown; env?: unknown };
    if (typeof o.label !== 'string' || o.label === '') throw bad('an entry without a label');
    if (o.flags !== undefined && !strings(o.flags)) throw bad(`${o.label}: flags must be strings`);
    if (o.env !== undefined && (typeof o.env !== 'object' || o.env === null || Array.isArray(o.env) || !strings(Object.values(o.env)))) {
      throw bad(`${o.label}: env must map names to strings`);
    }
    return { label: o.label, ...(o.flags ? { flags: o.flags } : {}), ...(o.env ? { env: o.env as Record<string, string> } : {}) };
  });
  if (new Set(variants.map((v) => v.label)).size !== variants.length) throw bad('labels must differ');
  return variants;
}

/**
 * The compiled target's imports of the sources (`'../../src/x.js'`, as tsc writes them from
 * bench/targets/) pointed at the same modules in `dist` (a file URL ending in `/`), the
 * compiled gateway the image runs. Refuses a module `dist` lacks and any import of the sources left.
 */
export function importsFromDist(js: string, dist: string, exists: (url: URL) => boolean): string {
  const out = js.replace(/(from\s+)'\.\.\/\.\.\/src\/([^']+)'/g, (_, from: string, module: string) => {
    const url = new URL(module, dist);
    if (!exists(url)) throw new Error(`the phigate target imports src/${module}, which npm run build did not write to dist/`);
    return `${from}'${url.href}'`;
  });
  if (/['"][./]*\/src\//.test(out)) throw new Error('the compiled phigate target still imports the sources');
  return out;
}
