import type { Pool } from '../db/pool.ts';
import type { Logger } from '../log.ts';
import type { Alert, Alerts } from './alerts.ts';

/**
 * Alerts computed from the audit trail: bulk reads, reads outside working hours, spikes of denied
 * fields (schema/migrations/015_compliance_views.sql, phigate.sweep_alerts, incremental since
 * 026_incremental_alert_sweep.sql), past the thresholds of phigate.alert_settings, which only the
 * database owner may change (046_alert_thresholds_owned.sql): the gateway passes none, so every
 * replica sweeps with the same rules. PostgreSQL computes them from committed rows, so every
 * replica's requests count toward one window and no request pays for them; each replica tries
 * every `sweepSeconds`, and the one that gets the sweep's row lock reads the rows the previous
 * sweep could not see, each once. Each alert is an audit event (written by the sweep itself, in the same
 * transaction that marks it raised, so it fires once), then a log line and a webhook POST.
 */
export interface AlertSweeper {
  /** One sweep now; the alerts it raised (none when another replica holds the sweep). */
  sweep(): Promise<readonly Alert[]>;
  /** Stops the timer and waits for a sweep under way. */
  stop(): Promise<void>;
}

interface RaisedRow {
  readonly kind: 'bulk_read' | 'denied_spike' | 'off_hours';
  readonly actor_kind: string;
  readonly actor: string;
  readonly window_start: Date;
  readonly observed: number;
}

const SEVERITY: Readonly<Record<RaisedRow['kind'], Alert['severity']>> = { bulk_read: 'high', denied_spike: 'medium', off_hours: 'medium' };

export function createAlertSweeper(deps: { pool: Pool; sweepSeconds: number; alerts: Alerts; logger: Logger }): AlertSweeper {
  const { pool, sweepSeconds, alerts, logger } = deps;
  const sweepLog = logger.child({ task: 'alert-sweep' });
  let running: Promise<readonly Alert[]> | null = null;

  async function sweepOnce(): Promise<readonly Alert[]> {
    const { rows } = await pool.query<RaisedRow>('SELECT * FROM phigate.sweep_alerts()');
    const raised = rows.map(
      (r): Alert => ({
        kind: r.kind,
        severity: SEVERITY[r.kind],
        requestId: null,
        actor: r.actor,
        actorKind: r.actor_kind,
        patientId: null,
        grantId: null,
        expiresAt: null,
        windowStart: r.window_start.toISOString(),
        observed: r.observed,
      }),
    );
    for (const alert of raised) alerts.send(alert, sweepLog);
    return raised;
  }

  const sweep = (): Promise<readonly Alert[]> => {
    running ??= sweepOnce().finally(() => (running = null));
    return running;
  };

  const timer = setInterval(() => {
    sweep().catch((err: Error & { code?: string }) => logger.warn({ task: 'alert-sweep', err: { name: err.name, code: err.code } }, 'alert sweep failed; the next one catches up'));
  }, sweepSeconds * 1000);
  timer.unref();

  return {
    sweep,
    async stop() {
      clearInterval(timer);
      await running?.catch(() => undefined);
    },
  };
}
