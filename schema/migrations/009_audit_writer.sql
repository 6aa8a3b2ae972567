-- The audit writer (src/audit/writer.ts): reads commit their audit rows in batches shared by
-- concurrent requests, on the writer's own connection, and the PHI they showed is charged to each
-- principal's minute in that same transaction.

-- Ids and time come from the database only. The id is GENERATED ALWAYS (002); with INSERT granted
-- column by column, without `id` and `occurred_at`, the gateway can neither name an id
-- (OVERRIDING SYSTEM VALUE needs the privilege on the column) nor choose a row's time.
REVOKE INSERT ON phigate.audit_events FROM phigate_app;

-- Every row the gateway writes names the batch that wrote it: a request transaction (a write) or
-- one of the writer's group commits.
ALTER TABLE phigate.audit_events ADD COLUMN batch_id uuid;

GRANT INSERT (request_id, actor, actor_kind, role, purpose, break_glass, client_addr, action, type_name, field,
              patient_id, record_id, detail, grant_id, credential_id, batch_id)
  ON phigate.audit_events TO phigate_app;

-- One row per committed batch, in the batch's own transaction: after a connection lost during
-- COMMIT the writer looks its batch up to know whether it committed. `events` is the number of
-- rows the batch wrote, checked before it could commit (expect_audit_rows below), so that later a
-- batch whose rows in audit_events are not exactly `events` rows shows rows added or lost.
CREATE TABLE phigate.audit_batches (
  id           uuid PRIMARY KEY,
  committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  events       integer NOT NULL CHECK (events > 0)
);
CREATE TRIGGER audit_batches_append_only BEFORE UPDATE OR DELETE ON phigate.audit_batches
  FOR EACH ROW EXECUTE FUNCTION phigate.refuse_audit_change();
CREATE TRIGGER audit_batches_no_truncate BEFORE TRUNCATE ON phigate.audit_batches
  FOR EACH STATEMENT EXECUTE FUNCTION phigate.refuse_audit_change();
REVOKE ALL ON phigate.audit_batches FROM PUBLIC;
GRANT INSERT (id, events), SELECT (id, events) ON phigate.audit_batches TO phigate_app;
GRANT SELECT ON phigate.audit_batches TO phigate_auditor;

-- The statement that inserts a batch's rows ends with this check: a trigger that drops rows
-- (RETURN NULL), or anything else that makes the count differ, aborts the transaction before its
-- COMMIT, which is pipelined behind it and then answers ROLLBACK.
CREATE FUNCTION phigate.expect_audit_rows(written bigint, expected integer) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
  IF written IS DISTINCT FROM expected::bigint THEN
    RAISE EXCEPTION 'audit rows written differ from the events of the batch'
      USING ERRCODE = 'PH500', DETAIL = format('%s of %s', written, expected);
  END IF;
  RETURN expected;
END
$$;

-- The PHI shown by the reads of one batch, charged to their principals' current minute. One call
-- per batch; never raises for a cap. Requests arrive in order (p_n); per principal, each is
-- accepted while the minute's total stays within the cap, else refused (and charged nothing).
-- Principals are locked in one global order (actor_kind, actor in the "C" collation), so the
-- batches of several writers, in one process or many, cannot deadlock on each other; a write
-- (consume_phi_usage, 007) locks a single principal's row, last, so it closes no cycle either.
CREATE FUNCTION phigate.charge_phi_usage(
  p_actor_kinds text[], p_actors text[], p_rows integer[], p_values integer[], p_cap_rows integer[], p_cap_values integer[])
RETURNS TABLE (n integer, accepted boolean, retry_after_seconds integer)
LANGUAGE plpgsql AS $$
DECLARE
  window_minute timestamptz := date_trunc('minute', clock_timestamp());
  retry integer := greatest(1, ceil(extract(epoch FROM date_trunc('minute', clock_timestamp()) + interval '1 minute' - clock_timestamp())))::integer;
  principal record;
  req record;
  used_rows integer;
  used_values integer;
  added_rows integer;
  added_values integer;
BEGIN
  FOR principal IN
    SELECT DISTINCT k COLLATE "C" AS kind, a COLLATE "C" AS actor
    FROM unnest(p_actor_kinds, p_actors) AS t(k, a)
    ORDER BY 1, 2
  LOOP
    SELECT u.rows_used, u.values_used INTO used_rows, used_values FROM phigate.phi_usage u
      WHERE u.actor_kind = principal.kind AND u.actor = principal.actor AND u.minute = window_minute FOR UPDATE;
    IF NOT FOUND THEN
      DELETE FROM phigate.phi_usage u WHERE u.actor_kind = principal.kind AND u.actor = principal.actor AND u.minute < window_minute;
      -- A concurrent first charge of this minute may insert the row meanwhile: take it, locked.
      INSERT INTO phigate.phi_usage AS u (actor_kind, actor, minute, rows_used, values_used)
        VALUES (principal.kind, principal.actor, window_minute, 0, 0)
        ON CONFLICT (actor_kind, actor, minute) DO UPDATE SET rows_used = u.rows_used
        RETURNING u.rows_used, u.values_used INTO used_rows, used_values;
    END IF;
    added_rows := 0;
    added_values := 0;
    FOR req IN
      SELECT t.n, t.r, t.v, t.cr, t.cv
      FROM unnest(p_actor_kinds, p_actors, p_rows, p_values, p_cap_rows, p_cap_values) WITH ORDINALITY AS t(k, a, r, v, cr, cv, n)
      WHERE t.k = principal.kind AND t.a = principal.actor
      ORDER BY t.n
    LOOP
      n := req.n;
      retry_after_seconds := retry;
      accepted := used_rows + added_rows + req.r <= req.cr AND used_values + added_values + req.v <= req.cv;
      IF accepted THEN
        added_rows := added_rows + req.r;
        added_values := added_values + req.v;
      END IF;
      RETURN NEXT;
    END LOOP;
    IF added_rows > 0 OR added_values > 0 THEN
      UPDATE phigate.phi_usage u SET rows_used = u.rows_used + added_rows, values_used = u.values_used + added_values
        WHERE u.actor_kind = principal.kind AND u.actor = principal.actor AND u.minute = window_minute;
    END IF;
  END LOOP;
END
$$;

REVOKE ALL ON FUNCTION phigate.expect_audit_rows(bigint, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION phigate.charge_phi_usage(text[], text[], integer[], integer[], integer[], integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.expect_audit_rows(bigint, integer) TO phigate_app;
GRANT EXECUTE ON FUNCTION phigate.charge_phi_usage(text[], text[], integer[], integer[], integer[], integer[]) TO phigate_app;
