-- Per-minute PHI limits, charged when the request commits instead of reserved before it runs.
--
-- 006 reserved a share up front and gave back the unused part afterwards: two extra transactions,
-- each with its own synchronous commit, on the pool beside every request, and the principal's
-- concurrent requests queued on its row for the length of both. Now the usage is charged by the
-- request's own transaction, as its last statement before COMMIT (src/db/phi-usage.ts):
--   * before: phi_usage_left() reads what is left of the minute, without a lock, in the same round
--     trip as BEGIN and the first query; the request shows no more than that;
--   * at the end: consume_phi_usage() adds what was shown and refuses (SQLSTATE PH429) if that
--     would take the minute past its cap, which rolls the whole request back, answer included.
-- Concurrent requests of one principal may each have read the same "left"; whichever commits
-- second past the cap is refused whole, so the committed usage never exceeds the cap. The row
-- lock is held from the charge to the end of COMMIT only, one server-side step, no round trip.

DROP FUNCTION phigate.reserve_phi_usage(text, text, integer, integer, integer, integer);

CREATE FUNCTION phigate.phi_usage_left(
  p_actor_kind text, p_actor text, cap_rows integer, cap_values integer,
  OUT rows_left integer, OUT values_left integer, OUT retry_after_seconds integer)
LANGUAGE sql STABLE AS $$
  WITH w AS (SELECT date_trunc('minute', clock_timestamp()) AS minute)
  SELECT greatest(cap_rows - coalesce(u.rows_used, 0), 0),
         greatest(cap_values - coalesce(u.values_used, 0), 0),
         greatest(1, ceil(extract(epoch FROM w.minute + interval '1 minute' - clock_timestamp())))::integer
  FROM w LEFT JOIN phigate.phi_usage u
    ON u.actor_kind = p_actor_kind AND u.actor = p_actor AND u.minute = w.minute
$$;

-- The minute and Retry-After come from the database clock, the one clock all replicas share.
-- Past minutes of the principal are dropped when its first request of a new minute is charged,
-- so the table holds about one row per active principal.
CREATE FUNCTION phigate.consume_phi_usage(
  p_actor_kind text, p_actor text, p_rows integer, p_values integer, cap_rows integer, cap_values integer)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  window_minute timestamptz := date_trunc('minute', clock_timestamp());
  used_rows integer;
  used_values integer;
BEGIN
  IF p_rows = 0 AND p_values = 0 THEN
    RETURN;
  END IF;
  -- The principal's row of this minute usually exists: one UPDATE. The first request of a minute
  -- drops the principal's past minutes and inserts; ON CONFLICT covers a concurrent first.
  UPDATE phigate.phi_usage u SET rows_used = u.rows_used + p_rows, values_used = u.values_used + p_values
    WHERE u.actor_kind = p_actor_kind AND u.actor = p_actor AND u.minute = window_minute
    RETURNING u.rows_used, u.values_used INTO used_rows, used_values;
  IF NOT FOUND THEN
    DELETE FROM phigate.phi_usage u WHERE u.actor_kind = p_actor_kind AND u.actor = p_actor AND u.minute < window_minute;
    INSERT INTO phigate.phi_usage AS u (actor_kind, actor, minute, rows_used, values_used)
      VALUES (p_actor_kind, p_actor, window_minute, p_rows, p_values)
      ON CONFLICT (actor_kind, actor, minute) DO UPDATE
        SET rows_used = u.rows_used + excluded.rows_used, values_used = u.values_used + excluded.values_used
      RETURNING u.rows_used, u.values_used INTO used_rows, used_values;
  END IF;
  IF used_rows > cap_rows OR used_values > cap_values THEN
    RAISE EXCEPTION 'PHI limit per minute reached'
      USING ERRCODE = 'PH429',
            DETAIL = greatest(1, ceil(extract(epoch FROM window_minute + interval '1 minute' - clock_timestamp())))::integer::text;
  END IF;
END
$$;

REVOKE ALL ON FUNCTION phigate.phi_usage_left(text, text, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION phigate.consume_phi_usage(text, text, integer, integer, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.phi_usage_left(text, text, integer, integer) TO phigate_app;
GRANT EXECUTE ON FUNCTION phigate.consume_phi_usage(text, text, integer, integer, integer, integer) TO phigate_app;
