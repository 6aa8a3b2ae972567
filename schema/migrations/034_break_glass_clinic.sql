-- A break-glass grant belongs to its patient's clinic, and opens that patient in that clinic only.
--
-- Until here the opening request set a grant's clinic_id itself, after the insert, to whatever it
-- passed (012: "set once, by its actor"), and row security never compared it with the patient's
-- clinic. The grant's clinic decides which reviewers see it (grants_select), so a grant could be
-- filed under a clinic other than its patient's, out of sight of the reviewers of the clinic whose
-- patient it opened; and a grant with no clinic at all opened its patient too. From here the
-- database binds the clinic at insert from the patient row itself, nobody can change it, and row
-- security opens a patient through a grant only when the grant's clinic is the patient's (and,
-- unless the grant reaches across clinics, one of the request's).

-- The patient's clinic, read from phigate.patient_clinics (015) as the owner: the inserting
-- request may not see the patient yet, which is why it asks for a grant. A patient that does not
-- exist leaves clinic_id null, which grants_insert refuses below exactly as it refuses a patient
-- beyond reach: the answer says nothing about which ids are patients elsewhere.
CREATE FUNCTION phigate.bind_grant_clinic() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  NEW.clinic_id := (SELECT pc.clinic_id FROM phigate.patient_clinics pc WHERE pc.patient_id = NEW.patient_id);
  RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION phigate.bind_grant_clinic() FROM PUBLIC;
CREATE TRIGGER break_glass_bind_clinic BEFORE INSERT ON phigate.break_glass_grants
  FOR EACH ROW EXECUTE FUNCTION phigate.bind_grant_clinic();

-- The clinic is never changed after the insert, by anyone; its end and its review stay set-once (012).
REVOKE UPDATE (clinic_id) ON phigate.break_glass_grants FROM phigate_app;
CREATE OR REPLACE FUNCTION phigate.guard_break_glass_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.clinic_id IS DISTINCT FROM OLD.clinic_id THEN
    RAISE EXCEPTION 'a grant''s clinic is its patient''s' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.revoked_at IS NOT NULL AND (NEW.revoked_at IS DISTINCT FROM OLD.revoked_at OR NEW.revoked_by IS DISTINCT FROM OLD.revoked_by) THEN
    RAISE EXCEPTION 'a grant is ended once' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.reviewed_at IS NOT NULL AND (NEW.reviewed_at, NEW.reviewed_by, NEW.review_outcome, NEW.review_comment)
       IS DISTINCT FROM (OLD.reviewed_at, OLD.reviewed_by, OLD.review_outcome, OLD.review_comment) THEN
    RAISE EXCEPTION 'a grant is reviewed once' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;

-- A grant is opened in a role the policy lets break the glass, on a patient that exists, within
-- the request's clinics unless it reaches across them (policy breakGlass.reach, 012).
DROP POLICY grants_insert ON phigate.break_glass_grants;
CREATE POLICY grants_insert ON phigate.break_glass_grants FOR INSERT TO phigate_app WITH CHECK (
  actor = (SELECT phigate.ctx_actor())
  AND role = ANY ((SELECT phigate.ctx_roles_for('breakGlass'))::text[])
  AND revoked_at IS NULL AND reviewed_at IS NULL
  AND clinic_id IS NOT NULL
  AND (cross_clinic OR clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[]))
  AND expires_at <= clock_timestamp() + interval '24 hours'
);

-- Patients: as in 020, but a grant opens its patient only in the grant's own clinic.
DROP POLICY patients_select ON phigate.patients;
CREATE POLICY patients_select ON phigate.patients FOR SELECT TO phigate_app USING (
  (
    clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
    AND (
      (SELECT phigate.ctx_has_scope('clinic', NULL))
      OR ((SELECT phigate.ctx_has_scope('partner_key', NULL)) AND (SELECT phigate.ctx_partner_key_live()))
      OR (
        (SELECT phigate.ctx_has_scope('care_team', NULL))
        AND EXISTS (
          SELECT 1 FROM phigate.care_team ct
          WHERE ct.patient_id = patients.id AND ct.subject = (SELECT phigate.ctx_actor())
        )
      )
    )
  )
  OR EXISTS (
    SELECT 1 FROM phigate.break_glass_grants g
    WHERE g.patient_id = patients.id AND g.clinic_id = patients.clinic_id
      AND g.actor = (SELECT phigate.ctx_actor()) AND g.revoked_at IS NULL
      AND g.expires_at > clock_timestamp() AND g.role = ANY ((SELECT phigate.ctx_roles_for('breakGlass'))::text[])
      AND (g.cross_clinic OR patients.clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[]))
  )
);
