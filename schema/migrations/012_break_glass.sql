-- Break-glass: a clinician's time-limited, audited access to one patient outside its usual row
-- scope, for an emergency (src/records/break-glass.ts). Row security honours a grant while it is
-- live by the database clock, and not one second after: every check below reads clock_timestamp(),
-- not the transaction's start, so a long request cannot carry a lapsed grant.
--
-- A grant is never extended: expires_at cannot be updated by anyone (no column privilege), and a
-- new emergency is a new grant, a new audit event and a new alert.
CREATE TABLE phigate.break_glass_grants (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  actor          text NOT NULL,
  -- The role the grant was opened in; it applies only while the principal still holds that role
  -- with its MFA requirement met (phigate.roles).
  role           text NOT NULL CHECK (role ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  patient_id     uuid NOT NULL REFERENCES phigate.patients (id),
  -- Filled in by the opening transaction once the patient is visible through the grant; compliance
  -- reviews the grants of its clinics by it.
  clinic_id      text REFERENCES phigate.clinics (id),
  -- Whether the grant reaches a patient outside the clinics of the actor's token (policy: breakGlass.reach).
  cross_clinic   boolean NOT NULL,
  -- The clinician's justification, shown to the reviewers. Bounded; never part of an audit row or a log line.
  reason         text NOT NULL CHECK (char_length(reason) BETWEEN 1 AND 1000),
  request_id     text NOT NULL,
  granted_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
  expires_at     timestamptz NOT NULL,
  revoked_at     timestamptz,
  revoked_by     text,
  reviewed_at    timestamptz,
  reviewed_by    text,
  review_outcome text CHECK (review_outcome IN ('justified', 'unjustified', 'needs_follow_up')),
  review_comment text CHECK (char_length(review_comment) <= 2000),
  CHECK (expires_at > granted_at AND expires_at <= granted_at + interval '24 hours'),
  CHECK ((reviewed_at IS NULL) = (review_outcome IS NULL) AND (reviewed_at IS NULL) = (reviewed_by IS NULL)),
  -- Separation of duties: nobody reviews their own emergency access.
  CHECK (reviewed_by IS DISTINCT FROM actor)
);
CREATE INDEX break_glass_live ON phigate.break_glass_grants (actor, patient_id, expires_at DESC) WHERE revoked_at IS NULL;
CREATE INDEX break_glass_unreviewed ON phigate.break_glass_grants (clinic_id, granted_at) WHERE reviewed_at IS NULL;
CREATE INDEX break_glass_daily ON phigate.break_glass_grants (actor, granted_at);

-- What a grant may be set to after it is opened: its clinic once (by its actor), its end (revoke),
-- its review. Never its actor, patient, reason, times or reach.
CREATE FUNCTION phigate.guard_break_glass_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.clinic_id IS NOT NULL AND NEW.clinic_id IS DISTINCT FROM OLD.clinic_id THEN
    RAISE EXCEPTION 'a grant''s clinic is set once' USING ERRCODE = 'insufficient_privilege';
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
CREATE TRIGGER break_glass_guard BEFORE UPDATE ON phigate.break_glass_grants
  FOR EACH ROW EXECUTE FUNCTION phigate.guard_break_glass_update();
CREATE TRIGGER break_glass_no_delete BEFORE DELETE ON phigate.break_glass_grants
  FOR EACH ROW EXECUTE FUNCTION phigate.refuse_audit_change();

REVOKE ALL ON phigate.break_glass_grants FROM PUBLIC;
GRANT SELECT ON phigate.break_glass_grants TO phigate_app, phigate_auditor;
GRANT INSERT (actor, role, patient_id, cross_clinic, reason, request_id, expires_at) ON phigate.break_glass_grants TO phigate_app;
GRANT UPDATE (clinic_id, revoked_at, revoked_by, reviewed_at, reviewed_by, review_outcome, review_comment)
  ON phigate.break_glass_grants TO phigate_app;

ALTER TABLE phigate.break_glass_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE phigate.break_glass_grants FORCE ROW LEVEL SECURITY;
-- An actor sees and ends its own grants; reviewers (the roles policies/ grants reviewBreakGlass:
-- compliance) see and review the grants of their clinics.
CREATE FUNCTION phigate.ctx_reviewer() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT phigate.ctx_roles() && ARRAY['compliance'] $$;
GRANT EXECUTE ON FUNCTION phigate.ctx_reviewer() TO phigate_app;

CREATE POLICY grants_select ON phigate.break_glass_grants FOR SELECT TO phigate_app USING (
  actor = (SELECT phigate.ctx_actor())
  OR ((SELECT phigate.ctx_reviewer()) AND clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[]))
);
CREATE POLICY grants_insert ON phigate.break_glass_grants FOR INSERT TO phigate_app WITH CHECK (
  actor = (SELECT phigate.ctx_actor())
  AND role = ANY ((SELECT phigate.ctx_roles())::text[])
  AND revoked_at IS NULL AND reviewed_at IS NULL AND clinic_id IS NULL
  AND expires_at <= clock_timestamp() + interval '24 hours'
);
CREATE POLICY grants_update ON phigate.break_glass_grants FOR UPDATE TO phigate_app
USING (
  actor = (SELECT phigate.ctx_actor())
  OR ((SELECT phigate.ctx_reviewer()) AND clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[]))
)
WITH CHECK (
  (actor = (SELECT phigate.ctx_actor()) AND reviewed_at IS NULL)
  OR ((SELECT phigate.ctx_reviewer()) AND clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[]))
);
-- /metrics counts overdue reviews across clinics with no request context (phigate.overdue_break_glass).
CREATE POLICY grants_owner_count ON phigate.break_glass_grants FOR SELECT TO phigate_owner USING (true);

CREATE FUNCTION phigate.overdue_break_glass(p_hours integer) RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT count(*) FROM phigate.break_glass_grants
  WHERE reviewed_at IS NULL AND granted_at < clock_timestamp() - make_interval(hours => p_hours)
$$;
REVOKE ALL ON FUNCTION phigate.overdue_break_glass(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.overdue_break_glass(integer) TO phigate_app;

-- Patients: a live grant shows its patient to its actor, within the actor's clinics unless the
-- grant reaches across them. The care-team branch and clinic isolation are otherwise as in 004.
DROP POLICY patients_select ON phigate.patients;
CREATE POLICY patients_select ON phigate.patients FOR SELECT TO phigate_app USING (
  (
    clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
    AND (
      (SELECT phigate.ctx_roles()) && ARRAY['registrar', 'billing', 'clinic_admin']
      OR (
        (SELECT phigate.ctx_roles()) && ARRAY['physician', 'nurse']
        AND EXISTS (
          SELECT 1 FROM phigate.care_team ct
          WHERE ct.patient_id = patients.id AND ct.subject = (SELECT phigate.ctx_actor())
        )
      )
    )
  )
  OR EXISTS (
    SELECT 1 FROM phigate.break_glass_grants g
    WHERE g.patient_id = patients.id AND g.actor = (SELECT phigate.ctx_actor()) AND g.revoked_at IS NULL
      AND g.expires_at > clock_timestamp() AND g.role = ANY ((SELECT phigate.ctx_roles())::text[])
      AND (g.cross_clinic OR patients.clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[]))
  )
);

-- Encounters follow their patient (whose policy above is the whole rule), in the patient's clinic.
DROP POLICY encounters_select ON phigate.encounters;
CREATE POLICY encounters_select ON phigate.encounters FOR SELECT TO phigate_app USING (
  EXISTS (SELECT 1 FROM phigate.patients p WHERE p.id = encounters.patient_id AND p.clinic_id = encounters.clinic_id)
);
