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
  await db.query('BEGIN');
  try {
    await db.query('SET LOCAL ROLE phigate_owner');
    const before = await readAlertSettings(db);
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
    const after = await readAlertSettings(db);
    await db.query('COMMIT');
    return { before, after };
  } catch (err) {
    await db.query('ROLLBACK');
    throw err;
  }
}
