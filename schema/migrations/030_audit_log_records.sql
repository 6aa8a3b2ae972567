-- The Merkle log over the narrow audit layout (issue #10; docs/audit-log.md).
--
-- Since 028 the audit is stored as one row of phigate.audit_records per (request, patient, ...),
-- its events in parallel arrays. The log follows the storage: ONE leaf per record (canonical v2,
-- src/audit/canonical.ts), not one per event, so a page of 100 patients costs the sealer about a
-- hundred leaf rows and hashes instead of 800. The events written before 028
-- (phigate.audit_events_v1) stay leaves of their own (canonical v1), sealed and verified as before.
--
-- A leaf's key, stored in audit_log.event_id, is the id of its first event: a v1 event's id, or
-- a record's (id << 16). Record ids start above every v1 id >> 16 (028), so the keys of both kinds
-- never meet, and the event with id N lives in the leaf keyed N (v1) or (N >> 16) << 16 (record).
-- Leaves stay in (tx, key) order below the snapshot's xmin, exactly as 016 sealed events.

-- The leaf rows, one shape for both kinds: a v1 event reads as a record of one event.
-- Each branch walks its own (tx, id) index and stops at p_limit; the merge keeps the first p_limit.
CREATE FUNCTION phigate.audit_leaves_to_seal(p_after_tx xid8, p_after_key bigint, p_limit integer)
RETURNS TABLE (tx xid8, key bigint, version smallint, occurred_at_us bigint, batch_id uuid, request_id text, actor text,
               actor_kind text, client_addr text, credential_id text, role text, purpose text, break_glass boolean,
               grant_id uuid, patient_id uuid, actions text[], type_names text[], fields text[], record_ids uuid[],
               details text[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT s.* FROM (
    (SELECT e.tx, e.id, 1::smallint, (extract(epoch FROM e.occurred_at) * 1000000)::bigint, e.batch_id, e.request_id,
            e.actor, e.actor_kind, e.client_addr, e.credential_id, e.role, e.purpose, e.break_glass, e.grant_id,
            e.patient_id, ARRAY[e.action], ARRAY[e.type_name], ARRAY[e.field], ARRAY[e.record_id], ARRAY[e.detail]
     FROM phigate.audit_events_v1 e
     WHERE (e.tx, e.id) > (p_after_tx, p_after_key) AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY e.tx, e.id
     LIMIT p_limit)
    UNION ALL
    -- (r.tx, r.id << 16) > (after_tx, after_key) is (r.tx, r.id) > (after_tx, after_key >> 16): the index's terms.
    (SELECT r.tx, r.id << 16, 2::smallint, (extract(epoch FROM r.occurred_at) * 1000000)::bigint, r.batch_id, r.request_id,
            r.actor, r.actor_kind, r.client_addr, r.credential_id, r.role, r.purpose, r.break_glass, r.grant_id,
            r.patient_id, r.actions, r.type_names, r.fields, r.record_ids, r.details
     FROM phigate.audit_records r
     WHERE (r.tx, r.id) > (p_after_tx, p_after_key >> 16) AND r.tx < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY r.tx, r.id
     LIMIT p_limit)
  ) s
  ORDER BY 1, 2
  LIMIT p_limit
$$;

-- Sealed leaves from leaf p_from on, in leaf order, with what each was made from, for the sink.
CREATE FUNCTION phigate.audit_log_leaves(p_from bigint, p_limit integer)
RETURNS TABLE (leaf_index bigint, key bigint, version smallint, occurred_at_us bigint, batch_id uuid, request_id text,
               actor text, actor_kind text, client_addr text, credential_id text, role text, purpose text,
               break_glass boolean, grant_id uuid, patient_id uuid, actions text[], type_names text[], fields text[],
               record_ids uuid[], details text[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT l.leaf_index, l.event_id, x.*
  FROM (SELECT a.leaf_index, a.event_id FROM phigate.audit_log a WHERE a.leaf_index >= p_from ORDER BY a.leaf_index LIMIT p_limit) l
  CROSS JOIN LATERAL (
    SELECT 1::smallint, (extract(epoch FROM e.occurred_at) * 1000000)::bigint, e.batch_id, e.request_id, e.actor,
           e.actor_kind, e.client_addr, e.credential_id, e.role, e.purpose, e.break_glass, e.grant_id, e.patient_id,
           ARRAY[e.action], ARRAY[e.type_name], ARRAY[e.field], ARRAY[e.record_id], ARRAY[e.detail]
    FROM phigate.audit_events_v1 e WHERE e.id = l.event_id
    UNION ALL
    SELECT 2::smallint, (extract(epoch FROM r.occurred_at) * 1000000)::bigint, r.batch_id, r.request_id, r.actor,
           r.actor_kind, r.client_addr, r.credential_id, r.role, r.purpose, r.break_glass, r.grant_id, r.patient_id,
           r.actions, r.type_names, r.fields, r.record_ids, r.details
    FROM phigate.audit_records r WHERE r.id = l.event_id >> 16 AND l.event_id & 65535 = 0
  ) x
  ORDER BY l.leaf_index
$$;

DROP FUNCTION phigate.audit_events_to_seal(xid8, bigint, integer);
DROP FUNCTION phigate.audit_log_entries(bigint, integer);
REVOKE ALL ON FUNCTION phigate.audit_leaves_to_seal(xid8, bigint, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION phigate.audit_log_leaves(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.audit_leaves_to_seal(xid8, bigint, integer) TO phigate_app;
GRANT EXECUTE ON FUNCTION phigate.audit_log_leaves(bigint, integer) TO phigate_app;

-- Append-only (017), on the tables that now hold the events: a DELETE of a v1 event or of a
-- whole record goes through only when a retention run of the current transaction covers its
-- leaf and it is older than the run's cutoff. Through the view (audit_events) nothing goes: its
-- INSTEAD OF trigger is not one of these tables.
CREATE OR REPLACE FUNCTION phigate.refuse_audit_rewrite() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  -- Nested: the query is planned only where OLD is an event or record row.
  IF TG_OP = 'DELETE' AND TG_WHEN = 'BEFORE' AND TG_LEVEL = 'ROW' AND TG_TABLE_SCHEMA = 'phigate'
     AND TG_TABLE_NAME IN ('audit_events_v1', 'audit_records') THEN
    IF EXISTS (
      SELECT 1
      FROM phigate.audit_retention_runs r
      JOIN phigate.audit_log l ON l.event_id = CASE WHEN TG_TABLE_NAME = 'audit_records' THEN OLD.id << 16 ELSE OLD.id END
      WHERE r.tx = pg_current_xact_id() AND l.leaf_index >= r.from_leaf AND l.leaf_index < r.to_leaf AND OLD.occurred_at < r.cutoff
    ) THEN
      RETURN OLD;
    END IF;
  END IF;
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege', HINT = 'events leave only through phigate audit retain';
END
$$;

-- Retention removes whole leaves: the v1 events and the records of the longest run of leaves,
-- after the previous run's, that are all older than p_before and under a signed checkpoint. A
-- record is removed with all its events or not at all, since its leaf hash is over all of them.
-- `events` (returned, and in the run's row) counts the events removed; to_leaf - from_leaf the leaves.
CREATE OR REPLACE FUNCTION phigate.retain_audit_events(p_before timestamptz, p_request_id text)
RETURNS TABLE (run_id bigint, from_leaf bigint, to_leaf bigint, events bigint, event_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  v_from bigint;
  v_to bigint;
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
  -- One run at a time: the next starts where the last ended.
  PERFORM pg_advisory_xact_lock(7340217017);
  SELECT coalesce(max(r.to_leaf), 0) INTO v_from FROM phigate.audit_retention_runs r;
  SELECT coalesce(max(c.tree_size), 0) INTO v_signed FROM phigate.audit_checkpoints c;
  SELECT l.leaf_index INTO v_to
    FROM phigate.audit_log l
    LEFT JOIN phigate.audit_events_v1 e ON e.id = l.event_id
    LEFT JOIN phigate.audit_records r ON r.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    WHERE l.leaf_index >= v_from AND l.leaf_index < v_signed
      AND NOT coalesce(coalesce(e.occurred_at, r.occurred_at) < p_before, false)
    ORDER BY l.leaf_index LIMIT 1;
  v_to := coalesce(v_to, greatest(v_signed, v_from));
  SELECT count(e.id) + coalesce(sum(cardinality(r.actions)), 0) INTO v_events
    FROM phigate.audit_log l
    LEFT JOIN phigate.audit_events_v1 e ON e.id = l.event_id
    LEFT JOIN phigate.audit_records r ON r.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    WHERE l.leaf_index >= v_from AND l.leaf_index < v_to;
  INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name, detail)
    VALUES (p_request_id, session_user, 'system', 'HSYSADMIN', 'retention', 'AuditLog', format('leaves:%s-%s', v_from, v_to))
    RETURNING id INTO v_event;
  INSERT INTO phigate.audit_retention_runs (cutoff, from_leaf, to_leaf, events, event_id)
    VALUES (p_before, v_from, v_to, v_events, v_event) RETURNING id INTO v_run;
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
  RETURN QUERY SELECT v_run, v_from, v_to, v_events, v_event;
END
$$;
REVOKE ALL ON FUNCTION phigate.retain_audit_events(timestamptz, text) FROM PUBLIC;
