-- PostgreSQL's CPU per read (issue 10; bench/README.md, "PostgreSQL's CPU per read").
--
-- What is left of the principal's minute, read with BEGIN by every read. As written in 007 (a
-- function returning one record, calling the volatile clock_timestamp()) PostgreSQL could not
-- inline it: every call parsed and planned its body again, about 50 us of a read's PostgreSQL
-- time. A set-returning SQL function that is STABLE throughout is inlined into the calling
-- statement, which is then planned once per connection like the gateway's other statements.
-- The minute is taken from statement_timestamp(), the start of that same statement, a few
-- microseconds before clock_timestamp() would read it; charges (009) still use the clock.
DROP FUNCTION phigate.phi_usage_left(text, text, integer, integer);

CREATE FUNCTION phigate.phi_usage_left(p_actor_kind text, p_actor text, cap_rows integer, cap_values integer)
RETURNS TABLE (rows_left integer, values_left integer, retry_after_seconds integer)
LANGUAGE sql STABLE AS $$
  SELECT greatest(cap_rows - coalesce(u.rows_used, 0), 0),
         greatest(cap_values - coalesce(u.values_used, 0), 0),
         greatest(1, ceil(extract(epoch FROM w.minute + interval '1 minute' - statement_timestamp())))::integer
  FROM (SELECT date_trunc('minute', statement_timestamp()) AS minute) w
  LEFT JOIN phigate.phi_usage u ON u.actor_kind = p_actor_kind AND u.actor = p_actor AND u.minute = w.minute
$$;

REVOKE ALL ON FUNCTION phigate.phi_usage_left(text, text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.phi_usage_left(text, text, integer, integer) TO phigate_app;
