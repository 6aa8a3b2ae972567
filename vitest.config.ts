import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Resolve `graphql` the way Node does (its CommonJS main), as Pothos and Yoga do when loaded by
  // Node; Vite would otherwise pick the `.mjs` build and the schema would mix two graphql realms.
  resolve: { alias: [{ find: /^graphql$/, replacement: 'graphql/index.js' }] },
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    // Test files mostly wait (PostgreSQL, child processes, HTTP, timers), each in a database of its
    // own: vitest's default of one worker per core minus one ran them one at a time on 2 cores.
    maxWorkers: availableParallelism() + 1,
    // Bounds on a hang, not on speed (no test asserts them): CI's 2 cores run three files at once
    // beside other work, where a file's gateways, seeding and child processes take several times
    // what they take on a quiet machine, and a bound that a slow but healthy run meets is a flake.
    testTimeout: 60_000,
    hookTimeout: 180_000,
    // A worker's exit waits for its file's pools and servers to close; past this vitest only logs.
    teardownTimeout: 60_000,
  },
});
