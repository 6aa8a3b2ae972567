-- The alert sweep at a fraction of its cost per record (issue 10). Same rules, thresholds, state
-- (alert_minutes, alert_minute_patients, alerts_raised) and alert events as 029; what changed is
-- how much work a record costs, measured on 132,000 records of 12 events per sweep (bench/README.md,
-- "The alert sweep per record"):
--
-- * The new records are read through audit_records_tx whatever the planner knows. "tx >= xmin of
--   the last snapshot" alone has no estimate until the table is analysed (autovacuum off, or a
--   table just grown), and was planned as a scan of the whole table at every sweep, a cost that
--   grows with the log (460 -> 880 ms a sweep from 264,000 to 1.3 M records). Bounded above by the xmax of the statement's own
--   snapshot (a transaction at or past it is invisible to the statement anyway), the two bounds
--   make a range the planner estimates narrow without statistics and exactly with them.
-- * Whether a minute's bulk read has fired is looked up once per actor and minute, not once per
--   record, and a minute that has fired skips the distinct-patient bookkeeping entirely (it fires
--   once). Only the records of minutes still open are hashed by patient.
-- * Working hours are checked once per actor and minute: a minute whose first and last record
--   fall in working hours on one local day, with no change of UTC offset between them, holds no
--   off-hours read; only the records of other minutes are checked one by one, as before.
-- * A record's reads and denials come from one containment test in the common case (a page's
--   records hold reads and masked reads only); array_remove counts only the others.
-- * Memory for the sweep's hash tables and its materialised records: at the default work_mem a
--   sweep of 132,000 records sorted and stored them on disk.
-- * No nested loops and no sorts: the planner estimates the CTEs below at a row or two whatever
--   the sweep reads (a snapshot test has no selectivity), and chose nested loops of every record
--   against every minute, worse than 029 (0.9-1.7 s a sweep). Every join and DISTINCT here is
--   set against set, and hashing it is linear.
CREATE OR REPLACE FUNCTION phigate.sweep_alerts(
  p_bulk_patients integer, p_denied integer, p_day_start time, p_day_end time, p_time_zone text, p_settle_seconds integer)
RETURNS TABLE (kind text, actor_kind text, actor text, window_start timestamptz, observed integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog SET work_mem = '64MB' SET enable_nestloop = off SET enable_sort = off AS $$
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
    -- Per record, its reads (read or masked) and denials; an event of audit_events_v1 is a record of one.
    SELECT e.actor_kind, e.actor, e.patient_id, e.occurred_at, date_trunc('minute', e.occurred_at) AS minute,
           CASE WHEN e.plain THEN cardinality(e.actions)
                ELSE cardinality(e.actions) - cardinality(array_remove(array_remove(e.actions, 'read'), 'masked')) END AS reads,
           CASE WHEN e.plain THEN 0
                ELSE cardinality(e.actions) - cardinality(array_remove(e.actions, 'denied')) END AS denied
    FROM (
      -- OFFSET 0 keeps the test a column computed once per record, not an expression copied into
      -- each of the three places that read it.
      SELECT r.actor_kind, r.actor, r.patient_id, r.occurred_at, r.actions, r.actions <@ '{read,masked}'::text[] AS plain
      FROM phigate.audit_records r
      WHERE r.tx >= from_tx AND r.tx < pg_snapshot_xmax(pg_current_snapshot()) AND NOT pg_visible_in_snapshot(r.tx, s.seen)
        AND r.occurred_at >= floor_ts AND r.actor_kind IN ('user', 'partner')
      OFFSET 0
    ) e
    WHERE e.plain OR e.actions && '{read,masked,denied}'::text[]
    UNION ALL
    SELECT e.actor_kind, e.actor, e.patient_id, e.occurred_at, date_trunc('minute', e.occurred_at),
           (e.action IN ('read', 'masked'))::integer, (e.action = 'denied')::integer
    FROM phigate.audit_events_v1 e
    WHERE e.tx >= from_tx AND e.tx < pg_snapshot_xmax(pg_current_snapshot()) AND NOT pg_visible_in_snapshot(e.tx, s.seen)
      AND e.occurred_at >= floor_ts
      AND e.action IN ('read', 'masked', 'denied') AND e.actor_kind IN ('user', 'partner')
  ), moved AS (
    -- The snapshot of this statement, the one ev was read in.
    UPDATE phigate.alert_sweep SET seen = pg_current_snapshot(), swept_until = floor_ts
  ), groups AS MATERIALIZED (
    SELECT ev.actor_kind, ev.actor, ev.minute, sum(ev.denied) AS denied,
           bool_or(ev.reads > 0) AS reads, bool_or(ev.reads > 0 AND ev.patient_id IS NOT NULL) AS reads_patients,
           min(ev.occurred_at) AS first_at, max(ev.occurred_at) AS last_at
    FROM ev GROUP BY 1, 2, 3
  ), open AS MATERIALIZED (
    -- Minutes that read patients and whose bulk read has not fired: only theirs are counted.
    SELECT g.actor_kind, g.actor, g.minute FROM groups g
    WHERE g.reads_patients
      AND NOT EXISTS (SELECT 1 FROM phigate.alerts_raised r
                      WHERE r.kind = 'bulk_read' AND r.actor_kind = g.actor_kind AND r.actor = g.actor AND r.window_start = g.minute)
  ), fresh AS MATERIALIZED (
    -- Patients this sweep read that the minute had not counted yet.
    SELECT DISTINCT ev.actor_kind, ev.actor, ev.minute, ev.patient_id
    FROM ev JOIN open o ON o.actor_kind = ev.actor_kind AND o.actor = ev.actor AND o.minute = ev.minute
    WHERE EXISTS (SELECT 1 FROM open) AND ev.reads > 0 AND ev.patient_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM phigate.alert_minute_patients p
                      WHERE p.actor_kind = ev.actor_kind AND p.actor = ev.actor AND p.minute = ev.minute AND p.patient_id = ev.patient_id)
  ), added AS (
    SELECT g.actor_kind, g.actor, g.minute, coalesce(f.patients, 0)::integer AS patients, g.denied::integer AS denied
    FROM groups g
    LEFT JOIN (SELECT f.actor_kind, f.actor, f.minute, count(*) AS patients FROM fresh f GROUP BY 1, 2, 3) f
      ON f.actor_kind = g.actor_kind AND f.actor = g.actor AND f.minute = g.minute
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
  ), local AS (
    SELECT g.actor_kind, g.actor, g.minute, g.first_at, g.last_at,
           g.first_at AT TIME ZONE p_time_zone AS first_local, g.last_at AT TIME ZONE p_time_zone AS last_local
    FROM groups g WHERE g.actor_kind = 'user' AND g.reads
  ), unsure AS MATERIALIZED (
    -- Minutes that may hold a read outside working hours: all but those spent wholly inside them.
    SELECT l.actor_kind, l.actor, l.minute FROM local l
    WHERE NOT (l.last_local - l.first_local = l.last_at - l.first_at
               AND l.first_local::date = l.last_local::date
               AND CASE WHEN p_day_start <= p_day_end
                        THEN l.first_local::time >= p_day_start AND l.last_local::time < p_day_end
                        ELSE l.first_local::time >= p_day_start OR l.last_local::time < p_day_end
                   END)
  ), found AS (
    SELECT 'bulk_read'::text AS kind, t.actor_kind, t.actor, t.minute AS window_start, t.patients AS observed
    FROM totals t WHERE t.patients > p_bulk_patients
    UNION ALL
    SELECT 'denied_spike', t.actor_kind, t.actor, t.minute, t.denied FROM totals t WHERE t.denied > p_denied
    UNION ALL
    SELECT 'off_hours', ev.actor_kind, ev.actor,
           date_trunc('day', ev.occurred_at AT TIME ZONE p_time_zone) AT TIME ZONE p_time_zone, sum(ev.reads)::integer
    FROM ev JOIN unsure u ON u.actor_kind = ev.actor_kind AND u.actor = ev.actor AND u.minute = ev.minute
    WHERE EXISTS (SELECT 1 FROM unsure) AND ev.actor_kind = 'user' AND ev.reads > 0
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
