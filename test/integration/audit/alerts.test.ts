import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAlertSweeper } from '../../../src/audit/alert-sweep.ts';
import { createAlerts, type Alert, type Alerts } from '../../../src/audit/alerts.ts';
import type { AlertThresholds } from '../../../src/config.ts';
import { writeAlertSettings } from '../../../src/db/alert-settings.ts';
import { createLogger, type Logger } from '../../../src/log.ts';
import { startTestGateway, type TestGateway } from '../../support/gateway.ts';
import { inOneWindow, localDay, MINUTE } from '../../support/one-window.ts';
import { startWebhookReceiver, type WebhookReceiver } from '../../support/webhook.ts';

// Alerts swept from the audit trail by PostgreSQL, on a real gateway and a second replica of it:
// each fires once past its threshold and not at it, as an audit event, a webhook POST and a log line.
// The thresholds are the database owner's (phigate.alert_settings, migration 046), set here as the
// owner; a replica's sweep passes none.

const READ = `query($id: ID!) { patient(id: $id) { id givenName } }`;
const READ_SSN = `query($id: ID!) { patient(id: $id) { id ssn } }`;

const RULES: AlertThresholds = {
  bulkPatientsPerMinute: 3,
  deniedFieldsPerMinute: 4,
  dayStart: '00:00',
  dayEnd: '24:00',
  timeZone: 'UTC',
};

let gw: TestGateway;
let replica: TestGateway;
let webhook: WebhookReceiver;
let alerts: Alerts;
let logger: Logger;
const logLines: Record<string, any>[] = [];

beforeAll(async () => {
  webhook = await startWebhookReceiver();
  const sink = new Writable({ write: (chunk, _e, done) => (logLines.push(JSON.parse(String(chunk))), done()) });
  logger = createLogger('info', sink);
  alerts = createAlerts({ webhookUrl: webhook.url, logger });
  // The gateways' own timers never fire here: the tests sweep when they choose.
  gw = await startTestGateway({ patients: 24, gatewayOptions: { alertSweepSeconds: 3600 } });
  replica = await startTestGateway({ replicaOf: gw, gatewayOptions: { alertSweepSeconds: 3600 } });
});
afterAll(async () => {
  await replica?.close();
  await gw?.close();
  await webhook?.close();
});

const sweeper = (pool = gw.pool) => createAlertSweeper({ pool, sweepSeconds: 3600, alerts, logger });
/** One sweep by `pool`'s gateway, after the owner set the thresholds to RULES and `rules`. */
async function sweep(rules: Partial<AlertThresholds> = {}, pool = gw.pool) {
  await gw.admin((c) => writeAlertSettings(c, { ...RULES, ...rules }));
  const s = sweeper(pool);
  try {
    return await s.sweep();
  } finally {
    await s.stop();
  }
}
const alertRows = (actor: string) => gw.auditRows("action = 'alert' AND actor = $1", [actor]);
/** This test's own alerts: a run that straddled a minute, run again as another actor, may leave some of its own. */
const mine = (raised: readonly Alert[], actor: string) => raised.filter((a) => a.actor === actor);

/**
 * The alerts of `actors`' last one (this attempt's actor), once it is checked that the sweep raised
 * none for anyone outside `actors` (every attempt's actor of this test: a straddled attempt may
 * leave an alert of its own for a later sweep to raise).
 */
function onlyOf(actors: readonly string[], raised: readonly Alert[]): Alert[] {
  expect(raised.filter((a) => !actors.includes(a.actor))).toEqual([]);
  return mine(raised, actors.at(-1)!);
}

/**
 * Counting windows are the database clock's minutes (audit rows' occurred_at): a test whose reads
 * straddled two is run again, as a fresh actor so that the first run's counts and alerts are not its.
 */
const inOneMinute = <T>(attempt: () => Promise<T>): Promise<T> => inOneWindow(gw.db.adminUrl, MINUTE, attempt);

/** A member of `clinic` with `role` whom no other test or attempt reads as. */
async function freshActor(role: string, clinic: string): Promise<{ actor: string; token: string }> {
  const actor = `${role}-${randomBytes(4).toString('hex')}`;
  return { actor, token: await gw.tokenFor(actor, { roles: [role], clinics: [clinic] }) };
}

describe('alerts', () => {
  it('bulk reads: more than N distinct patients per actor and minute, counted across replicas, fire once', async () => {
    const clinic = gw.data.clinics[0]!.id;
    const patients = gw.data.patients.filter((p) => p.clinicId === clinic);
    const actors: string[] = [];
    await inOneMinute(async () => {
      const { actor, token } = await freshActor('registrar', clinic);
      actors.push(actor);
      // Three patients, one of them twice, through both replicas: at the threshold, no alert.
      await gw.gql(token, READ, { id: patients[0]!.id });
      await replica.gql(token, READ, { id: patients[1]!.id });
      await gw.gql(token, READ, { id: patients[1]!.id });
      await replica.gql(token, READ, { id: patients[2]!.id });
      expect(onlyOf(actors, await sweep())).toEqual([]);
      expect(await alertRows(actor)).toEqual([]);
      // A fourth patient: past it.
      await replica.gql(token, READ, { id: patients[3]!.id });
      const raised = onlyOf(actors, await sweep());
      expect(raised).toEqual([expect.objectContaining({ kind: 'bulk_read', severity: 'high', actor, actorKind: 'user', observed: 4 })]);
      // A fifth in the same minute: still the one alert.
      await gw.gql(token, READ, { id: patients[4]!.id });
      expect(onlyOf(actors, await sweep())).toEqual([]);
      expect(await alertRows(actor)).toEqual([
        expect.objectContaining({ action: 'alert', actor_kind: 'user', type_name: 'Alert', detail: 'bulk_read:4', patient_id: null }),
      ]);
      await alerts.settled();
      expect(webhook.received.filter((a) => a.actor === actor)).toEqual([expect.objectContaining({ kind: 'bulk_read', observed: 4, source: 'phigate' })]);
      expect(logLines.filter((l) => l.msg === 'alert' && l.actor === actor)).toEqual([expect.objectContaining({ alert: 'bulk_read', severity: 'high', observed: 4, task: 'alert-sweep' })]);
    });
  }, 60_000);

  it('denied fields: more than N per actor and minute fire once', async () => {
    const clinic = gw.data.clinics[1]!.id;
    const patients = gw.data.patients.filter((p) => p.clinicId === clinic && p.ssn);
    const actors: string[] = [];
    await inOneMinute(async () => {
      const { actor, token } = await freshActor('billing', clinic);
      actors.push(actor);
      for (const p of patients.slice(0, 4)) await gw.gql(token, READ_SSN, { id: p.id });
      expect(onlyOf(actors, await sweep())).toEqual([]);
      await replica.gql(token, READ_SSN, { id: patients[4]!.id });
      expect(onlyOf(actors, await sweep())).toEqual([expect.objectContaining({ kind: 'denied_spike', severity: 'medium', actor, observed: 5 })]);
      await gw.gql(token, READ_SSN, { id: patients[5]!.id });
      expect(onlyOf(actors, await sweep())).toEqual([]);
      expect((await alertRows(actor)).map((r) => r.detail)).toEqual(['denied_spike:5']);
    });
  }, 60_000);

  it('reads outside working hours in the configured time zone fire once per actor and local day', async () => {
    const clinic = gw.data.clinics[2]!.id;
    const patient = gw.data.patients.find((p) => p.clinicId === clinic)!;
    // Asia/Tokyo: UTC+9, no daylight saving. Its local day is the alert's window: a run across its
    // midnight would rightly fire a second alert for the new day.
    await inOneWindow(gw.db.adminUrl, localDay('Asia/Tokyo'), async () => {
      const { actor, token } = await freshActor('registrar', clinic);
      // Working hours around the local hour now by the database clock, and apart from it: a run
      // that crosses one hour stays inside `around` and outside `apart`.
      const tokyoHour = await gw.admin(async (c) => (await c.query<{ h: number }>(`SELECT extract(hour FROM clock_timestamp() AT TIME ZONE 'Asia/Tokyo')::int AS h`)).rows[0]!.h);
      const hh = (h: number) => `${String(((h % 24) + 24) % 24).padStart(2, '0')}:00`;
      const around = { timeZone: 'Asia/Tokyo', dayStart: hh(tokyoHour - 1), dayEnd: hh(tokyoHour + 2) };
      const apart = { timeZone: 'Asia/Tokyo', dayStart: hh(tokyoHour + 2), dayEnd: hh(tokyoHour + 4) };
      await gw.gql(token, READ, { id: patient.id });
      expect(mine(await sweep(around), actor)).toEqual([]);
      await gw.gql(token, READ, { id: patient.id });
      expect(mine(await sweep(apart), actor)).toEqual([expect.objectContaining({ kind: 'off_hours', actor, observed: 1 })]);
      await gw.gql(token, READ, { id: patient.id });
      expect(mine(await sweep(apart), actor)).toEqual([]);
      expect((await alertRows(actor)).map((r) => r.detail)).toEqual(['off_hours:1']);
    });
  });

  it('two replicas sweeping at once raise an alert once', async () => {
    const clinic = gw.data.clinics[0]!.id;
    await inOneMinute(async () => {
      const { actor, token } = await freshActor('billing', clinic);
      for (const p of gw.data.patients.filter((x) => x.clinicId === clinic).slice(0, 4)) await gw.gql(token, READ, { id: p.id });
      await gw.admin((c) => writeAlertSettings(c, RULES));
      const [a, b] = [sweeper(), sweeper(replica.pool)];
      const both = await Promise.all([a.sweep(), b.sweep(), sweep({}, replica.pool)]);
      await Promise.all([a.stop(), b.stop()]);
      const raised = mine(both.flat(), actor);
      // Whichever sweeps first raises it; one that finds the sweep locked skips it, one after finds it raised.
      expect((await alertRows(actor)).map((r) => r.detail)).toEqual(['bulk_read:4']);
      expect(raised.length).toBeLessThanOrEqual(1);
    });
  }, 60_000);
});

describe('alert thresholds held by the owner', () => {
  it('a replica sweeps with the owner\'s thresholds and follows their change at its next sweep', async () => {
    const clinic = gw.data.clinics[2]!.id;
    const patients = gw.data.patients.filter((x) => x.clinicId === clinic);
    await inOneMinute(async () => {
      const { actor, token } = await freshActor('billing', clinic);
      // Three patients through both replicas: at the bulk threshold of 3, no alert.
      for (const [i, p] of patients.slice(0, 3).entries()) await (i % 2 ? replica : gw).gql(token, READ, { id: p.id });
      expect(mine(await sweep({}, replica.pool), actor)).toEqual([]);
      // The owner lowers it to 2; one more read of a patient already counted: the same three are now past it.
      await replica.gql(token, READ, { id: patients[0]!.id });
      expect(mine(await sweep({ bulkPatientsPerMinute: 2 }, replica.pool), actor)).toEqual([expect.objectContaining({ kind: 'bulk_read', actor, observed: 3 })]);
      expect((await alertRows(actor)).map((r) => r.detail)).toEqual(['bulk_read:3']);
    });
  }, 60_000);
});
