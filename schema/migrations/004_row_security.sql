-- Row security. The gateway sets its request context with set_config(name, value, true) right
-- after BEGIN (src/db/transaction.ts); the settings vanish at COMMIT or ROLLBACK, so a pooled
-- connection never carries one request's identity into the next. With no context every policy
-- below sees an empty clinic list and an empty role list: zero rows.
--
-- The role lists mirror the row scopes of policies/default.yaml (care_team: physician, nurse;
-- clinic: registrar, billing, clinic_admin; none: compliance). test/integration/row-security.test.ts
-- checks the two agree. The gateway only puts a role into phigate.roles when the principal holds it
-- AND satisfies its MFA requirement, so a token without MFA sees nothing here either.
--
-- The functions are wrapped in (SELECT ...) in the policies so PostgreSQL evaluates them once per
-- statement (an InitPlan), not once per row.

CREATE FUNCTION phigate.ctx_actor() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT nullif(current_setting('phigate.actor', true), '') $$;

CREATE FUNCTION phigate.ctx_clinics() RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce(string_to_array(nullif(current_setting('phigate.clinics', true), ''), ','), '{}'::text[])
$$;

CREATE FUNCTION phigate.ctx_roles() RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce(string_to_array(nullif(current_setting('phigate.roles', true), ''), ','), '{}'::text[])
$$;

GRANT EXECUTE ON FUNCTION phigate.ctx_actor(), phigate.ctx_clinics(), phigate.ctx_roles() TO phigate_app;

ALTER TABLE phigate.patients ENABLE ROW LEVEL SECURITY;
ALTER TABLE phigate.patients FORCE ROW LEVEL SECURITY;
ALTER TABLE phigate.encounters ENABLE ROW LEVEL SECURITY;
ALTER TABLE phigate.encounters FORCE ROW LEVEL SECURITY;
ALTER TABLE phigate.care_team ENABLE ROW LEVEL SECURITY;
ALTER TABLE phigate.care_team FORCE ROW LEVEL SECURITY;

-- Patients: clinic isolation for everyone; physicians and nurses only on the care team.
CREATE POLICY patients_select ON phigate.patients FOR SELECT TO phigate_app USING (
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
);

CREATE POLICY patients_insert ON phigate.patients FOR INSERT TO phigate_app WITH CHECK (
  clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
  AND (SELECT phigate.ctx_roles()) && ARRAY['registrar']
);

CREATE POLICY patients_update ON phigate.patients FOR UPDATE TO phigate_app
USING (
  clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
  AND (
    (SELECT phigate.ctx_roles()) && ARRAY['registrar']
    OR (
      (SELECT phigate.ctx_roles()) && ARRAY['physician']
      AND EXISTS (
        SELECT 1 FROM phigate.care_team ct
        WHERE ct.patient_id = patients.id AND ct.subject = (SELECT phigate.ctx_actor())
      )
    )
  )
)
WITH CHECK (clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[]));

-- Encounters: visible exactly when their patient is (the subquery is itself under patients' policy).
CREATE POLICY encounters_select ON phigate.encounters FOR SELECT TO phigate_app USING (
  clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
  AND EXISTS (SELECT 1 FROM phigate.patients p WHERE p.id = encounters.patient_id)
);

CREATE POLICY encounters_insert ON phigate.encounters FOR INSERT TO phigate_app WITH CHECK (
  clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
  AND (SELECT phigate.ctx_roles()) && ARRAY['physician', 'nurse']
  AND EXISTS (
    SELECT 1 FROM phigate.care_team ct
    WHERE ct.patient_id = encounters.patient_id AND ct.subject = (SELECT phigate.ctx_actor())
  )
  AND EXISTS (
    SELECT 1 FROM phigate.patients p
    WHERE p.id = encounters.patient_id AND p.clinic_id = encounters.clinic_id
  )
);

-- Care teams: readable within one's clinics (the patients policy needs it); managed by clinic admins.
CREATE POLICY care_team_select ON phigate.care_team FOR SELECT TO phigate_app USING (
  clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
);

CREATE POLICY care_team_insert ON phigate.care_team FOR INSERT TO phigate_app WITH CHECK (
  clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
  AND (SELECT phigate.ctx_roles()) && ARRAY['clinic_admin']
  AND EXISTS (
    SELECT 1 FROM phigate.patients p
    WHERE p.id = care_team.patient_id AND p.clinic_id = care_team.clinic_id
  )
);

CREATE POLICY care_team_delete ON phigate.care_team FOR DELETE TO phigate_app USING (
  clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
  AND (SELECT phigate.ctx_roles()) && ARRAY['clinic_admin']
);

-- Analytics reads only the non-PHI columns granted in 003_grants.sql, across clinics.
CREATE POLICY patients_analytics ON phigate.patients FOR SELECT TO phigate_analytics USING (true);
CREATE POLICY encounters_analytics ON phigate.encounters FOR SELECT TO phigate_analytics USING (true);
