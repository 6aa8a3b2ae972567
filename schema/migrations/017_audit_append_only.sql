-- Append-only for everyone (issue 13, item 6; docs/audit-log.md, "Append-only and retention").
--
-- The evidence tables refuse UPDATE, DELETE and TRUNCATE for every role, the owner and superusers
-- included (a trigger fires for them too; only disabling it, which `audit verify` then shows,
-- gets past it). The one way rows leave is phigate.retain_audit_events: it removes the events of
-- a prefix of leaves past the retention period, keeps their leaves' hashes, every head and every
-- checkpoint (so the rest still verifies), and records itself as an audit event.
--
-- How the trigger tells the retention job from anyone else: the job first writes its run, with its
-- own transaction id, to audit_retention_runs, which no role but the owner may insert into. The
-- trigger lets a DELETE of an event through only when a run of the current transaction covers the
-- event's leaf and the event is older than the run's cutoff. A setting (set_config) would not do:
-- any role may set any custom setting.

-- What may remove audit events: nobody through a grant.
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER
  ON phigate.audit_events, phigate.audit_batches, phigate.audit_log, phigate.audit_log_heads, phigate.audit_checkpoints
  FROM PUBLIC, phigate_app, phigate_auditor, phigate_analytics;

-- One row per retention run. Events of leaves [from_leaf, to_leaf) were removed; their hashes stay
-- in audit_log. Runs remove consecutive ranges: from_leaf is the previous run's to_leaf.
CREATE TABLE phigate.audit_retention_runs (
  id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tx        xid8 NOT NULL UNIQUE DEFAULT pg_current_xact_id(),
  cutoff    timestamptz NOT NULL,
  from_leaf bigint NOT NULL CHECK (from_leaf >= 0),
  to_leaf   bigint NOT NULL,
  events    bigint NOT NULL CHECK (events >= 0),
  -- The run's own audit event ('retention'): a run without one was not made by the job.
  event_id  bigint NOT NULL,
  run_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
  CHECK (to_leaf >= from_leaf)
);
REVOKE ALL ON phigate.audit_retention_runs FROM PUBLIC;
-- The gateway's sink deliverer reads where retention ended, to go on after it.
GRANT SELECT ON phigate.audit_retention_runs TO phigate_app, phigate_auditor;

CREATE FUNCTION phigate.refuse_audit_rewrite() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  -- Nested: the query is planned only where OLD is an event row.
  IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_events' THEN
    IF EXISTS (
      SELECT 1
      FROM phigate.audit_retention_runs r
      JOIN phigate.audit_log l ON l.event_id = OLD.id
      WHERE r.tx = pg_current_xact_id() AND l.leaf_index >= r.from_leaf AND l.leaf_index < r.to_leaf AND OLD.occurred_at < r.cutoff
    ) THEN
      RETURN OLD;
    END IF;
  END IF;
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege', HINT = 'events leave only through phigate audit retain';
END
$$;

-- Replaces 002's and 009's triggers on these tables (their function stays, for the other tables that use it).
DROP TRIGGER audit_events_append_only ON phigate.audit_events;
DROP TRIGGER audit_events_no_truncate ON phigate.audit_events;
DROP TRIGGER audit_batches_append_only ON phigate.audit_batches;
DROP TRIGGER audit_batches_no_truncate ON phigate.audit_batches;

DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['audit_events', 'audit_batches', 'audit_log', 'audit_log_heads', 'audit_checkpoints', 'audit_retention_runs'] LOOP
    EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON phigate.%I FOR EACH ROW EXECUTE FUNCTION phigate.refuse_audit_rewrite()',
                   t || '_append_only', t);
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON phigate.%I FOR EACH STATEMENT EXECUTE FUNCTION phigate.refuse_audit_rewrite()',
                   t || '_no_truncate', t);
  END LOOP;
END
$$;

-- The retention job records itself in the trail it prunes.
ALTER TABLE phigate.audit_events DROP CONSTRAINT audit_events_action_check;
ALTER TABLE phigate.audit_events ADD CONSTRAINT audit_events_action_check
  CHECK (action IN ('read', 'masked', 'denied', 'create', 'update', 'key', 'limited',
                    'search', 'refused', 'break_glass', 'review', 'api_key', 'alert', 'view', 'retention'));

-- Removes the events of the longest run of leaves, after the previous run's, that are all older
-- than p_before and covered by a signed checkpoint; stops at the first younger (or missing) event.
-- Writes the run and its audit event (action 'retention', detail 'leaves:<from>-<to>', actor the
-- database role that ran it) in the same transaction, so either all of it happens or none.
CREATE FUNCTION phigate.retain_audit_events(p_before timestamptz, p_request_id text)
RETURNS TABLE (run_id bigint, from_leaf bigint, to_leaf bigint, events bigint, event_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  v_from bigint;
  v_to bigint;
  v_signed bigint;
  v_run bigint;
  v_events bigint;
  v_event bigint;
BEGIN
  IF p_before IS NULL OR p_before > clock_timestamp() THEN
    RAISE EXCEPTION 'retention cutoff must be in the past' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- One run at a time: the next starts where the last ended.
  PERFORM pg_advisory_xact_lock(7340217017);
  SELECT coalesce(max(r.to_leaf), 0) INTO v_from FROM phigate.audit_retention_runs r;
  SELECT coalesce(max(c.tree_size), 0) INTO v_signed FROM phigate.audit_checkpoints c;
  SELECT l.leaf_index INTO v_to
    FROM phigate.audit_log l LEFT JOIN phigate.audit_events e ON e.id = l.event_id
    WHERE l.leaf_index >= v_from AND l.leaf_index < v_signed AND (e.id IS NULL OR e.occurred_at >= p_before)
    ORDER BY l.leaf_index LIMIT 1;
  v_to := coalesce(v_to, greatest(v_signed, v_from));
  INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name, detail)
    VALUES (p_request_id, session_user, 'system', 'HSYSADMIN', 'retention', 'AuditLog', format('leaves:%s-%s', v_from, v_to))
    RETURNING id INTO v_event;
  -- Every leaf of the range has its event (a missing one ends the range above).
  INSERT INTO phigate.audit_retention_runs (cutoff, from_leaf, to_leaf, events, event_id)
    VALUES (p_before, v_from, v_to, v_to - v_from, v_event) RETURNING id INTO v_run;
  DELETE FROM phigate.audit_events e USING phigate.audit_log l
    WHERE l.event_id = e.id AND l.leaf_index >= v_from AND l.leaf_index < v_to;
  GET DIAGNOSTICS v_events = ROW_COUNT;
  IF v_events <> v_to - v_from THEN
    RAISE EXCEPTION 'retention found % events for % leaves', v_events, v_to - v_from USING ERRCODE = 'data_corrupted';
  END IF;
  RETURN QUERY SELECT v_run, v_from, v_to, v_events, v_event;
END
$$;
REVOKE ALL ON FUNCTION phigate.retain_audit_events(timestamptz, text) FROM PUBLIC;

-- Roots of the log's tiles of 1,024 leaves (leaf_index start .. start + 1023), cached by
-- `phigate audit prove` so that a proof reads about n / 1024 tile roots instead of n leaf hashes.
-- Derived from audit_log, not evidence: prove checks each proof against the signed root before
-- printing it and falls back to the leaves when a tile is wrong; verify does not read them.
CREATE TABLE phigate.audit_log_tiles (
  start bigint PRIMARY KEY CHECK (start >= 0 AND start % 1024 = 0),
  root  bytea NOT NULL CHECK (length(root) = 32)
);
REVOKE ALL ON phigate.audit_log_tiles FROM PUBLIC;
GRANT SELECT ON phigate.audit_log_tiles TO phigate_auditor;
