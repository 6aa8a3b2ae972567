import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyConfiguredThresholds, reportAlertThresholds } from '../../../src/audit/alert-thresholds.ts';
import { AlertsCommandError, runAlerts } from '../../../src/cli/alerts.ts';
import { ALERT_BOUNDS, ALERT_DEFAULTS, ConfigError, loadConfig } from '../../../src/config.ts';
import { readAlertSettings, writeAlertSettings } from '../../../src/db/alert-settings.ts';
import { createLogger } from '../../../src/log.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../../support/db.ts';

// The alert sweep's thresholds are one row the database owner holds (phigate.alert_settings,
// schema/migrations/046_alert_thresholds_owned.sql): the app role reads it, changes nothing and
// passes no threshold of its own to the sweep. The row refuses every value src/config.ts refuses
// for the matching setting: each value around a bound is put to both sides, whose verdicts must
// agree whichever side changes.

let db: TestDatabase;
let app: pg.Client;
beforeAll(async () => {
  db = await createTestDatabase();
  app = new pg.Client({ connectionString: db.directAppUrl });
  await app.connect();
});
afterAll(async () => {
  await app?.end();
  await db?.drop();
});

const admin = <T>(fn: (c: pg.Client) => Promise<T>) => withClient(db.adminUrl, fn);

/** The SQLSTATE `sql` raises on `c`, or null when it ran; rolled back either way. */
async function refusal(c: pg.Client, sql: string, params: unknown[] = [], setup?: string): Promise<string | null> {
  await c.query('BEGIN');
  try {
    if (setup) await c.query(setup);
    await c.query(sql, params);
    return null;
  } catch (e) {
    return (e as pg.DatabaseError).code ?? 'no code';
  } finally {
    await c.query('ROLLBACK');
  }
}

describe('the alert thresholds belong to the database owner', () => {
  it('start as ALERT_DEFAULTS, the values the gateway used when nothing was set', async () => {
    expect(await readAlertSettings(app)).toMatchObject(ALERT_DEFAULTS);
  });

  it('the app role reads them and can change none of them, nor pass its own to a sweep', async () => {
    for (const sql of [
      'UPDATE phigate.alert_settings SET bulk_patients_per_minute = 1000000',
      `INSERT INTO phigate.alert_settings (id, bulk_patients_per_minute, denied_fields_per_minute, day_start, day_end, time_zone) VALUES (false, 1000000, 1000000, '00:00', '24:00', 'UTC')`,
      'DELETE FROM phigate.alert_settings',
      'TRUNCATE phigate.alert_settings',
      `SELECT * FROM phigate.sweep_alerts(1000000, 1000000, '00:00', '24:00', 'UTC', 0)`,
      `SELECT * FROM phigate.sweep_alerts_unchecked(1000000, 1000000, '00:00', '24:00', 'UTC', 0)`,
      `SELECT phigate.alert_thresholds_problem(1, 1, '00:00', '24:00', 'UTC')`,
    ]) {
      expect(await refusal(app, sql), sql).toBe('42501');
    }
    expect(await refusal(app, 'SELECT * FROM phigate.sweep_alerts()')).toBeNull();
    const grants = await admin(async (c) =>
      (
        await c.query(`SELECT r AS role,
                              has_table_privilege(r, 'phigate.alert_settings', 'SELECT') AS read,
                              has_table_privilege(r, 'phigate.alert_settings', 'INSERT, UPDATE, DELETE, TRUNCATE') AS write,
                              has_function_privilege(r, 'phigate.sweep_alerts()', 'EXECUTE') AS sweep,
                              has_function_privilege(r, 'phigate.sweep_alerts(integer, integer, time, time, text, integer)', 'EXECUTE') AS with_thresholds,
                              has_function_privilege(r, 'phigate.sweep_alerts_unchecked(integer, integer, time, time, text, integer)', 'EXECUTE') AS unchecked
                       FROM unnest(ARRAY['public', 'phigate_app', 'phigate_auditor', 'phigate_analytics']) r ORDER BY r`)
      ).rows,
    );
    const none = { write: false, with_thresholds: false, unchecked: false };
    expect(grants).toEqual([
      { role: 'phigate_analytics', read: false, sweep: false, ...none },
      { role: 'phigate_app', read: true, sweep: true, ...none },
      { role: 'phigate_auditor', read: true, sweep: false, ...none },
      { role: 'public', read: false, sweep: false, ...none },
    ]);
  });

  it('the app role\'s sweep alerts past the owner\'s thresholds and not at them', async () => {
    const actor = `reg-${randomUUID()}`;
    // Both batches in one minute, whichever minute the sweeps run in.
    const minute = new Date(Math.floor(Date.now() / 60_000) * 60_000);
    const reads = (patients: number) =>
      admin((c) =>
        c.query(
          `INSERT INTO phigate.audit_records (occurred_at, request_id, actor, actor_kind, role, purpose, patient_id, actions, type_names, fields, record_ids, details)
           SELECT $3, 'r-' || g, $1, 'user', 'registrar', 'healthcare_operations', gen_random_uuid(), '{read}', '{Patient}', '{mrn}', '{NULL}', '{NULL}'
           FROM generate_series(1, $2) g`,
          [actor, patients, minute],
        ),
      );
    const sweep = async () => (await app.query('SELECT kind, actor, observed FROM phigate.sweep_alerts()')).rows.filter((r) => r.actor === actor);
    await admin((c) => writeAlertSettings(c, { bulkPatientsPerMinute: 3, dayStart: '00:00', dayEnd: '24:00' }));
    try {
      await reads(3);
      expect(await sweep()).toEqual([]);
      await reads(1);
      expect(await sweep()).toEqual([{ kind: 'bulk_read', actor, observed: 4 }]);
    } finally {
      await admin((c) => writeAlertSettings(c, ALERT_DEFAULTS));
    }
  });
});

function configAccepts(name: string, value: string): boolean {
  try {
    loadConfig({ [name]: value }, '/srv');
    return true;
  } catch (e) {
    if (e instanceof ConfigError && e.variable === name) return false;
    throw e;
  }
}

interface Case {
  readonly setting: string;
  readonly value: string;
  /** The columns of phigate.alert_settings the setting's value becomes. */
  readonly columns: Readonly<Record<string, string | number>>;
}

/** Asserts the configuration and the owner's row agree on each case, and that the cases hold at least one of each verdict. */
async function agree(cases: readonly Case[]): Promise<void> {
  const verdicts = new Set<boolean>();
  await admin(async (c) => {
    for (const k of cases) {
      const accepted = configAccepts(k.setting, k.value);
      verdicts.add(accepted);
      const names = Object.keys(k.columns);
      const sql = `UPDATE phigate.alert_settings SET ${names.map((n, i) => `${n} = $${i + 1}`).join(', ')}`;
      expect(await refusal(c, sql, Object.values(k.columns), 'SET LOCAL ROLE phigate_owner'), `${k.setting}=${k.value}`).toBe(accepted ? null : 'PH400');
    }
  });
  expect(verdicts).toEqual(new Set([true, false]));
}

describe('the owner\'s row refuses what the configuration refuses', () => {
  it('takes each threshold at its bounds and refuses one past them', async () => {
    for (const [setting, column, { min, max }] of [
      ['PHIGATE_ALERT_BULK_PATIENTS_PER_MINUTE', 'bulk_patients_per_minute', ALERT_BOUNDS.bulkPatientsPerMinute],
      ['PHIGATE_ALERT_DENIED_FIELDS_PER_MINUTE', 'denied_fields_per_minute', ALERT_BOUNDS.deniedFieldsPerMinute],
    ] as const) {
      await agree([min - 1, min, max, max + 1].map((v) => ({ setting, value: String(v), columns: { [column]: v } })));
      expect([configAccepts(setting, String(min)), configAccepts(setting, String(max))], setting).toEqual([true, true]);
    }
  });

  it('takes working hours as the configuration does: whole minutes, two different times, the start before 24:00', async () => {
    const setting = 'PHIGATE_ALERT_WORKING_HOURS';
    await agree(
      ['00:00-24:00', '23:59-00:00', '22:00-06:00', '06:00-20:00', '24:00-06:00', '06:00-06:00', '00:00-00:00', '06:00:30-20:00', '06:00-20:00:30'].map(
        (value) => {
          const [start, end] = value.split('-') as [string, string];
          return { setting, value, columns: { day_start: start, day_end: end } };
        },
      ),
    );
  });

  it('takes a time zone the configuration takes, in any case, and refuses one PostgreSQL would read as an offset', async () => {
    const setting = 'PHIGATE_ALERT_TIME_ZONE';
    await agree(
      ['UTC', 'utc', 'America/New_York', 'america/new_york', 'Asia/Kolkata', 'US/Eastern', 'Etc/GMT+5', 'Mars/Olympus', 'UTC+5', '<+05>-5', 'PST8'].map(
        (value) => ({ setting, value, columns: { time_zone: value } }),
      ),
    );
  });

  it('refuses NULL for every threshold, and removing the row', async () => {
    await admin(async (c) => {
      for (const column of ['bulk_patients_per_minute', 'denied_fields_per_minute', 'day_start', 'day_end', 'time_zone']) {
        expect(await refusal(c, `UPDATE phigate.alert_settings SET ${column} = NULL`, [], 'SET LOCAL ROLE phigate_owner'), column).toBe('PH400');
      }
      for (const sql of ['DELETE FROM phigate.alert_settings', 'TRUNCATE phigate.alert_settings']) {
        expect(await refusal(c, sql, [], 'SET LOCAL ROLE phigate_owner'), sql).toBe('PH400');
      }
      expect(await refusal(c, `INSERT INTO phigate.alert_settings (id, bulk_patients_per_minute, denied_fields_per_minute, day_start, day_end, time_zone) VALUES (false, 5, 5, '06:00', '20:00', 'UTC')`, [], 'SET LOCAL ROLE phigate_owner')).toBe('23514');
    });
  });
});

describe('changing the thresholds', () => {
  const settingEvents = () =>
    admin(async (c) => (await c.query(`SELECT actor, actor_kind, action, field, detail FROM phigate.audit_events WHERE type_name = 'AlertSettings' ORDER BY id`)).rows);

  it('records each change as an audit event, and nothing when nothing changes', async () => {
    const before = await settingEvents();
    const user = (await admin((c) => c.query<{ u: string }>('SELECT session_user AS u'))).rows[0]!.u;
    await admin((c) => writeAlertSettings(c, { bulkPatientsPerMinute: 75, dayStart: '07:00', dayEnd: '24:00', timeZone: 'America/Chicago' }));
    await admin((c) => writeAlertSettings(c, { bulkPatientsPerMinute: 75 }));
    expect((await settingEvents()).slice(before.length)).toEqual([
      { actor: user, actor_kind: 'system', action: 'update', field: 'bulk_patients_per_minute', detail: '75' },
      { actor: user, actor_kind: 'system', action: 'update', field: 'working_hours', detail: '07:00-24:00' },
      { actor: user, actor_kind: 'system', action: 'update', field: 'time_zone', detail: null },
    ]);
    expect(await readAlertSettings(app)).toMatchObject({ ...ALERT_DEFAULTS, bulkPatientsPerMinute: 75, dayStart: '07:00', dayEnd: '24:00', timeZone: 'America/Chicago', changedBy: user });
    await admin((c) => writeAlertSettings(c, ALERT_DEFAULTS));
  });

  it('`phigate migrate` writes the thresholds of its environment, and reports what it changed', async () => {
    const lines: string[] = [];
    await applyConfiguredThresholds(db.adminUrl, loadConfig({ PHIGATE_ALERT_DENIED_FIELDS_PER_MINUTE: '9' }, '/srv').alertSweep.thresholds, (l) => lines.push(l));
    await applyConfiguredThresholds(db.adminUrl, loadConfig({ PHIGATE_ALERT_DENIED_FIELDS_PER_MINUTE: '9' }, '/srv').alertSweep.thresholds, (l) => lines.push(l));
    expect(lines).toEqual(['alert threshold PHIGATE_ALERT_DENIED_FIELDS_PER_MINUTE: 20 -> 9']);
    expect(await readAlertSettings(app)).toMatchObject({ ...ALERT_DEFAULTS, deniedFieldsPerMinute: 9 });
    await admin((c) => writeAlertSettings(c, ALERT_DEFAULTS));
  });

  it("`phigate migrate` leaves a threshold changed with `phigate alerts thresholds` as it is while its environment's value is the one it applied last; a new value in the environment is written", async () => {
    const lines: string[] = [];
    const migrateWith = (bulk: string | undefined) =>
      applyConfiguredThresholds(db.adminUrl, loadConfig(bulk === undefined ? {} : { PHIGATE_ALERT_BULK_PATIENTS_PER_MINUTE: bulk }, '/srv').alertSweep.thresholds, (l) => lines.push(l));
    const bulk = async () => (await readAlertSettings(app)).bulkPatientsPerMinute;
    await migrateWith('80');
    expect(await bulk()).toBe(80);
    await admin((c) => writeAlertSettings(c, { bulkPatientsPerMinute: 120 }));
    await migrateWith('80');
    expect(await bulk()).toBe(120);
    await migrateWith('90');
    expect(await bulk()).toBe(90);
    // Unset, then set again to the value last applied: a new decision, written.
    await admin((c) => writeAlertSettings(c, { bulkPatientsPerMinute: 130 }));
    await migrateWith(undefined);
    expect(await bulk()).toBe(130);
    await migrateWith('90');
    expect(await bulk()).toBe(90);
    expect(lines).toEqual([
      'alert threshold PHIGATE_ALERT_BULK_PATIENTS_PER_MINUTE: 50 -> 80',
      'alert threshold PHIGATE_ALERT_BULK_PATIENTS_PER_MINUTE: 120 kept; the setting (80) is the one migrate applied last, and the threshold was changed since (phigate alerts thresholds)',
      'alert threshold PHIGATE_ALERT_BULK_PATIENTS_PER_MINUTE: 120 -> 90',
      'alert threshold PHIGATE_ALERT_BULK_PATIENTS_PER_MINUTE: 130 -> 90',
    ]);
    await admin((c) => writeAlertSettings(c, ALERT_DEFAULTS));
  });

  it('`phigate alerts thresholds` sets them as the owner, refusing a bad option by its name before the database', async () => {
    const config = loadConfig({ DATABASE_URL: db.directAppUrl, PHIGATE_MIGRATE_URL: db.adminUrl }, '/srv');
    const out: string[] = [];
    const err: string[] = [];
    const run = (v: Record<string, string>) => runAlerts(['thresholds'], v, config, (s) => out.push(s), (s) => err.push(s));
    await expect(run({ 'bulk-patients': '0' })).rejects.toThrow(new AlertsCommandError('--bulk-patients: must be between 1 and 1000000'));
    await expect(run({ 'time-zone': 'UTC+5' })).rejects.toThrow(AlertsCommandError);
    await expect(run({ 'working-hours': '9-17' })).rejects.toThrow(/^--working-hours: must be two times/);
    expect(await run({ 'bulk-patients': '120', 'time-zone': 'Europe/Paris' })).toBe(0);
    expect(err).toEqual(['--bulk-patients: 50 -> 120', '--time-zone: UTC -> Europe/Paris']);
    expect(out[0]).toBe('--bulk-patients 120 --denied-fields 20 --working-hours 06:00-20:00 --time-zone Europe/Paris');
    expect(await run({})).toBe(0);
    expect(out[2]).toBe(out[0]);
    expect(await readAlertSettings(app)).toMatchObject({ bulkPatientsPerMinute: 120, timeZone: 'Europe/Paris' });
    await admin((c) => writeAlertSettings(c, ALERT_DEFAULTS));
  });
});

describe('a gateway at start-up', () => {
  const report = async (env: Record<string, string>) => {
    const lines: Record<string, any>[] = [];
    const sink = new Writable({ write: (chunk, _e, done) => (lines.push(JSON.parse(String(chunk))), done()) });
    await reportAlertThresholds(app, loadConfig(env, '/srv').alertSweep.thresholds, createLogger('info', sink));
    return lines;
  };

  it('logs the database\'s thresholds, and warns for each of its settings that disagrees with them', async () => {
    const agreeing = await report({ PHIGATE_ALERT_BULK_PATIENTS_PER_MINUTE: '50', PHIGATE_ALERT_TIME_ZONE: 'utc' });
    expect(agreeing).toEqual([expect.objectContaining({ level: 30, bulkPatientsPerMinute: 50, deniedFieldsPerMinute: 20, workingHours: '06:00-20:00', timeZone: 'UTC' })]);
    const disagreeing = await report({ PHIGATE_ALERT_BULK_PATIENTS_PER_MINUTE: '500', PHIGATE_ALERT_WORKING_HOURS: '00:00-24:00', PHIGATE_ALERT_DENIED_FIELDS_PER_MINUTE: '20' });
    expect(disagreeing.filter((l) => l.level === 40)).toEqual([
      expect.objectContaining({ variable: 'PHIGATE_ALERT_BULK_PATIENTS_PER_MINUTE', configured: 500, database: 50 }),
      expect.objectContaining({ variable: 'PHIGATE_ALERT_WORKING_HOURS', configured: '00:00-24:00', database: '06:00-20:00' }),
    ]);
  });
});
