-- Retention ends at a signed checkpoint, never at a row's own time (docs/audit-log.md, "Append-only
-- and retention").
--
-- 070's run ended its range at the first leaf whose event or record has an occurred_at inside the
-- period, under the largest checkpoint whatever its age. occurred_at is a column: whoever can write
-- the rows back-dates the records at the front of the log, and the next routine run deletes them,
-- and with them every sign of the edit. The range now ends at a checkpoint the caller names by its
-- tree size and its whole signed note: the job (`phigate audit retain`) has checked the note's
-- signature with the log's public key, which this function cannot do, and chosen the largest
-- checkpoint whose signed time (its `time` line, checkpoint.ts) is before the cutoff: every leaf
-- under it was committed before that time. What this function can check itself, it does, and
-- refuses the run otherwise: the note is the stored note of a checkpoint of that size, says that
-- size, and carries exactly one well-formed time line, before the cutoff. A checkpoint without one
-- (signed before the line existed) bounds nothing. A NULL checkpoint removes nothing (the run is
-- still recorded and audited). The leaves' own times are still read, but only to end the range
-- earlier (a forward-dated row keeps events longer; no row's time lets any go sooner). Otherwise the
-- function is 070's.

DROP FUNCTION phigate.retain_audit_events(timestamptz, text, bigint);

CREATE FUNCTION phigate.retain_audit_events(p_before timestamptz, p_request_id text, p_sink_bound bigint,
                                            p_checkpoint_size bigint, p_checkpoint_note text)
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
  v_records3 bigint;
  v_first3 bigint;
  v_last3 bigint;
  v_bad_record bigint;
  v_bad_slot integer;
  v_slots bigint;
  v_listed bigint;
  v_lines text[];
  v_times text[];
  v_signed_at timestamptz;
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
  IF (p_checkpoint_size IS NULL) <> (p_checkpoint_note IS NULL) THEN
    RAISE EXCEPTION 'retention needs both the checkpoint''s size and its note, or neither' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_checkpoint_size IS NULL THEN
    v_signed := v_from;
  ELSE
    IF NOT EXISTS (SELECT 1 FROM phigate.audit_checkpoints c WHERE c.tree_size = p_checkpoint_size AND c.note = p_checkpoint_note) THEN
      RAISE EXCEPTION 'retention bound: no stored checkpoint of size % has that note', p_checkpoint_size USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The note's body (C2SP tlog-checkpoint): origin, size, root, then extension lines; the blank
    -- line before the signatures ends it. Read as checkpoint.ts reads it: one exact time line.
    v_lines := string_to_array(split_part(p_checkpoint_note, E'\n\n', 1), E'\n');
    SELECT array_agg(l) INTO v_times FROM unnest(v_lines[4:]) l WHERE l LIKE 'time %';
    IF v_lines[2] IS DISTINCT FROM p_checkpoint_size::text OR cardinality(v_times) IS DISTINCT FROM 1
       OR v_times[1] !~ '^time [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$' THEN
      RAISE EXCEPTION 'retention bound: checkpoint % carries no signed time, so it bounds nothing', p_checkpoint_size USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_signed_at := substr(v_times[1], 6)::timestamptz;
    IF v_signed_at >= p_before THEN
      RAISE EXCEPTION 'retention bound: checkpoint % was signed at %, not before the cutoff %', p_checkpoint_size, v_signed_at, p_before
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_signed := p_checkpoint_size;
  END IF;
  SELECT l.leaf_index INTO v_unbounded
    FROM phigate.audit_log l
    LEFT JOIN phigate.audit_events_v1 e ON e.id = l.event_id
    LEFT JOIN phigate.audit_records r ON r.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    LEFT JOIN phigate.audit_records_v3 r3 ON r3.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    WHERE l.leaf_index >= v_from AND l.leaf_index < v_signed
      AND NOT coalesce(coalesce(e.occurred_at, r.occurred_at, r3.occurred_at) < p_before, false)
    ORDER BY l.leaf_index LIMIT 1;
  v_unbounded := coalesce(v_unbounded, greatest(v_signed, v_from));
  -- A sink behind the previous run (added since, or a run before this bound existed) removes nothing.
  v_to := CASE WHEN p_sink_bound IS NULL THEN v_unbounded ELSE least(v_unbounded, greatest(p_sink_bound, v_from)) END;
  SELECT count(e.id) + coalesce(sum(cardinality(r.actions)), 0) + coalesce(sum(cardinality(r3.record_ids)), 0) INTO v_events
    FROM phigate.audit_log l
    LEFT JOIN phigate.audit_events_v1 e ON e.id = l.event_id
    LEFT JOIN phigate.audit_records r ON r.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    LEFT JOIN phigate.audit_records_v3 r3 ON r3.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    WHERE l.leaf_index >= v_from AND l.leaf_index < v_to;
  -- Before anything is written or deleted: every listing row the run would take (those of ids
  -- from its first v3 record to its last that no v3 record left in place holds) must be a slot of
  -- a record it removes, with that slot's patient. A row forged there is refused, not taken away
  -- unseen: `audit verify` reports it (src/audit/verify/listing.ts) until someone accounts for it.
  -- A statement of its own, which reads the records as they are before the run removes any.
  WITH removed AS MATERIALIZED (
    SELECT r.id, r.patient_ids
    FROM phigate.audit_log l JOIN phigate.audit_records_v3 r ON r.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    WHERE l.leaf_index >= v_from AND l.leaf_index < v_to
  ), span AS (
    SELECT min(m.id) AS lo, max(m.id) AS hi, coalesce(sum(cardinality(m.patient_ids)), 0) AS slots FROM removed m
  ), bad AS (
    SELECT ap.record_id, ap.slot
    FROM span s
    JOIN phigate.audit_record_patients ap ON ap.record_id BETWEEN s.lo AND s.hi
    LEFT JOIN removed m ON m.id = ap.record_id
    WHERE CASE WHEN m.id IS NULL THEN NOT EXISTS (SELECT 1 FROM phigate.audit_records_v3 r WHERE r.id = ap.record_id)
               ELSE m.patient_ids[ap.slot] IS DISTINCT FROM ap.patient_id END
    ORDER BY ap.record_id, ap.slot LIMIT 1
  )
  SELECT s.slots, b.record_id, b.slot INTO v_slots, v_bad_record, v_bad_slot FROM span s LEFT JOIN bad b ON true;
  IF v_bad_record IS NOT NULL THEN
    RAISE EXCEPTION 'retention refused: phigate.audit_record_patients lists slot % of record %, which no v3 record this run removes holds', v_bad_slot, v_bad_record
      USING ERRCODE = 'data_corrupted';
  END IF;
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
  WITH gone AS (
    DELETE FROM phigate.audit_records_v3 r USING phigate.audit_log l
      WHERE r.id = l.event_id >> 16 AND l.event_id & 65535 = 0 AND l.leaf_index >= v_from AND l.leaf_index < v_to
      RETURNING r.id
  )
  SELECT count(*), min(g.id), max(g.id) INTO v_records3, v_first3, v_last3 FROM gone g;
  -- Their patients' rows, which may leave once their records have (refuse_audit_rewrite).
  DELETE FROM phigate.audit_record_patients ap
    WHERE ap.record_id BETWEEN v_first3 AND v_last3
      AND NOT EXISTS (SELECT 1 FROM phigate.audit_records_v3 r WHERE r.id = ap.record_id);
  GET DIAGNOSTICS v_listed = ROW_COUNT;
  IF v_listed <> v_slots THEN
    RAISE EXCEPTION 'retention refused: phigate.audit_record_patients held % rows for the % patient slots of the v3 records this run removes; run audit verify', v_listed, v_slots
      USING ERRCODE = 'data_corrupted';
  END IF;
  -- Every leaf of the range has its event or record (a missing one ends the range above).
  IF v_v1 + v_records + v_records3 <> v_to - v_from THEN
    RAISE EXCEPTION 'retention found % events and % records for % leaves', v_v1, v_records + v_records3, v_to - v_from
      USING ERRCODE = 'data_corrupted';
  END IF;
  RETURN QUERY SELECT v_run, v_from, v_to, v_events, v_event, v_unbounded - v_to;
END
$$;
REVOKE ALL ON FUNCTION phigate.retain_audit_events(timestamptz, text, bigint, bigint, text) FROM PUBLIC;
