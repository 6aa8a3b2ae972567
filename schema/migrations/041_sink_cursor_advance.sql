-- A sink's cursor row bounds retention (036, 037): retention removes no leaf at or past the lowest
-- row. With UPDATE on the table, a stolen gateway credential could move any sink's row ahead of
-- what that sink holds, or delete it, and the next retention run would remove events the sink
-- never got, leaving them nowhere. The gateway now moves a row only through this function: forward
-- only, never past the log's end, one named row, and it can neither write the table directly nor
-- delete a row (retiring a sink stays the owner's DELETE, docs/audit-log.md).
--
-- What the database cannot tell is which sink a caller delivers to: every gateway is phigate_app.
-- A stolen credential can still claim a sink delivered up to the log's end; the file sink's
-- retention reads its files too (the lower wins, sink-positions.ts), and the claim cannot pass
-- what was sealed when it was made.

-- Refused moves raise PH409 (the row stays as it was); the deliverer's batch then fails and its
-- transaction rolls back, as any failed cursor write does (src/audit/sink/deliver.ts).
CREATE FUNCTION phigate.advance_audit_sink_cursor(p_sink text, p_next_leaf bigint, p_next_checkpoint bigint)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  v_leaves bigint;
  v_checkpoints bigint;
BEGIN
  IF p_sink IS NULL OR p_next_leaf IS NULL OR p_next_checkpoint IS NULL OR p_next_leaf < 0 OR p_next_checkpoint < 0 THEN
    RAISE EXCEPTION 'audit sink cursor needs a sink and two non-negative positions' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- A position says "delivered up to here": never past the leaves sealed and checkpoints signed so far.
  SELECT coalesce(max(leaf_index) + 1, 0) INTO v_leaves FROM phigate.audit_log;
  SELECT coalesce(max(tree_size) + 1, 0) INTO v_checkpoints FROM phigate.audit_checkpoints;
  IF p_next_leaf > v_leaves OR p_next_checkpoint > v_checkpoints THEN
    RAISE EXCEPTION 'audit sink cursor % cannot pass the end of the log', p_sink USING ERRCODE = 'PH409';
  END IF;
  INSERT INTO phigate.audit_sink_cursors AS c (sink, next_leaf, next_checkpoint)
    VALUES (p_sink, p_next_leaf, p_next_checkpoint)
  ON CONFLICT (sink) DO UPDATE SET next_leaf = excluded.next_leaf, next_checkpoint = excluded.next_checkpoint, updated_at = clock_timestamp()
    WHERE c.next_leaf <= excluded.next_leaf AND c.next_checkpoint <= excluded.next_checkpoint;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'audit sink cursor % only moves forward', p_sink USING ERRCODE = 'PH409';
  END IF;
END
$$;
REVOKE ALL ON FUNCTION phigate.advance_audit_sink_cursor(text, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.advance_audit_sink_cursor(text, bigint, bigint) TO phigate_app;

-- Reading stays: stdout's position is its row (src/audit/sink/stdout.ts).
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON phigate.audit_sink_cursors FROM phigate_app;
