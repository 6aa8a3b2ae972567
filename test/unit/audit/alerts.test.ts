import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createAlerts, type Alert } from '../../../src/audit/alerts.ts';
import { createLogger } from '../../../src/log.ts';

const alert: Alert = { kind: 'break_glass', severity: 'high', requestId: 'r-1', actor: 'dr-1', patientId: null, grantId: null, expiresAt: null };

async function webhook(statuses: number[]) {
  const seen: number[] = [];
  const server = createServer((req, res) => {
    req.resume();
    seen.push(Date.now());
    res.writeHead(statuses.shift() ?? 204).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, seen, close: () => new Promise((r) => server.close(r)) };
}

describe('alerts', () => {
  it('retries a refusing webhook with backoff, then delivers', async () => {
    const hook = await webhook([500, 503]);
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger('info', { write: (l: string) => void lines.push(JSON.parse(l)) });
    const alerts = createAlerts({ webhookUrl: hook.url, logger, firstBackoffMs: 20 });
    alerts.send(alert, logger);
    await alerts.settled();
    expect(hook.seen).toHaveLength(3);
    expect(hook.seen[2]! - hook.seen[1]!).toBeGreaterThanOrEqual(35);
    expect(alerts.stats).toEqual({ sent: 1, failed: 0 });
    expect(lines.filter((l) => l.msg === 'alert')).toHaveLength(1);
    await hook.close();
  });

  it('counts and logs a delivery that failed every attempt, without throwing or blocking the sender', async () => {
    const hook = await webhook([500, 500, 500]);
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger('info', { write: (l: string) => void lines.push(JSON.parse(l)) });
    const alerts = createAlerts({ webhookUrl: hook.url, logger, attempts: 3, firstBackoffMs: 5 });
    alerts.send(alert, logger);
    // send() has returned before any attempt was answered: the sender was not held for the delivery
    // (a bound in milliseconds on the call raced a loaded machine instead).
    expect(alerts.stats).toEqual({ sent: 0, failed: 0 });
    await alerts.settled();
    expect(alerts.stats).toEqual({ sent: 0, failed: 1 });
    expect(lines.some((l) => l.msg === 'alert could not be delivered to the webhook')).toBe(true);
    await hook.close();
  });

  it('still logs the alert when no webhook is configured, through the log of whoever raised it', () => {
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger('info', { write: (l: string) => void lines.push(JSON.parse(l)) });
    createAlerts({ webhookUrl: null, logger }).send(alert, logger.child({ task: 'alert-sweep' }));
    expect(lines).toEqual([expect.objectContaining({ msg: 'alert', alert: 'break_glass', severity: 'high', grantId: null, task: 'alert-sweep' })]);
  });
});
