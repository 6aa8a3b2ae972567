-- The audit writer's fixed cost per batch in PostgreSQL (issue #10; src/audit/insert.ts).
--
-- Profiles of the writer's backend (bench/README.md, branches writerpg and gather) put most of a
-- batch's CPU in work done once per statement or per call, whatever the batch holds: PL/pgSQL
-- calls, and the CHECK constraints of the tables a batch writes, whose stored expressions
-- PostgreSQL reads back (stringToNode of pg_constraint.conbin), simplifies and compiles for every
-- statement that inserts or updates a row. This migration keeps every rule and makes both cheaper.

-- One call checks what a batch's statement wrote, where three did: expect_charges_accepted (044),
-- audit_batch_events (029) and expect_audit_rows (009). The charges first: when one was refused
-- (p_accepted short of p_charges) the statement fails with PH430 and the writer sends the batch
-- again with its verdicts; then the events the batch's records hold, counted as stored, after
-- every trigger, against the events meant to be written (PH500). A batch that charges nothing
-- passes 0 and 0. The three functions stay for gateways of the previous release, which call them
-- until they are replaced.
CREATE FUNCTION phigate.audit_batch_written(p_batch uuid, p_events integer, p_accepted bigint, p_charges integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  n bigint;
BEGIN
  IF p_accepted IS DISTINCT FROM p_charges::bigint THEN
    RAISE EXCEPTION 'a PHI charge of the batch was refused'
      USING ERRCODE = 'PH430', DETAIL = format('%s of %s accepted', p_accepted, p_charges);
  END IF;
  SELECT sum(cardinality(r.actions)) INTO n
  FROM phigate.audit_records r
  WHERE r.tx = pg_current_xact_id() AND r.batch_id = p_batch;
  IF n IS DISTINCT FROM p_events::bigint THEN
    RAISE EXCEPTION 'audit rows written differ from the events of the batch'
      USING ERRCODE = 'PH500', DETAIL = format('%s of %s', n, p_events);
  END IF;
  RETURN p_events;
END
$$;
REVOKE ALL ON FUNCTION phigate.audit_batch_written(uuid, integer, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.audit_batch_written(uuid, integer, bigint, integer) TO phigate_app;

-- audit_records' seven CHECKs (028) as one, with the same rules. An ARRAY[...] of literals is
-- stored as one node per element and folded into an array again by every statement; a '{...}'
-- literal is stored as the array itself. One constraint is also read, simplified and compiled
-- once per statement instead of seven times. NULL credential_id passes as before: a CHECK fails
-- only on false, and a conjunction with a null term is false only when another term is.
-- Adding it checks every stored record again.
ALTER TABLE phigate.audit_records
  DROP CONSTRAINT audit_records_actor_kind_check,
  DROP CONSTRAINT audit_records_credential_id_check,
  DROP CONSTRAINT audit_records_actions_check,
  DROP CONSTRAINT audit_records_check,
  DROP CONSTRAINT audit_records_check1,
  DROP CONSTRAINT audit_records_actions_check1,
  DROP CONSTRAINT audit_records_details_check,
  ADD CONSTRAINT audit_records_valid CHECK (
    actor_kind = ANY ('{user,partner,system,anonymous}'::text[])
    AND array_ndims(actions) = 1 AND cardinality(actions) BETWEEN 1 AND 65536
    AND cardinality(type_names) = cardinality(actions) AND cardinality(fields) = cardinality(actions)
    AND cardinality(record_ids) = cardinality(actions) AND cardinality(details) = cardinality(actions)
    AND array_position(actions, NULL) IS NULL AND array_position(type_names, NULL) IS NULL
    AND actions <@ '{read,masked,denied,create,update,key,limited,search,refused,break_glass,review,api_key,alert,view,retention}'::text[]
    AND credential_id ~ '^[A-Za-z0-9_-]{1,64}$'
    AND phigate.audit_details_valid(details)
  );

-- phi_usage's four CHECKs (006), read for every charge the writer makes, likewise as one.
ALTER TABLE phigate.phi_usage
  DROP CONSTRAINT phi_usage_actor_kind_check,
  DROP CONSTRAINT phi_usage_minute_check,
  DROP CONSTRAINT phi_usage_rows_used_check,
  DROP CONSTRAINT phi_usage_values_used_check,
  ADD CONSTRAINT phi_usage_valid CHECK (
    actor_kind = ANY ('{user,partner}'::text[]) AND minute = date_trunc('minute', minute) AND rows_used >= 0 AND values_used >= 0
  );
