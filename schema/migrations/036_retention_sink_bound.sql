-- Retention never outruns the outside sink (docs/audit-log.md, "Append-only and retention").
--
-- The sink is the evidence kept outside the database: events retention removes before a lagging
-- sink has delivered them would exist nowhere. The job (`phigate audit retain`) reads every
-- configured sink's position (the file sink's from its files, stdout's from audit_sink_cursors)
-- and passes the lowest as p_sink_bound: no leaf at or past it loses its events. NULL means no
-- sink is configured, and only then is a run bounded by the cutoff and the checkpoints alone.

-- The bound a run was given: the first leaf some configured sink had not delivered; NULL for runs
-- without a sink (and for those before this migration).
ALTER TABLE phigate.audit_retention_runs ADD COLUMN sink_bound bigint CHECK (sink_bound >= 0);

DROP FUNCTION phigate.retain_audit_events(timestamptz, text);

-- As 030's, with the range also ending at p_sink_bound. The run's audit event says so: detail
-- 'leaves:<from>-<to>:sink:<n>' (without a sink, 'leaves:<from>-<to>' as before). held_back
-- is how many leaves the cutoff and the checkpoints would have let go that the bound kept.
CREATE FUNCTION phigate.retain_audit_events(p_before timestamptz, p_request_id text, p_sink_bound bigint)
RETURNS TABLE (run_id bigint, from_leaf bigint, to_leaf bigint, events bigint, event_id bigint, held_back bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  v_from bigint;
  v_to bigint;
  v_unbounded bigint;
  v_signed bigint;
  v_run bigint;
  v_events bigint;
  v_event bigint;
  v_v1 bigint;
  v_records bigint;
BEGIN
  IF p_before IS NULL OR p_before > clock_timestamp() THEN
    RAISE EXCEPTION 'retention cutoff must be in the past' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_sink_bound < 0 THEN
    RAISE EXCEPTION 'retention sink bound must not be negative' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- One run at a time: the next starts where the last ended.
  PERFORM pg_advisory_xact_lock(7340217017);
  SELECT coalesce(max(r.to_leaf), 0) INTO v_from FROM phigate.audit_retention_runs r;
  SELECT coalesce(max(c.tree_size), 0) INTO v_signed FROM phigate.audit_checkpoints c;
  SELECT l.leaf_index INTO v_unbounded
    FROM phigate.audit_log l
    LEFT JOIN phigate.audit_events_v1 e ON e.id = l.event_id
    LEFT JOIN phigate.audit_records r ON r.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    WHERE l.leaf_index >= v_from AND l.leaf_index < v_signed
      AND NOT coalesce(coalesce(e.occurred_at, r.occurred_at) < p_before, false)
    ORDER BY l.leaf_index LIMIT 1;
  v_unbounded := coalesce(v_unbounded, greatest(v_signed, v_from));
  -- A sink behind the previous run (added since, or a run before this bound existed) removes nothing.
  v_to := CASE WHEN p_sink_bound IS NULL THEN v_unbounded ELSE least(v_unbounded, greatest(p_sink_bound, v_from)) END;
  SELECT count(e.id) + coalesce(sum(cardinality(r.actions)), 0) INTO v_events
    FROM phigate.audit_log l
    LEFT JOIN phigate.audit_events_v1 e ON e.id = l.event_id
    LEFT JOIN phigate.audit_records r ON r.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    WHERE l.leaf_index >= v_from AND l.leaf_index < v_to;
  INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name, detail)
    VALUES (p_request_id, session_user, 'system', 'HSYSADMIN', 'retention', 'AuditLog',
            format('leaves:%s-%s', v_from, v_to) || CASE WHEN p_sink_bound IS NULL THEN '' ELSE format(':sink:%s', p_sink_bound) END)
    RETURNING id INTO v_event;
  INSERT INTO phigate.audit_retention_runs (cutoff, from_leaf, to_leaf, events, event_id, sink_bound)
    VALUES (p_before, v_from, v_to, v_events, v_event, p_sink_bound) RETURNING id INTO v_run;
  DELETE FROM phigate.audit_events_v1 e USING phigate.audit_log l
    WHERE l.event_id = e.id AND l.leaf_index >= v_from AND l.leaf_index < v_to;
  GET DIAGNOSTICS v_v1 = ROW_COUNT;
  DELETE FROM phigate.audit_records r USING phigate.audit_log l
    WHERE r.id = l.event_id >> 16 AND l.event_id & 65535 = 0 AND l.leaf_index >= v_from AND l.leaf_index < v_to;
  GET DIAGNOSTICS v_records = ROW_COUNT;
  -- Every leaf of the range has its event or record (a missing one ends the range above).
  IF v_v1 + v_records <> v_to - v_from THEN
    RAISE EXCEPTION 'retention found % events and % records for % leaves', v_v1, v_records, v_to - v_from
      USING ERRCODE = 'data_corrupted';
  END IF;
  RETURN QUERY SELECT v_run, v_from, v_to, v_events, v_event, v_unbounded - v_to;
END
$$;
REVOKE ALL ON FUNCTION phigate.retain_audit_events(timestamptz, text, bigint) FROM PUBLIC;
