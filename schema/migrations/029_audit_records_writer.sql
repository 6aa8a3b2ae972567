-- The audit writer on the narrow layout (issue #10): the writer inserts rows of
-- phigate.audit_records (028) directly, one per (request, patient, role, purpose, break-glass,
-- grant), and the readers of the trail that filter and page read the records, not the view.

-- How many events the records of batch p_batch hold, as stored: counted after every trigger has
-- had its say, so a trigger that drops a record or trims its arrays shows as fewer events than
-- the batch meant to write (expect_audit_rows, 009). The writer's statement calls it after its
-- INSERT of the records (a VOLATILE function's queries see the rows its calling statement has
-- inserted so far); RETURNING cannot count them, as it would need SELECT on audit_records, which
-- the gateway's role does not have. It reads this transaction's records only (audit_records_tx).
CREATE FUNCTION phigate.audit_batch_events(p_batch uuid) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  n bigint;
BEGIN
  SELECT sum(cardinality(r.actions)) INTO n
  FROM phigate.audit_records r
  WHERE r.tx = pg_current_xact_id() AND r.batch_id = p_batch;
  RETURN n;
END
$$;
REVOKE ALL ON FUNCTION phigate.audit_batch_events(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.audit_batch_events(uuid) TO phigate_app;

-- auditEvents, one page newest first, as 015's function with the same arguments and rows, but
-- reading the two tables behind phigate.audit_events instead of the view. Through the view,
-- "ORDER BY id DESC LIMIT n" sorts every event of the filtered records (an event's id is computed
-- from its record's id and position, which no index orders). Here the newest matching records,
-- at most a page of them, are found through the index of the filter (audit_records_patient,
-- _actor, _break_glass, _rare_action, the BRIN of occurred_at, or the primary key), then their
-- events unnested; and since every record's events have higher ids than every event of
-- audit_events_v1, the old events are read only when the records did not fill the page.
CREATE OR REPLACE FUNCTION phigate.compliance_audit_events(
  p_patient_id uuid, p_actor text, p_action text, p_break_glass_only boolean,
  p_since timestamptz, p_until timestamptz, p_before bigint, p_limit integer)
RETURNS TABLE (id bigint, occurred_at timestamptz, request_id text, actor text, actor_kind text, role text,
               purpose text, break_glass boolean, client_addr text, action text, type_name text, field text,
               patient_id uuid, record_id uuid, detail text, grant_id uuid, credential_id text, clinic_id text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  filters text := '';
  q text;
  found_rows bigint;
BEGIN
  IF NOT phigate.ctx_audit_reader() THEN
    RAISE EXCEPTION 'the request may not read the audit trail' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1001 THEN
    RAISE EXCEPTION 'page size out of range' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- Filters of a record's shared facts: the same text serves both tables (e names either).
  IF p_patient_id IS NOT NULL THEN filters := filters || ' AND e.patient_id = $1'; END IF;
  IF p_actor IS NOT NULL THEN filters := filters || ' AND e.actor = $2'; END IF;
  IF p_break_glass_only THEN filters := filters || ' AND e.break_glass'; END IF;
  IF p_since IS NOT NULL THEN filters := filters || ' AND e.occurred_at >= $5'; END IF;
  IF p_until IS NOT NULL THEN filters := filters || ' AND e.occurred_at < $6'; END IF;

  -- The newest records that match come first, by themselves: each holds at least one event of the
  -- page (the action filter is also a record's), but for the record the cursor cuts, whose events
  -- may all be past it: hence one record more than the page.
  q := 'SELECT e.id, e.occurred_at, e.request_id, e.actor, e.actor_kind, e.role, e.purpose, e.break_glass,
               e.client_addr, e.patient_id, e.grant_id, e.credential_id, e.actions, e.type_names, e.fields,
               e.record_ids, e.details, pc.clinic_id
        FROM phigate.audit_records e LEFT JOIN phigate.patient_clinics pc ON pc.patient_id = e.patient_id
        WHERE (pc.clinic_id IS NULL OR pc.clinic_id = ANY ($9))' || filters;
  IF p_action IS NOT NULL THEN
    q := q || ' AND $3 = ANY (e.actions)';
    -- The predicate of audit_records_rare_action, so that index answers a rare action.
    IF p_action NOT IN ('read', 'masked', 'denied') THEN
      q := q || ' AND NOT (e.actions <@ ARRAY[''read'', ''masked'', ''denied'']::text[])';
    END IF;
  END IF;
  IF p_before IS NOT NULL THEN q := q || ' AND e.id <= ($7 - 1) >> 16'; END IF;
  q := 'SELECT (r.id << 16) + v.n - 1, r.occurred_at, r.request_id, r.actor, r.actor_kind, r.role, r.purpose,
               r.break_glass, r.client_addr, v.action, v.type_name, v.field, r.patient_id, v.record_id, v.detail,
               r.grant_id, r.credential_id, r.clinic_id
        FROM (' || q || ' ORDER BY e.id DESC LIMIT $8 + 1) r
        CROSS JOIN LATERAL unnest(r.actions, r.type_names, r.fields, r.record_ids, r.details)
          WITH ORDINALITY AS v(action, type_name, field, record_id, detail, n)
        WHERE true';
  IF p_action IS NOT NULL THEN q := q || ' AND v.action = $3'; END IF;
  IF p_before IS NOT NULL THEN q := q || ' AND (r.id << 16) + v.n - 1 < $7'; END IF;
  RETURN QUERY EXECUTE q || ' ORDER BY r.id DESC, v.n DESC LIMIT $8'
    USING p_patient_id, p_actor, p_action, p_break_glass_only, p_since, p_until, p_before, p_limit, phigate.ctx_clinics();
  GET DIAGNOSTICS found_rows = ROW_COUNT;
  IF found_rows >= p_limit THEN
    RETURN;
  END IF;

  q := 'SELECT e.id, e.occurred_at, e.request_id, e.actor, e.actor_kind, e.role, e.purpose, e.break_glass,
               e.client_addr, e.action, e.type_name, e.field, e.patient_id, e.record_id, e.detail, e.grant_id,
               e.credential_id, pc.clinic_id
        FROM phigate.audit_events_v1 e LEFT JOIN phigate.patient_clinics pc ON pc.patient_id = e.patient_id
        WHERE (pc.clinic_id IS NULL OR pc.clinic_id = ANY ($9))' || filters;
  IF p_action IS NOT NULL THEN q := q || ' AND e.action = $3'; END IF;
  IF p_before IS NOT NULL THEN q := q || ' AND e.id < $7'; END IF;
  RETURN QUERY EXECUTE q || ' ORDER BY e.id DESC LIMIT $8'
    USING p_patient_id, p_actor, p_action, p_break_glass_only, p_since, p_until, p_before, p_limit - found_rows,
          phigate.ctx_clinics();
END
$$;

-- The alert sweep of 026, same rules, state and alert events, reading records instead of events:
-- a record is one request's events about one patient, so it counts once for the patients read in
-- its minute, and its reads and denials are counted from its actions. Through the view, every
-- event of a record was a row of its own down to the DISTINCT of the patients.
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
    -- Per record, its reads (read or masked) and denials; an event of audit_events_v1 is a record of one.
    SELECT e.actor_kind, e.actor, e.patient_id, e.occurred_at, date_trunc('minute', e.occurred_at) AS minute,
           cardinality(e.actions) - cardinality(array_remove(array_remove(e.actions, 'read'), 'masked')) AS reads,
           cardinality(e.actions) - cardinality(array_remove(e.actions, 'denied')) AS denied
    FROM phigate.audit_records e
    WHERE e.tx >= from_tx AND NOT pg_visible_in_snapshot(e.tx, s.seen)
      AND e.occurred_at >= floor_ts AND e.actor_kind IN ('user', 'partner')
      AND e.actions && ARRAY['read', 'masked', 'denied']
    UNION ALL
    SELECT e.actor_kind, e.actor, e.patient_id, e.occurred_at, date_trunc('minute', e.occurred_at),
           (e.action IN ('read', 'masked'))::integer, (e.action = 'denied')::integer
    FROM phigate.audit_events_v1 e
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
    WHERE ev.reads > 0 AND ev.patient_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM alerted a WHERE a.actor_kind = ev.actor_kind AND a.actor = ev.actor AND a.minute = ev.minute)
      AND NOT EXISTS (SELECT 1 FROM phigate.alert_minute_patients p
                      WHERE p.actor_kind = ev.actor_kind AND p.actor = ev.actor AND p.minute = ev.minute AND p.patient_id = ev.patient_id)
  ), added AS (
    SELECT k.actor_kind, k.actor, k.minute, sum(k.patients)::integer AS patients, sum(k.denied)::integer AS denied
    FROM (
      SELECT f.actor_kind, f.actor, f.minute, count(*) AS patients, 0 AS denied FROM fresh f GROUP BY 1, 2, 3
      UNION ALL
      SELECT ev.actor_kind, ev.actor, ev.minute, 0, sum(ev.denied) FROM ev GROUP BY 1, 2, 3
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
           date_trunc('day', ev.occurred_at AT TIME ZONE p_time_zone) AT TIME ZONE p_time_zone, sum(ev.reads)::integer
    FROM ev
    WHERE ev.actor_kind = 'user' AND ev.reads > 0
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
