-- Per-minute PHI limits (policies/default.yaml, `limits`). The counters live here, not in the
-- gateway's memory, so that every replica draws on one window per principal, and not in Redis, so
-- that the database the gateway cannot run without is all it needs. Counts only: who (the same
-- actor the audit trail names), which minute, how many patient rows and PHI values. No PHI.
--
-- A request reserves its share up front (reserve_phi_usage) and gives back what it did not use
-- when it ends (src/db/phi-usage.ts), so concurrent requests of one principal cannot together
-- take more than its per-minute limit.
CREATE TABLE phigate.phi_usage (
  actor_kind  text NOT NULL CHECK (actor_kind IN ('user', 'partner')),
  actor       text NOT NULL,
  minute      timestamptz NOT NULL CHECK (minute = date_trunc('minute', minute)),
  rows_used   integer NOT NULL CHECK (rows_used >= 0),
  values_used integer NOT NULL CHECK (values_used >= 0),
  PRIMARY KEY (actor_kind, actor, minute)
);

-- One statement, so one round trip and its own transaction: the row lock serialises the
-- principal's concurrent requests for the few microseconds of the arithmetic only. Past minutes
-- of the principal are dropped on the way, so the table holds about one row per active principal.
-- The minute and Retry-After come from the database clock, the one clock all replicas share.
CREATE FUNCTION phigate.reserve_phi_usage(
  p_actor_kind text, p_actor text, want_rows integer, want_values integer, cap_rows integer, cap_values integer,
  OUT window_minute timestamptz, OUT granted_rows integer, OUT granted_values integer, OUT retry_after_seconds integer)
LANGUAGE plpgsql AS $$
DECLARE
  used_rows integer;
  used_values integer;
BEGIN
  window_minute := date_trunc('minute', clock_timestamp());
  DELETE FROM phigate.phi_usage u WHERE u.actor_kind = p_actor_kind AND u.actor = p_actor AND u.minute < window_minute;
  INSERT INTO phigate.phi_usage (actor_kind, actor, minute, rows_used, values_used)
    VALUES (p_actor_kind, p_actor, window_minute, 0, 0) ON CONFLICT DO NOTHING;
  SELECT u.rows_used, u.values_used INTO used_rows, used_values FROM phigate.phi_usage u
    WHERE u.actor_kind = p_actor_kind AND u.actor = p_actor AND u.minute = window_minute FOR UPDATE;
  granted_rows := least(want_rows, greatest(cap_rows - used_rows, 0));
  granted_values := least(want_values, greatest(cap_values - used_values, 0));
  -- A request that could not show a single value gets nothing, so it holds back nobody else's share.
  IF granted_rows = 0 OR granted_values = 0 THEN
    granted_rows := 0;
    granted_values := 0;
  ELSE
    UPDATE phigate.phi_usage u SET rows_used = u.rows_used + granted_rows, values_used = u.values_used + granted_values
      WHERE u.actor_kind = p_actor_kind AND u.actor = p_actor AND u.minute = window_minute;
  END IF;
  retry_after_seconds := greatest(1, ceil(extract(epoch FROM window_minute + interval '1 minute' - clock_timestamp())))::integer;
END
$$;

REVOKE ALL ON phigate.phi_usage FROM PUBLIC;
REVOKE ALL ON FUNCTION phigate.reserve_phi_usage(text, text, integer, integer, integer, integer) FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON phigate.phi_usage TO phigate_app;
GRANT EXECUTE ON FUNCTION phigate.reserve_phi_usage(text, text, integer, integer, integer, integer) TO phigate_app;

-- An audit row for every time a limit stops a field or a request.
ALTER TABLE phigate.audit_events DROP CONSTRAINT audit_events_action_check;
ALTER TABLE phigate.audit_events ADD CONSTRAINT audit_events_action_check
  CHECK (action IN ('read', 'masked', 'denied', 'create', 'update', 'key', 'limited'));
