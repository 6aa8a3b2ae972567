-- phigate.sweep_alerts took its thresholds on trust. phigate_app may call it, so a stolen app
-- credential could sweep with rules no gateway runs (a threshold of 0 or below, NULLs, working
-- hours that are not whole minutes, a time zone PostgreSQL reads as a POSIX offset) and so move
-- the sweep's bookkeeping (alert_sweep.seen, the minute tables) past events without raising the
-- alerts the configured rules would have raised; those events are never swept again.
--
-- 040's function keeps its body under an internal name that only its owner may call; the public
-- name becomes a wrapper with the same signature and result that refuses, before anything is
-- read or moved, every argument src/config.ts would refuse for the matching setting:
--   p_bulk_patients   PHIGATE_ALERT_BULK_PATIENTS_PER_MINUTE   ALERT_BOUNDS.bulkPatientsPerMinute
--   p_denied          PHIGATE_ALERT_DENIED_FIELDS_PER_MINUTE   ALERT_BOUNDS.deniedFieldsPerMinute
--   p_day_start/end   PHIGATE_ALERT_WORKING_HOURS              workingHours(): HH:MM, start before
--                     24:00, end up to 24:00, the two different
--   p_time_zone       PHIGATE_ALERT_TIME_ZONE                  timeZone(): a zone by name (as there,
--                     and as AT TIME ZONE reads it, in any case)
--   p_settle_seconds  none since the setting went: the gateway sends 0 (src/audit/alert-sweep.ts)
-- A change to a bound there needs a migration here; test/integration/audit/alert-sweep-arguments.test.ts
-- fails until both sides agree. Refusals raise PH400 and name the setting, never the value.
--
-- Within those bounds the caller still chooses: a threshold of 1,000,000 is a setting the gateway
-- accepts, and the database cannot tell which one the operator chose.

-- The zones of pg_timezone_names by lower(name). That view reads every zone file at each call (29
-- ms of CPU here, against 0.05 for a SELECT 1), which each replica's sweep would pay every 15 s
-- and which would show in every sweep's cost; the wrapper asks it only for a zone missing here
-- (a tzdata newer than this migration).
CREATE TABLE phigate.time_zone_names (name text PRIMARY KEY);
INSERT INTO phigate.time_zone_names SELECT DISTINCT lower(z.name) FROM pg_timezone_names z;
REVOKE ALL ON phigate.time_zone_names FROM PUBLIC;

ALTER FUNCTION phigate.sweep_alerts(integer, integer, time, time, text, integer) RENAME TO sweep_alerts_unchecked;
REVOKE ALL ON FUNCTION phigate.sweep_alerts_unchecked(integer, integer, time, time, text, integer) FROM PUBLIC, phigate_app;

CREATE FUNCTION phigate.sweep_alerts(
  p_bulk_patients integer, p_denied integer, p_day_start time, p_day_end time, p_time_zone text, p_settle_seconds integer)
RETURNS TABLE (kind text, actor_kind text, actor text, window_start timestamptz, observed integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  IF p_bulk_patients IS NULL OR p_bulk_patients NOT BETWEEN 1 AND 1000000 THEN
    RAISE EXCEPTION 'alert sweep: the bulk-read threshold must be 1 to 1000000 (PHIGATE_ALERT_BULK_PATIENTS_PER_MINUTE)' USING ERRCODE = 'PH400';
  END IF;
  IF p_denied IS NULL OR p_denied NOT BETWEEN 1 AND 1000000 THEN
    RAISE EXCEPTION 'alert sweep: the denied-field threshold must be 1 to 1000000 (PHIGATE_ALERT_DENIED_FIELDS_PER_MINUTE)' USING ERRCODE = 'PH400';
  END IF;
  IF p_day_start IS NULL OR p_day_end IS NULL OR p_day_start = '24:00' OR p_day_start = p_day_end
     OR extract(second FROM p_day_start) <> 0 OR extract(second FROM p_day_end) <> 0 THEN
    RAISE EXCEPTION 'alert sweep: working hours must be two different whole minutes, the start before 24:00 (PHIGATE_ALERT_WORKING_HOURS)' USING ERRCODE = 'PH400';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM phigate.time_zone_names z WHERE z.name = lower(p_time_zone))
     AND NOT EXISTS (SELECT 1 FROM pg_timezone_names z WHERE lower(z.name) = lower(p_time_zone)) THEN
    RAISE EXCEPTION 'alert sweep: the time zone must be one of pg_timezone_names (PHIGATE_ALERT_TIME_ZONE)' USING ERRCODE = 'PH400';
  END IF;
  IF p_settle_seconds IS DISTINCT FROM 0 THEN
    RAISE EXCEPTION 'alert sweep: the settle time is unused since migration 026 and must be 0' USING ERRCODE = 'PH400';
  END IF;
  RETURN QUERY SELECT * FROM phigate.sweep_alerts_unchecked(p_bulk_patients, p_denied, p_day_start, p_day_end, p_time_zone, p_settle_seconds);
END
$$;
REVOKE ALL ON FUNCTION phigate.sweep_alerts(integer, integer, time, time, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.sweep_alerts(integer, integer, time, time, text, integer) TO phigate_app;
