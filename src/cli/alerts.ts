import type { ParseArgsConfig } from 'node:util';
import pg from 'pg';
import { thresholdDisagreements, thresholdOptions } from '../audit/alert-thresholds.ts';
import { ALERT_THRESHOLD_VARIABLES, alertThresholdsOf, ConfigError, type AlertThresholds, type Config } from '../config.ts';
import { ALERT_SETTINGS_REFUSED_SQLSTATE, readAlertSettings, writeAlertSettings } from '../db/alert-settings.ts';
import { databaseUrls } from '../dev/embedded-stack.ts';

export const ALERTS_USAGE = `  alerts thresholds [--bulk-patients N] [--denied-fields N] [--working-hours HH:MM-HH:MM] [--time-zone Z]
                                as the database owner (PHIGATE_MIGRATE_URL): set the alert sweep's
                                thresholds, which every replica uses; without options, print them`;

/** Each option and the gateway setting whose checks it passes. */
const OPTIONS = {
  'bulk-patients': ALERT_THRESHOLD_VARIABLES.bulkPatientsPerMinute,
  'denied-fields': ALERT_THRESHOLD_VARIABLES.deniedFieldsPerMinute,
  'working-hours': ALERT_THRESHOLD_VARIABLES.workingHours,
  'time-zone': ALERT_THRESHOLD_VARIABLES.timeZone,
} as const;

const optionOf = (variable: string): string => Object.entries(OPTIONS).find(([, v]) => v === variable)?.[0] ?? variable;

export const alertsOptions: NonNullable<ParseArgsConfig['options']> = Object.fromEntries(Object.keys(OPTIONS).map((o) => [o, { type: 'string' }]));

export class AlertsCommandError extends Error {}

type Values = Record<string, string | boolean | undefined>;

/** The thresholds the options give, checked as the settings of the same meaning are. */
function thresholdsOfOptions(v: Values): Partial<AlertThresholds> {
  const src: Record<string, string> = {};
  for (const [option, variable] of Object.entries(OPTIONS)) {
    const value = v[option];
    if (typeof value === 'string') src[variable] = value;
  }
  try {
    return alertThresholdsOf(src);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    throw new AlertsCommandError(`--${optionOf(e.variable)}${e.message.slice(e.variable.length)}`);
  }
}

/**
 * `alerts thresholds`: prints the thresholds of phigate.alert_settings, or sets those given as
 * phigate_owner (an audit event per change) and prints what changed and what holds now.
 */
export async function runAlerts(positionals: readonly string[], v: Values, config: Config, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  if (positionals.length !== 1 || positionals[0] !== 'thresholds') throw new AlertsCommandError(`usage:\n${ALERTS_USAGE}`);
  const change = thresholdsOfOptions(v);
  const urls = await databaseUrls(config, err);
  try {
    if (!urls.migrateUrl) throw new AlertsCommandError('PHIGATE_MIGRATE_URL: is required: only the database owner may read and set the alert thresholds here');
    const client = new pg.Client({ connectionString: urls.migrateUrl, application_name: 'phigate-alerts' });
    await client.connect();
    try {
      const settings =
        Object.keys(change).length === 0
          ? await readAlertSettings(client)
          : await writeAlertSettings(client, change).then(({ before, after }) => {
              const changed = thresholdDisagreements(after, before);
              for (const d of changed) err(`--${optionOf(d.variable)}: ${d.database} -> ${d.configured}`);
              if (changed.length === 0) err('unchanged');
              return after;
            });
      out(thresholdOptions(settings));
      out(`changed ${settings.changedAt.toISOString()} by ${settings.changedBy}`);
      return 0;
    } catch (e) {
      if ((e as { code?: string }).code === ALERT_SETTINGS_REFUSED_SQLSTATE) throw new AlertsCommandError((e as Error).message);
      throw e;
    } finally {
      await client.end();
    }
  } finally {
    await urls.stop();
  }
}
