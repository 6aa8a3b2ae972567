import { ALERT_THRESHOLD_VARIABLES, type AlertThresholds } from '../config.ts';
import pg from 'pg';
import { readAlertSettings, writeAlertSettingsFromMigrate, type AlertSettings } from '../db/alert-settings.ts';
import type { Logger } from '../log.ts';

export interface ThresholdDisagreement {
  readonly variable: string;
  readonly configured: string | number;
  readonly database: string | number;
}

const hours = (t: Pick<AlertThresholds, 'dayStart' | 'dayEnd'>) => `${t.dayStart}-${t.dayEnd}`;

/** The variables of `configured` whose value is not the database's (a time zone in any case, as PostgreSQL reads it). */
export function thresholdDisagreements(configured: Partial<AlertThresholds>, database: AlertThresholds): ThresholdDisagreement[] {
  const v = ALERT_THRESHOLD_VARIABLES;
  const found: ThresholdDisagreement[] = [];
  if (configured.bulkPatientsPerMinute !== undefined && configured.bulkPatientsPerMinute !== database.bulkPatientsPerMinute) {
    found.push({ variable: v.bulkPatientsPerMinute, configured: configured.bulkPatientsPerMinute, database: database.bulkPatientsPerMinute });
  }
  if (configured.deniedFieldsPerMinute !== undefined && configured.deniedFieldsPerMinute !== database.deniedFieldsPerMinute) {
    found.push({ variable: v.deniedFieldsPerMinute, configured: configured.deniedFieldsPerMinute, database: database.deniedFieldsPerMinute });
  }
  if (configured.dayStart !== undefined && configured.dayEnd !== undefined && hours({ dayStart: configured.dayStart, dayEnd: configured.dayEnd }) !== hours(database)) {
    found.push({ variable: v.workingHours, configured: hours({ dayStart: configured.dayStart, dayEnd: configured.dayEnd }), database: hours(database) });
  }
  if (configured.timeZone !== undefined && configured.timeZone.toLowerCase() !== database.timeZone.toLowerCase()) {
    found.push({ variable: v.timeZone, configured: configured.timeZone, database: database.timeZone });
  }
  return found;
}

/**
 * Start-up: logs the thresholds every replica's sweep uses (phigate.alert_settings), and warns
 * once for each PHIGATE_ALERT_* threshold of this gateway's environment that differs from them.
 * A warning, not a refusal: the gateway's value is used by nothing, so it cannot run
 * half-configured, and refusing would turn the owner's change of a threshold into an outage of
 * every replica restarted before its environment was edited. A database without the row (not
 * migrated to 046) stops start-up: the gateway's sweep could not run.
 */
export async function reportAlertThresholds(db: Pick<pg.ClientBase, 'query'>, configured: Partial<AlertThresholds>, logger: Logger): Promise<AlertSettings> {
  const settings = await readAlertSettings(db);
  const { bulkPatientsPerMinute, deniedFieldsPerMinute, timeZone } = settings;
  logger.info({ bulkPatientsPerMinute, deniedFieldsPerMinute, workingHours: hours(settings), timeZone }, 'alert thresholds (phigate.alert_settings)');
  for (const d of thresholdDisagreements(configured, settings)) {
    logger.warn(
      { variable: d.variable, configured: d.configured, database: d.database },
      `${d.variable} differs from the alert threshold in phigate.alert_settings, which every replica's sweep uses; the setting is ignored: change the threshold as the database owner (npx phigate alerts thresholds, or npx phigate migrate with the setting) or unset it`,
    );
  }
  return settings;
}

/** The thresholds as the options of `phigate alerts thresholds` that would set them. */
export function thresholdOptions(t: AlertThresholds): string {
  return `--bulk-patients ${t.bulkPatientsPerMinute} --denied-fields ${t.deniedFieldsPerMinute} --working-hours ${hours(t)} --time-zone ${t.timeZone}`;
}

/**
 * `phigate migrate` with PHIGATE_ALERT_* thresholds in its environment: writes, as the owner (the
 * migrator's connection) after the migrations, each whose value differs from the one migrate applied
 * last, and reports each that changed. A value the environment has kept since is not written again:
 * a change made meanwhile with `phigate alerts thresholds` stands, and is reported as standing.
 */
export async function applyConfiguredThresholds(migrateUrl: string, configured: Partial<AlertThresholds>, log: (line: string) => void): Promise<void> {
  const client = new pg.Client({ connectionString: migrateUrl, application_name: 'phigate-migrate' });
  await client.connect();
  try {
    const { before, after, kept } = await writeAlertSettingsFromMigrate(client, configured);
    for (const d of thresholdDisagreements(after, before)) log(`alert threshold ${d.variable}: ${d.database} -> ${d.configured}`);
    for (const d of thresholdDisagreements(kept, after)) {
      log(`alert threshold ${d.variable}: ${d.database} kept; the setting (${d.configured}) is the one migrate applied last, and the threshold was changed since (phigate alerts thresholds)`);
    }
  } finally {
    await client.end();
  }
}
