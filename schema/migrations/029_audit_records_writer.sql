-- The audit writer on the narrow layout (issue #10): the writer inserts rows of
-- phigate.audit_records (028) directly, one per (request, patient, role, purpose, break-glass,
-- grant), and the readers of the trail that filter and page read the records, not the view.

-- How many events the records of batch p_batch hold, as stored: counted after every trigger has
-- had its say, so a trigger that drops a record or trims its arrays shows as fewer events than
-- the batch meant to write (expect_audit_rows, 009). The writer's statement calls it after its
-- INSERT of the records (a VOLATILE function's queries see the rows its calling statement has
-- inserted so far); RETURNING cannot count them, as it would need SELECT on audit_records, which
-- the gateway's role does not have. It reads this transaction's records only (audit_records_tx).
CREATE FUNCTION phigate.audit_batch_events(p_batch uuid) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  n bigint;
BEGIN
  SELECT sum(cardinality(r.actions)) INTO n
  FROM phigate.audit_records r
  WHERE r.tx = pg_current_xact_id() AND r.batch_id = p_batch;
  RETURN n;
END
$$;
REVOKE ALL ON FUNCTION phigate.audit_batch_events(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.audit_batch_events(uuid) TO phigate_app;
