import type { Logger, RequestLog } from '../log.ts';
import { outboundRequest } from '../net/outbound-request.ts';

/**
 * Something a person must look at soon: a break-glass grant, bulk reads, reads outside working
 * hours, denied-field spikes (alert-sweep.ts). Ids and codes only, never a value: the alert leaves the gateway for a
 * pager or a chat room.
 */
export interface Alert {
  readonly kind: string;
  readonly severity: 'high' | 'medium';
  /** The request that raised it; null for alerts computed from the audit trail afterwards. */
  readonly requestId: string | null;
  readonly actor: string;
  readonly actorKind?: string;
  readonly patientId: string | null;
  readonly grantId: string | null;
  readonly expiresAt: string | null;
  /** For a threshold crossed (bulk reads, denied fields, off hours): the window and what was counted in it. */
  readonly windowStart?: string;
  readonly observed?: number;
}

export interface AlertStats {
  readonly sent: number;
  /** Alerts whose webhook delivery failed after every attempt (each also logged). */
  readonly failed: number;
}

export interface Alerts {
  /**
   * Logs at once through `log`, which names who raised it (the request, or the sweep's task: a
   * line no request owns names its task, README "Logs"), and delivers in the background (whose
   * lines belong to no request): it never waits, never throws, never blocks care.
   */
  send(alert: Alert, log: RequestLog): void;
  readonly stats: AlertStats;
  /** Resolves when every delivery under way has finished (shutdown, tests). */
  settled(): Promise<void>;
}

export interface AlertOptions {
  readonly webhookUrl: string | null;
  readonly logger: Logger;
  readonly attempts?: number;
  readonly firstBackoffMs?: number;
  readonly timeoutMs?: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms).unref());

export function createAlerts({ webhookUrl, logger, attempts = 4, firstBackoffMs = 500, timeoutMs = 5_000 }: AlertOptions): Alerts {
  const stats = { sent: 0, failed: 0 };
  const underWay = new Set<Promise<void>>();

  async function deliver(url: string, alert: Alert): Promise<void> {
    const body = JSON.stringify({ ...alert, at: new Date().toISOString(), source: 'phigate' });
    for (let attempt = 1; attempt <= attempts; attempt++) {
      try {
        const res = await outboundRequest(new URL(url), { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(timeoutMs), readBody: false });
        if (res.status >= 200 && res.status < 300) {
          stats.sent++;
          return;
        }
        logger.warn({ task: 'alert-webhook', alert: alert.kind, attempt, status: res.status }, 'alert webhook refused the alert');
      } catch (err) {
        logger.warn({ task: 'alert-webhook', alert: alert.kind, attempt, err: { name: (err as Error).name, code: (err as { code?: unknown }).code } }, 'alert webhook unreachable');
      }
      if (attempt < attempts) await sleep(firstBackoffMs * 2 ** (attempt - 1));
    }
    stats.failed++;
    logger.error({ task: 'alert-webhook', alert: alert.kind, grantId: alert.grantId, attempts }, 'alert could not be delivered to the webhook');
  }

  return {
    send(alert, log) {
      log.warn(
        { alert: alert.kind, severity: alert.severity, actor: alert.actor, actorKind: alert.actorKind, patientId: alert.patientId, grantId: alert.grantId, expiresAt: alert.expiresAt, windowStart: alert.windowStart, observed: alert.observed },
        'alert',
      );
      if (webhookUrl === null) return;
      const delivery = deliver(webhookUrl, alert).finally(() => underWay.delete(delivery));
      underWay.add(delivery);
    },
    stats,
    async settled() {
      await Promise.all([...underWay]);
    },
  };
}
