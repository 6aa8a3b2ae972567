-- The alert sweep reads each audit row once (src/audit/alert-sweep.ts). 015's sweep recounted the
-- current minute from its start at every sweep, and its three rules each scanned the minute's
-- rows again: a row was read 4-5 times. Now a sweep reads only the rows its previous sweep could
-- not see: it keeps that sweep's snapshot, and a row is new when its transaction (the tx column,
-- 016) is not visible in it. A transaction still in flight during a sweep is read by the next
-- one, however late it commits and whenever its rows occurred, so no settle time is needed; and
-- unlike a cursor below the xmin horizon (the sealer's), a long transaction elsewhere in the
-- cluster delays nothing: it only widens the range of tx the next sweep looks through. What a
-- minute has seen so far is kept, per actor, for an hour.

ALTER TABLE phigate.alert_sweep ADD COLUMN seen pg_snapshot;

-- Rows that occurred before the last sweep's minute were counted by 015's sweeps: start past the
-- last of them (the table's rows of later transactions are read by the first sweep, then filtered by time).
UPDATE phigate.alert_sweep s SET seen = (c.tx || ':' || c.tx || ':')::pg_snapshot
FROM (
  SELECT coalesce((
    SELECT e.tx FROM phigate.audit_events e
    WHERE e.tx < pg_snapshot_xmin(pg_current_snapshot()) AND e.occurred_at < date_trunc('minute', s0.swept_until)
    ORDER BY e.tx DESC, e.id DESC LIMIT 1), '1'::xid8) AS tx
  FROM phigate.alert_sweep s0
) c;
ALTER TABLE phigate.alert_sweep ALTER COLUMN seen SET NOT NULL;

-- Per actor and minute: the number of distinct patients read and of denied fields; the patients
-- themselves only while the minute is within the bulk-read threshold.
CREATE TABLE phigate.alert_minutes (
  actor_kind text NOT NULL,
  actor      text NOT NULL,
  minute     timestamptz NOT NULL,
  patients   integer NOT NULL,
  denied     integer NOT NULL,
  PRIMARY KEY (actor_kind, actor, minute)
);
CREATE TABLE phigate.alert_minute_patients (
  actor_kind text NOT NULL,
  actor      text NOT NULL,
  minute     timestamptz NOT NULL,
  patient_id uuid NOT NULL,
  PRIMARY KEY (actor_kind, actor, minute, patient_id)
);
REVOKE ALL ON phigate.alert_minutes, phigate.alert_minute_patients FROM PUBLIC;

-- Same rules, thresholds and alert events as 015. swept_until is now a floor: rows that occurred
-- before its minute are not counted (it follows the hour of state kept; an operator may raise it
-- to skip history). p_settle_seconds is kept for the signature's callers; the xmin horizon
-- replaces it. Off-hours reads fire once per actor and local day (alerts_raised's key), observed
-- being the number this sweep read, as before.
CREATE OR REPLACE FUNCTION phigate.sweep_alerts(
  p_bulk_patients integer, p_denied integer, p_day_start time, p_day_end time, p_time_zone text, p_settle_seconds integer)
RETURNS TABLE (kind text, actor_kind text, actor text, window_start timestamptz, observed integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  s record;
  from_tx xid8;
  floor_ts timestamptz;
  sweep_id text := 'alert-sweep-' || gen_random_uuid();
BEGIN
  SELECT a.swept_until, a.seen INTO s FROM phigate.alert_sweep a FOR UPDATE SKIP LOCKED;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  floor_ts := date_trunc('minute', greatest(s.swept_until, clock_timestamp() - interval '1 hour'));
  from_tx := pg_snapshot_xmin(s.seen);
  RETURN QUERY
  WITH ev AS MATERIALIZED (
    SELECT e.actor_kind, e.actor, e.action, e.patient_id, e.occurred_at, date_trunc('minute', e.occurred_at) AS minute
    FROM phigate.audit_events e
    WHERE e.tx >= from_tx AND NOT pg_visible_in_snapshot(e.tx, s.seen)
      AND e.occurred_at >= floor_ts
      AND e.action IN ('read', 'masked', 'denied') AND e.actor_kind IN ('user', 'partner')
  ), moved AS (
    -- The snapshot of this statement, the one ev was read in.
    UPDATE phigate.alert_sweep SET seen = pg_current_snapshot(), swept_until = floor_ts
  ), alerted AS (
    -- A minute whose bulk read has fired needs no more patients: it fires once.
    SELECT DISTINCT ev.actor_kind, ev.actor, ev.minute FROM ev
    JOIN phigate.alerts_raised r ON r.kind = 'bulk_read' AND r.actor_kind = ev.actor_kind AND r.actor = ev.actor AND r.window_start = ev.minute
  ), fresh AS MATERIALIZED (
    -- Patients this sweep read that the minute had not counted yet.
    SELECT DISTINCT ev.actor_kind, ev.actor, ev.minute, ev.patient_id FROM ev
    WHERE ev.action IN ('read', 'masked') AND ev.patient_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM alerted a WHERE a.actor_kind = ev.actor_kind AND a.actor = ev.actor AND a.minute = ev.minute)
      AND NOT EXISTS (SELECT 1 FROM phigate.alert_minute_patients p
                      WHERE p.actor_kind = ev.actor_kind AND p.actor = ev.actor AND p.minute = ev.minute AND p.patient_id = ev.patient_id)
  ), added AS (
    SELECT k.actor_kind, k.actor, k.minute, sum(k.patients)::integer AS patients, sum(k.denied)::integer AS denied
    FROM (
      SELECT f.actor_kind, f.actor, f.minute, count(*) AS patients, 0 AS denied FROM fresh f GROUP BY 1, 2, 3
      UNION ALL
      SELECT ev.actor_kind, ev.actor, ev.minute, 0, count(*) FILTER (WHERE ev.action = 'denied') FROM ev GROUP BY 1, 2, 3
    ) k
    GROUP BY 1, 2, 3
  ), totals AS (
    INSERT INTO phigate.alert_minutes AS m (actor_kind, actor, minute, patients, denied)
    SELECT a.actor_kind, a.actor, a.minute, a.patients, a.denied FROM added a
    ON CONFLICT ON CONSTRAINT alert_minutes_pkey DO UPDATE SET patients = m.patients + excluded.patients, denied = m.denied + excluded.denied
    RETURNING m.actor_kind, m.actor, m.minute, m.patients, m.denied
  ), kept AS (
    -- Only a minute still within the threshold keeps its patients: past it, the count is exact
    -- now and the alert fires, so at most the threshold's worth is ever stored per actor and minute.
    INSERT INTO phigate.alert_minute_patients (actor_kind, actor, minute, patient_id)
    SELECT f.actor_kind, f.actor, f.minute, f.patient_id FROM fresh f
    JOIN totals t ON t.actor_kind = f.actor_kind AND t.actor = f.actor AND t.minute = f.minute
    WHERE t.patients <= p_bulk_patients
    ON CONFLICT DO NOTHING
  ), found AS (
    SELECT 'bulk_read'::text AS kind, t.actor_kind, t.actor, t.minute AS window_start, t.patients AS observed
    FROM totals t WHERE t.patients > p_bulk_patients
    UNION ALL
    SELECT 'denied_spike', t.actor_kind, t.actor, t.minute, t.denied FROM totals t WHERE t.denied > p_denied
    UNION ALL
    SELECT 'off_hours', ev.actor_kind, ev.actor,
           date_trunc('day', ev.occurred_at AT TIME ZONE p_time_zone) AT TIME ZONE p_time_zone, count(*)::integer
    FROM ev
    WHERE ev.actor_kind = 'user' AND ev.action IN ('read', 'masked')
      AND NOT CASE WHEN p_day_start <= p_day_end
                   THEN (ev.occurred_at AT TIME ZONE p_time_zone)::time >= p_day_start AND (ev.occurred_at AT TIME ZONE p_time_zone)::time < p_day_end
                   ELSE (ev.occurred_at AT TIME ZONE p_time_zone)::time >= p_day_start OR (ev.occurred_at AT TIME ZONE p_time_zone)::time < p_day_end
              END
    GROUP BY 2, 3, 4
  ), raised AS (
    INSERT INTO phigate.alerts_raised AS r (kind, actor_kind, actor, window_start, observed)
    SELECT f.kind, f.actor_kind, f.actor, f.window_start, f.observed FROM found f
    ON CONFLICT DO NOTHING
    RETURNING r.kind, r.actor_kind, r.actor, r.window_start, r.observed
  ), recorded AS (
    INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name, detail)
    SELECT sweep_id, r.actor, r.actor_kind, 'healthcare_operations', 'alert', 'Alert', r.kind || ':' || r.observed FROM raised r
  )
  SELECT r.kind, r.actor_kind, r.actor, r.window_start, r.observed FROM raised r;
  DELETE FROM phigate.alert_minutes m WHERE m.minute < floor_ts;
  DELETE FROM phigate.alert_minute_patients p WHERE p.minute < floor_ts;
END
$$;
