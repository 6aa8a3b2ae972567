-- The audit writer's charged batch in one round trip (issue #10; src/audit/writer.ts).
--
-- A batch of reads charged its principals' PHI minutes (charge_phi_usage, 009) in one round trip
-- and inserted its records and committed in a second, since a refused charge writes the request's
-- refusal instead of its events. Refusals come only at a cap, so the writer now first sends the
-- charge, the INSERT and COMMIT together, the INSERT written as if every charge were accepted,
-- with this check in the same statement: when a charge was refused (or has no verdict) the
-- statement fails with PH430, the COMMIT behind it answers ROLLBACK, nothing of the batch is kept
-- (charges included), and the writer sends the batch again the old way, charge first.
CREATE FUNCTION phigate.expect_charges_accepted(accepted bigint, expected integer) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
  IF accepted IS DISTINCT FROM expected::bigint THEN
    RAISE EXCEPTION 'a PHI charge of the batch was refused'
      USING ERRCODE = 'PH430', DETAIL = format('%s of %s accepted', accepted, expected);
  END IF;
  RETURN expected;
END
$$;
REVOKE ALL ON FUNCTION phigate.expect_charges_accepted(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.expect_charges_accepted(bigint, integer) TO phigate_app;
