import { defineConfig } from 'vitest/config';
import base from './vitest.config.ts';

// `npm run console:screenshots`: the README's pictures of the console, taken in headless Chromium
// against a seeded test gateway. Not part of `npm test`: it writes files into docs/.
export default defineConfig({ ...base, test: { ...base.test, include: ['test/e2e/*.screenshots.ts'], testTimeout: 120_000 } });
