-- care_team_insert (004) checked the patient with EXISTS (SELECT ... FROM phigate.patients), and
-- patients_select reads phigate.care_team: PostgreSQL expands policies relation by relation and
-- refuses a chain that comes back to the table being written (SQLSTATE 42P17, "infinite recursion
-- detected in policy"), so every INSERT into care_team by the app role failed and setCareTeam
-- answered INTERNAL.
--
-- The same rule, without reading patients through row security: a composite foreign key makes a
-- care-team row's clinic that of its patient (referential checks are not subject to row security),
-- and the policy keeps that clinic within the request's clinics and the role clinic_admin.
ALTER TABLE phigate.patients ADD CONSTRAINT patients_id_clinic UNIQUE (id, clinic_id);
ALTER TABLE phigate.care_team ADD CONSTRAINT care_team_patient_clinic
  FOREIGN KEY (patient_id, clinic_id) REFERENCES phigate.patients (id, clinic_id) ON DELETE CASCADE;

DROP POLICY care_team_insert ON phigate.care_team;
CREATE POLICY care_team_insert ON phigate.care_team FOR INSERT TO phigate_app WITH CHECK (
  clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
  AND (SELECT phigate.ctx_roles()) && ARRAY['clinic_admin']
);
