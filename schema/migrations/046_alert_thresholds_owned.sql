-- The alert sweep's thresholds belong to the database owner, not to the caller. Since 042 the app
-- role's phigate.sweep_alerts refused thresholds no gateway could run, but within the bounds the
-- caller still chose: a stolen app credential, or one replica configured apart from the others,
-- could sweep with a bulk-read threshold of 1,000,000 and move the sweep's bookkeeping past
-- events that the operator's rules would have alerted on; those events are never swept again.
--
-- Now the thresholds are one row that phigate_owner holds: the app role may read it (a gateway
-- compares it with its environment at start-up, src/audit/alert-thresholds.ts) and change
-- nothing. The app role's sweep, phigate.sweep_alerts(), takes no arguments and reads that row,
-- so every replica sweeps with the same rules. The thresholds change only as the owner: by
-- `npx phigate alerts thresholds --bulk-patients N ...`, by `npx phigate migrate` with the
-- PHIGATE_ALERT_* thresholds in its environment, or by an UPDATE of this row (README.md, "Alert
-- thresholds"). Each way passes the checks below, which refuse what src/config.ts refuses for the
-- matching setting, and each change is an audit event.

CREATE TABLE phigate.alert_settings (
  -- One row: the key can only be true.
  id                       boolean PRIMARY KEY DEFAULT true CHECK (id),
  bulk_patients_per_minute integer NOT NULL,
  denied_fields_per_minute integer NOT NULL,
  day_start                time NOT NULL,
  day_end                  time NOT NULL,
  time_zone                text NOT NULL,
  changed_at               timestamptz NOT NULL DEFAULT clock_timestamp(),
  changed_by               text NOT NULL DEFAULT session_user
);
REVOKE ALL ON phigate.alert_settings FROM PUBLIC;
GRANT SELECT ON phigate.alert_settings TO phigate_app, phigate_auditor;

-- The problem with a set of thresholds, or NULL when there is none: 042's wrapper checks in one
-- place, naming the column and the command's option instead of the gateway's variable. The
-- bounds are src/config.ts's ALERT_BOUNDS; test/integration/audit/alert-thresholds.test.ts fails
-- until both sides agree.
CREATE FUNCTION phigate.alert_thresholds_problem(
  p_bulk_patients integer, p_denied integer, p_day_start time, p_day_end time, p_time_zone text)
RETURNS text LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
BEGIN
  IF p_bulk_patients IS NULL OR p_bulk_patients NOT BETWEEN 1 AND 1000000 THEN
    RETURN 'bulk_patients_per_minute must be 1 to 1000000 (--bulk-patients)';
  END IF;
  IF p_denied IS NULL OR p_denied NOT BETWEEN 1 AND 1000000 THEN
    RETURN 'denied_fields_per_minute must be 1 to 1000000 (--denied-fields)';
  END IF;
  IF p_day_start IS NULL OR p_day_end IS NULL OR p_day_start = '24:00' OR p_day_start = p_day_end
     OR extract(second FROM p_day_start) <> 0 OR extract(second FROM p_day_end) <> 0 THEN
    RETURN 'day_start and day_end must be two different whole minutes, day_start before 24:00 (--working-hours)';
  END IF;
  IF p_time_zone IS NULL
     OR (NOT EXISTS (SELECT 1 FROM phigate.time_zone_names z WHERE z.name = lower(p_time_zone))
         AND NOT EXISTS (SELECT 1 FROM pg_timezone_names z WHERE lower(z.name) = lower(p_time_zone))) THEN
    RETURN 'time_zone must be one of pg_timezone_names (--time-zone)';
  END IF;
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION phigate.alert_thresholds_problem(integer, integer, time, time, text) FROM PUBLIC;

CREATE FUNCTION phigate.alert_settings_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
  problem text;
BEGIN
  IF TG_OP IN ('DELETE', 'TRUNCATE') THEN
    -- Without the row no sweep runs (it fails closed): change the row instead.
    RAISE EXCEPTION 'alert thresholds: the row of phigate.alert_settings cannot be removed; update it' USING ERRCODE = 'PH400';
  END IF;
  problem := phigate.alert_thresholds_problem(NEW.bulk_patients_per_minute, NEW.denied_fields_per_minute, NEW.day_start, NEW.day_end, NEW.time_zone);
  IF problem IS NOT NULL THEN
    RAISE EXCEPTION 'alert thresholds: %', problem USING ERRCODE = 'PH400';
  END IF;
  NEW.changed_at := clock_timestamp();
  NEW.changed_by := session_user;
  RETURN NEW;
END
$$;
CREATE TRIGGER alert_settings_check BEFORE INSERT OR UPDATE ON phigate.alert_settings
  FOR EACH ROW EXECUTE FUNCTION phigate.alert_settings_check();
CREATE TRIGGER alert_settings_kept BEFORE DELETE OR TRUNCATE ON phigate.alert_settings
  FOR EACH STATEMENT EXECUTE FUNCTION phigate.alert_settings_check();

-- Each changed threshold is an audit event: who (the session's login role), when, which setting
-- and, where the audit detail's alphabet holds it, the new value (a time zone's capitals and '/'
-- do not fit: its value is in the row).
CREATE FUNCTION phigate.alert_settings_audit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  request_id text := 'alert-settings-' || gen_random_uuid();
BEGIN
  INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name, field, detail)
  SELECT request_id, session_user, 'system', 'HSYSADMIN', 'update', 'AlertSettings', c.field, c.detail
  FROM (VALUES
    ('bulk_patients_per_minute', OLD.bulk_patients_per_minute IS DISTINCT FROM NEW.bulk_patients_per_minute, NEW.bulk_patients_per_minute::text),
    ('denied_fields_per_minute', OLD.denied_fields_per_minute IS DISTINCT FROM NEW.denied_fields_per_minute, NEW.denied_fields_per_minute::text),
    ('working_hours', (OLD.day_start, OLD.day_end) IS DISTINCT FROM (NEW.day_start, NEW.day_end),
     to_char(NEW.day_start, 'HH24:MI') || '-' || to_char(NEW.day_end, 'HH24:MI')),
    ('time_zone', OLD.time_zone IS DISTINCT FROM NEW.time_zone, NULL)
  ) c(field, changed, detail)
  WHERE c.changed;
  RETURN NULL;
END
$$;
CREATE TRIGGER alert_settings_audit AFTER UPDATE ON phigate.alert_settings
  FOR EACH ROW EXECUTE FUNCTION phigate.alert_settings_audit();

-- The defaults of src/config.ts's ALERT_DEFAULTS, which the gateway used when no variable was set.
INSERT INTO phigate.alert_settings (bulk_patients_per_minute, denied_fields_per_minute, day_start, day_end, time_zone)
VALUES (50, 20, '06:00', '20:00', 'UTC');

-- The sweep of the app role: the owner's thresholds, nothing from the caller. Without the row
-- (which the triggers above keep) it refuses rather than sweep with none.
CREATE FUNCTION phigate.sweep_alerts()
RETURNS TABLE (kind text, actor_kind text, actor text, window_start timestamptz, observed integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  t record;
BEGIN
  SELECT s.bulk_patients_per_minute, s.denied_fields_per_minute, s.day_start, s.day_end, s.time_zone INTO t FROM phigate.alert_settings s;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'alert sweep: phigate.alert_settings holds no thresholds' USING ERRCODE = 'PH500';
  END IF;
  RETURN QUERY SELECT * FROM phigate.sweep_alerts_unchecked(t.bulk_patients_per_minute, t.denied_fields_per_minute, t.day_start, t.day_end, t.time_zone, 0);
END
$$;
REVOKE ALL ON FUNCTION phigate.sweep_alerts() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.sweep_alerts() TO phigate_app;

-- 042's sweep with thresholds stays for the owner (tests and bench/alert-sweep*.sql pass their
-- own); the app role loses it. A gateway older than this migration fails its sweeps (logged,
-- 'alert sweep failed') until it is replaced; a newer replica's sweep reads every event the last
-- sweep could not see, so nothing is skipped meanwhile, only alerted later.
REVOKE EXECUTE ON FUNCTION phigate.sweep_alerts(integer, integer, time, time, text, integer) FROM phigate_app;
