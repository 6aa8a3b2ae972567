// Which code runs: the TypeScript sources through tsx in a development checkout, the compiled
// JavaScript of `npm run build` (dist/) in production and wherever tsx is not installed (the image
// installs no development dependencies). One process either way: tsx registers in-process, so no
// launcher stands between a signal and the gateway.
import { existsSync } from 'node:fs';

// Decided once per process: an entry may load more than one module, and tsx registers once.
let sources;

async function runsSources() {
  if (sources === undefined) {
    const tsx = process.env.PHIGATE_ENV !== 'production' ? await import('tsx/esm/api').catch(() => null) : null;
    tsx?.register();
    sources = tsx !== null;
  }
  return sources;
}

export async function runEntry(name) {
  if (await runsSources()) return import(`../src/${name}.ts`);
  const compiled = new URL(`../dist/${name}.js`, import.meta.url);
  if (!existsSync(compiled)) {
    process.stderr.write(`phigate: dist/${name}.js is missing: run \`npm run build\` first (production runs the compiled JavaScript, not the sources)\n`);
    process.exit(1);
  }
  return import(compiled.href);
}
