-- PostgreSQL's CPU per read, second round (issue #10; bench/README.md, "Second round: migration
-- 035"). Same rules, same guarantees; what each change measured is there.

-- Row security of patients (034) with one question about the request's row scopes instead of
-- four. A read's statements run as cached generic plans, so what is left of their cost is mostly
-- the executor's: 034's policy asked phigate.ctx_has_scope three times per statement (each a
-- PL/pgSQL call running its own query) and held the partner key's liveness as a fourth InitPlan,
-- in every statement reading patients or encounters. Now the request's reach is one call, once
-- per statement. The break-glass subquery is 034's, unchanged: a page reads past the rows of
-- other clinics, and for each of those it is the cheapest way to ask.

-- How far the request's roles reach into its clinics: 'clinic' (a clinic scope, or a partner key
-- scope whose key is live: every patient), 'care_team' (its care teams' patients), or null. A
-- clinic reach holds every care-team patient, so the widest scope decides, as the ORs of 034 did.
CREATE FUNCTION phigate.ctx_patient_reach() RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
  RETURN (
    SELECT CASE
             WHEN bool_or(s.row_scope = 'clinic') OR (bool_or(s.row_scope = 'partner_key') AND phigate.ctx_partner_key_live()) THEN 'clinic'
             WHEN bool_or(s.row_scope = 'care_team') THEN 'care_team'
           END
    FROM phigate.role_scopes s
    WHERE s.role = ANY (phigate.ctx_roles())
  );
END
$$;

REVOKE ALL ON FUNCTION phigate.ctx_patient_reach() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.ctx_patient_reach() TO phigate_app;

DROP POLICY patients_select ON phigate.patients;
CREATE POLICY patients_select ON phigate.patients FOR SELECT TO phigate_app USING (
  (
    clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
    AND CASE (SELECT phigate.ctx_patient_reach())
          WHEN 'clinic' THEN true
          WHEN 'care_team' THEN EXISTS (
            SELECT 1 FROM phigate.care_team ct
            WHERE ct.patient_id = patients.id AND ct.subject = (SELECT phigate.ctx_actor())
          )
          ELSE false
        END
  )
  OR EXISTS (
    SELECT 1 FROM phigate.break_glass_grants g
    WHERE g.patient_id = patients.id AND g.clinic_id = patients.clinic_id
      AND g.actor = (SELECT phigate.ctx_actor()) AND g.revoked_at IS NULL
      AND g.expires_at > clock_timestamp() AND g.role = ANY ((SELECT phigate.ctx_roles_for('breakGlass'))::text[])
      AND (g.cross_clinic OR patients.clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[]))
  )
);

-- The CHECK of every audit record's details (028) called an SQL function that unnests the array
-- and aggregates: an executor run per record, ~13 us each (a page's batch writes 100 records). The
-- same rule as a PL/pgSQL loop, compiled once per connection, costs a few microseconds. The
-- constraint keeps pointing at this function, so nothing is revalidated. The operator is named
-- with its schema instead of a SET search_path, whose save and restore would be paid per record.
CREATE OR REPLACE FUNCTION phigate.audit_details_valid(details text[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  d text;
BEGIN
  FOREACH d IN ARRAY details LOOP
    IF d IS NOT NULL AND NOT (d OPERATOR(pg_catalog.~) '^[a-z0-9_:.-]{1,64}$') THEN
      RETURN false;
    END IF;
  END LOOP;
  RETURN true;
END
$$;
