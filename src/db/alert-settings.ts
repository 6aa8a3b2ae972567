import type pg from 'pg';
import type { AlertThresholds } from '../config.ts';

type Queryable = Pick<pg.ClientBase, 'query'>;

/**
 * phigate.alert_settings (schema/migrations/046_alert_thresholds_owned.sql): the alert sweep's
 * thresholds, one row that the database owner holds. Every gateway role may read it; only the
 * owner may change it, and the table's trigger refuses (SQLSTATE PH400) what the configuration
 * refuses and records each change as an audit event.
 */
export interface AlertSettings extends AlertThresholds {
  readonly changedAt: Date;
  readonly changedBy: string;
}

/** SQLSTATE of a threshold the table refuses, its message naming the column and the command's option. */
export const ALERT_SETTINGS_REFUSED_SQLSTATE = 'PH400';

const SELECT = `SELECT bulk_patients_per_minute AS "bulkPatientsPerMinute", denied_fields_per_minute AS "deniedFieldsPerMinute",
         to_char(day_start, 'HH24:MI') AS "dayStart", to_char(day_end, 'HH24:MI') AS "dayEnd", time_zone AS "timeZone",
         changed_at AS "changedAt", changed_by AS "changedBy"
  FROM phigate.alert_settings`;

export class AlertSettingsMissingError extends Error {
  readonly code = 'ALERT_SETTINGS_MISSING';
  constructor() {
    super('phigate.alert_settings holds no alert thresholds: run `npx phigate migrate` (migration 046)');
    this.name = 'AlertSettingsMissingError';
  }
}

export async function readAlertSettings(db: Queryable): Promise<AlertSettings> {
  const { rows } = await db.query<AlertSettings>(SELECT).catch((e: unknown) => {
    // undefined_table: a database not migrated this far.
    throw (e as { code?: string }).code === '42P01' ? new AlertSettingsMissingError() : e;
  });
  const row = rows[0];
  if (row === undefined) throw new AlertSettingsMissingError();
  return row;
}

/**
 * Sets the thresholds given, as phigate_owner, in one transaction of `db` (the migrator's
 * connection, outside a transaction); the others keep their values. Nothing is written, and no
 * audit event recorded, when every value given is the one held. Returns the row before and after.
 */
export async function writeAlertSettings(
  db: Queryable,
  change: Partial<AlertThresholds>,
): Promise<{ readonly before: AlertSettings; readonly after: AlertSettings }> {
  return asOwner(db, () => updateAlertSettings(db, change));
}

/**
 * `phigate migrate`'s write of its environment's thresholds (`configured`), as the owner in one
 * transaction: only those whose value differs from what migrate applied last
 * (phigate.alert_settings_from_migrate, migration 049) are written, so a change made since with
 * `phigate alerts thresholds` stands until the environment itself changes. `kept`: the thresholds
 * of the environment left unwritten for that reason.
 */
export async function writeAlertSettingsFromMigrate(
  db: Queryable,
  configured: Partial<AlertThresholds>,
): Promise<{ readonly before: AlertSettings; readonly after: AlertSettings; readonly kept: Partial<AlertThresholds> }> {
  return asOwner(db, async () => {
    const { rows } = await db.query<Partial<Record<keyof AlertThresholds, string | number | null>>>(
      `SELECT bulk_patients_per_minute AS "bulkPatientsPerMinute", denied_fields_per_minute AS "deniedFieldsPerMinute",
              to_char(day_start, 'HH24:MI') AS "dayStart", to_char(day_end, 'HH24:MI') AS "dayEnd", time_zone AS "timeZone"
       FROM phigate.alert_settings_from_migrate FOR UPDATE`,
    );
    const last = rows[0] ?? {};
    const change: { -readonly [K in keyof AlertThresholds]?: AlertThresholds[K] } = {};
    const kept: { -readonly [K in keyof AlertThresholds]?: AlertThresholds[K] } = {};
    const route = <K extends keyof AlertThresholds>(keys: readonly K[], same: boolean) => {
      for (const k of keys) if (configured[k] !== undefined) (same ? kept : change)[k] = configured[k];
    };
    route(['bulkPatientsPerMinute'], configured.bulkPatientsPerMinute === last.bulkPatientsPerMinute);
    route(['deniedFieldsPerMinute'], configured.deniedFieldsPerMinute === last.deniedFieldsPerMinute);
    route(['dayStart', 'dayEnd'], configured.dayStart === last.dayStart && configured.dayEnd === last.dayEnd);
    route(['timeZone'], typeof last.timeZone === 'string' && configured.timeZone?.toLowerCase() === last.timeZone.toLowerCase());
    const written = await updateAlertSettings(db, change);
    await db.query(
      `INSERT INTO phigate.alert_settings_from_migrate AS m (bulk_patients_per_minute, denied_fields_per_minute, day_start, day_end, time_zone)
       VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (id) DO UPDATE SET bulk_patients_per_minute = EXCLUDED.bulk_patients_per_minute, denied_fields_per_minute = EXCLUDED.denied_fields_per_minute,
         day_start = EXCLUDED.day_start, day_end = EXCLUDED.day_end, time_zone = EXCLUDED.time_zone, applied_at = clock_timestamp()`,
      [configured.bulkPatientsPerMinute ?? null, configured.deniedFieldsPerMinute ?? null, configured.dayStart ?? null, configured.dayEnd ?? null, configured.timeZone ?? null],
    );
    return { ...written, kept };
  });
}

async function asOwner<T>(db: Queryable, fn: () => Promise<T>): Promise<T> {
  await db.query('BEGIN');
  try {
    await db.query('SET LOCAL ROLE phigate_owner');
    const result = await fn();
    await db.query('COMMIT');
    return result;
  } catch (err) {
    await db.query('ROLLBACK');
    throw err;
  }
}

async function updateAlertSettings(db: Queryable, change: Partial<AlertThresholds>): Promise<{ readonly before: AlertSettings; readonly after: AlertSettings }> {
  const before = await readAlertSettings(db);
  if (Object.keys(change).length === 0) return { before, after: before };
  await db.query(
    `UPDATE phigate.alert_settings s
     SET bulk_patients_per_minute = n.bulk, denied_fields_per_minute = n.denied, day_start = n.day_start, day_end = n.day_end, time_zone = n.time_zone
     FROM (SELECT coalesce($1::integer, s0.bulk_patients_per_minute) AS bulk, coalesce($2::integer, s0.denied_fields_per_minute) AS denied,
                  coalesce($3::time, s0.day_start) AS day_start, coalesce($4::time, s0.day_end) AS day_end, coalesce($5::text, s0.time_zone) AS time_zone
           FROM phigate.alert_settings s0) n
     WHERE (s.bulk_patients_per_minute, s.denied_fields_per_minute, s.day_start, s.day_end, s.time_zone)
           IS DISTINCT FROM (n.bulk, n.denied, n.day_start, n.day_end, n.time_zone)`,
    [change.bulkPatientsPerMinute ?? null, change.deniedFieldsPerMinute ?? null, change.dayStart ?? null, change.dayEnd ?? null, change.timeZone ?? null],
  );
  return { before, after: await readAlertSettings(db) };
}
