import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALERT_BOUNDS, ALERT_DEFAULTS, ConfigError, loadConfig } from '../../../src/config.ts';
import { createTestDatabase, withClient, type TestDatabase } from '../../support/db.ts';

// phigate.sweep_alerts refuses every argument src/config.ts refuses for its setting
// (schema/migrations/042_sweep_alerts_arguments.sql), so that a stolen app credential cannot
// sweep the audit trail with rules no gateway runs. Each value around a bound is put to both
// sides: the config's verdict and the function's must agree, whichever side changes.

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

type Args = readonly [bulk: number | null, denied: number | null, start: string | null, end: string | null, zone: string | null, settle: number | null];
const SWEEP = 'SELECT * FROM phigate.sweep_alerts($1, $2, $3, $4, $5, $6)';
// What the gateway sends with the default settings (src/audit/alert-sweep.ts).
const GATEWAY: Args = [
  ALERT_DEFAULTS.bulkPatientsPerMinute,
  ALERT_DEFAULTS.deniedFieldsPerMinute,
  ALERT_DEFAULTS.dayStart,
  ALERT_DEFAULTS.dayEnd,
  ALERT_DEFAULTS.timeZone,
  0,
];
const withArg = (i: number, v: number | string | null): Args => GATEWAY.map((a, j) => (j === i ? v : a)) as unknown as Args;

/** The SQLSTATE the app role's call raises, or null when it swept; rolled back either way. */
async function refusal(args: Args, sql = SWEEP): Promise<string | null> {
  await app.query('BEGIN');
  try {
    await app.query(sql, [...args]);
    return null;
  } catch (e) {
    return (e as pg.DatabaseError).code ?? 'no code';
  } finally {
    await app.query('ROLLBACK');
  }
}

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
  readonly args: Args;
}

/** Asserts both sides agree on each case, and that the cases hold at least one of each verdict. */
async function agree(cases: readonly Case[]): Promise<void> {
  const verdicts = new Set<boolean>();
  for (const c of cases) {
    const accepted = configAccepts(c.setting, c.value);
    verdicts.add(accepted);
    expect(await refusal(c.args), `${c.setting}=${c.value}`).toBe(accepted ? null : 'PH400');
  }
  expect(verdicts).toEqual(new Set([true, false]));
}

describe('phigate.sweep_alerts refuses what the configuration refuses', () => {
  it('accepts what the gateway sends by default', async () => {
    expect(await refusal(GATEWAY)).toBeNull();
  });

  it('takes each threshold at its bounds and refuses one past them', async () => {
    for (const [setting, i, { min, max }] of [
      ['PHIGATE_ALERT_BULK_PATIENTS_PER_MINUTE', 0, ALERT_BOUNDS.bulkPatientsPerMinute],
      ['PHIGATE_ALERT_DENIED_FIELDS_PER_MINUTE', 1, ALERT_BOUNDS.deniedFieldsPerMinute],
    ] as const) {
      await agree([min - 1, min, max, max + 1].map((v) => ({ setting, value: String(v), args: withArg(i, v) })));
      expect([configAccepts(setting, String(min)), configAccepts(setting, String(max))], setting).toEqual([true, true]);
    }
  });

  it('takes working hours as the configuration does: whole minutes, two different times, the start before 24:00', async () => {
    const setting = 'PHIGATE_ALERT_WORKING_HOURS';
    await agree(
      ['00:00-24:00', '23:59-00:00', '22:00-06:00', '06:00-20:00', '24:00-06:00', '06:00-06:00', '00:00-00:00', '06:00:30-20:00', '06:00-20:00:30'].map(
        (value) => {
          const [start, end] = value.split('-') as [string, string];
          return { setting, value, args: [GATEWAY[0], GATEWAY[1], start, end, GATEWAY[4], GATEWAY[5]] };
        },
      ),
    );
  });

  it('takes a time zone the configuration takes, in any case, and refuses one PostgreSQL would read as an offset', async () => {
    const setting = 'PHIGATE_ALERT_TIME_ZONE';
    await agree(
      ['UTC', 'utc', 'America/New_York', 'america/new_york', 'Asia/Kolkata', 'US/Eastern', 'Etc/GMT+5', 'Mars/Olympus', 'UTC+5', '<+05>-5', 'PST8'].map(
        (value) => ({ setting, value, args: withArg(4, value) }),
      ),
    );
    // A zone the migration's copy lacks (a tzdata newer than it) is still found in pg_timezone_names.
    await withClient(db.adminUrl, (c) => c.query(`DELETE FROM phigate.time_zone_names WHERE name = 'asia/kolkata'`));
    expect(await refusal(withArg(4, 'Asia/Kolkata'))).toBeNull();
  });

  it('refuses NULL for every argument, and a settle time other than the 0 the gateway sends', async () => {
    for (let i = 0; i < GATEWAY.length; i++) expect(await refusal(withArg(i, null)), `argument ${i + 1}`).toBe('PH400');
    for (const settle of [-1, 1, 600]) expect(await refusal(withArg(5, settle)), `settle ${settle}`).toBe('PH400');
  });

  it('moves nothing when it refuses', async () => {
    const state = () => withClient(db.adminUrl, async (c) => (await c.query('SELECT swept_until, seen::text FROM phigate.alert_sweep')).rows);
    const before = await state();
    await expect(app.query(SWEEP, [...withArg(0, ALERT_BOUNDS.bulkPatientsPerMinute.max + 1)])).rejects.toMatchObject({ code: 'PH400' });
    expect(await state()).toEqual(before);
    await app.query(SWEEP, [...GATEWAY]);
    expect(await state()).not.toEqual(before);
  });

  it('keeps the unchecked sweep from the app role and from PUBLIC', async () => {
    expect(await refusal(withArg(0, 0), 'SELECT * FROM phigate.sweep_alerts_unchecked($1, $2, $3, $4, $5, $6)')).toBe('42501');
    const grants = await withClient(db.adminUrl, async (c) =>
      (
        await c.query(`SELECT r AS role, has_function_privilege(r, 'phigate.sweep_alerts_unchecked(integer, integer, time, time, text, integer)', 'EXECUTE') AS internal,
                              has_function_privilege(r, 'phigate.sweep_alerts(integer, integer, time, time, text, integer)', 'EXECUTE') AS wrapper
                       FROM unnest(ARRAY['public', 'phigate_app', 'phigate_auditor', 'phigate_analytics']) r ORDER BY r`)
      ).rows,
    );
    expect(grants).toEqual([
      { role: 'phigate_analytics', internal: false, wrapper: false },
      { role: 'phigate_app', internal: false, wrapper: true },
      { role: 'phigate_auditor', internal: false, wrapper: false },
      { role: 'public', internal: false, wrapper: false },
    ]);
  });
});
