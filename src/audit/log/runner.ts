import type { AuditLogSettings } from '../../config.ts';
import type { Pool } from '../../db/pool.ts';
import type { Logger } from '../../log.ts';
import { deliver } from '../sink/deliver.ts';
import type { Sink } from '../sink/sink.ts';
import type { NoteSigner } from './note.ts';
import { checkpoint, sealAll } from './seal.ts';

/**
 * What each gateway runs beside its requests: every `sealMs`, seal what has committed, sign a
 * checkpoint when one is due, and deliver to the sinks. Every step is shared by the replicas
 * through the database (whoever holds a lock does the work), so a replica may stop at any time.
 * At shutdown one last round seals everything sealable, signs it whatever the policy, and
 * delivers it.
 */
export interface LogRunner {
  /** One round now (the one under way, if any, is waited for first). */
  round(final?: boolean): Promise<RoundResult>;
  /** Stops the timer, then one final round. */
  stop(): Promise<void>;
}

export interface RoundResult {
  readonly sealed: number;
  readonly checkpoint: number | null;
  readonly delivered: readonly (number | null)[];
}

export interface LogRunnerOptions {
  /** Not the request pool: the audit writer's or one of its own. */
  readonly pool: Pool;
  readonly signer: NoteSigner;
  readonly settings: AuditLogSettings;
  readonly sinks: readonly Sink[];
  readonly logger: Logger;
  /** Start the timer (the CLI's single round does not). */
  readonly timer?: boolean;
}

export function createLogRunner(opts: LogRunnerOptions): LogRunner {
  const { pool, signer, settings, sinks, logger } = opts;
  let running: Promise<RoundResult> = Promise.resolve({ sealed: 0, checkpoint: null, delivered: [] });

  // Each step on its own: a KMS that cannot sign right now must not hold back sealing, nor a
  // sink the delivery of what is already signed. The first failure is reported after all ran.
  async function once(final: boolean): Promise<RoundResult> {
    let failure: unknown = null;
    const step = async <T>(fn: () => Promise<T>, fallback: T): Promise<T> => {
      try {
        return await fn();
      } catch (err) {
        failure ??= err;
        return fallback;
      }
    };
    const sealed = await step(() => sealAll(pool, settings.sealBatch), 0);
    const policy = { seconds: settings.checkpointSeconds, events: settings.checkpointEvents, force: final };
    const cp = await step(() => checkpoint(pool, signer, policy), { signed: false } as const);
    const delivered: (number | null)[] = [];
    for (const sink of sinks) delivered.push(await step(() => deliver(pool, sink, settings.sealBatch), null));
    if (failure !== null) throw failure;
    return { sealed, checkpoint: cp.signed ? cp.size : null, delivered };
  }

  const round = (final = false): Promise<RoundResult> => {
    running = running.catch(() => undefined).then(() => once(final));
    return running;
  };

  let timer: NodeJS.Timeout | null = null;
  if (opts.timer !== false) {
    timer = setInterval(() => {
      round().catch((err: Error & { code?: string }) =>
        logger.warn({ task: 'audit-log', err: { name: err.name, code: err.code } }, 'audit log round failed; the next one catches up'),
      );
    }, settings.sealMs);
    timer.unref();
  }

  return {
    round,
    async stop() {
      if (timer !== null) clearInterval(timer);
      const r = await round(true);
      logger.info({ task: 'audit-log', sealed: r.sealed, checkpoint: r.checkpoint }, 'audit log sealed and signed at shutdown');
    },
  };
}
