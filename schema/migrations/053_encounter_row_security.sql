-- Encounters judged on their own row, not by reading their patient again (issue #10; bench/README.md,
-- "Encounters' row security on the encounter's own columns"). Same rule, same rows.
--
-- Until here encounters_select (012) asked, for every encounter, whether its patient row exists in
-- the encounter's clinic and is visible: a probe of patients_clinic_id (its clinic ids compared
-- through the database's collation) and then the whole patients_select policy on that row. That
-- policy reads nothing of the patient but its id and its clinic, and an encounter carries both. So
-- the same policy is now asked of the encounter's (patient_id, clinic_id) directly, which is the
-- same question as long as an encounter's clinic is always its patient's. The foreign key below
-- makes it so for every writer, the owner included (referential checks are not subject to row
-- security, and only a superuser can switch them off): no encounter can name a clinic other than
-- its patient's, and neither can be changed to differ. Nobody but the owner may update
-- patients.clinic_id or encounters.clinic_id; a patient who has encounters now cannot be moved to
-- another clinic at all, as one with a care team could not (005), so an encounter is never judged
-- by a clinic its patient has left. A database that already holds an encounter whose clinic is not
-- its patient's (visible to nobody under 012) stops this migration at the key, naming the row:
-- where it belongs is the operator's decision, not a migration's.
--
-- The key uses patients_id_clinic (005) and replaces encounters' key on patient_id alone, which it
-- implies, so an insert still checks one key against patients.

ALTER TABLE phigate.encounters
  ADD CONSTRAINT encounters_patient_clinic FOREIGN KEY (patient_id, clinic_id) REFERENCES phigate.patients (id, clinic_id);
ALTER TABLE phigate.encounters DROP CONSTRAINT encounters_patient_id_fkey;

-- patients_select (043) with encounters.patient_id for patients.id and encounters.clinic_id for
-- patients.clinic_id; test/integration/encounter-row-security.test.ts fails when the two differ in
-- anything else, or when patients gains another policy the app role reads through.
ALTER POLICY encounters_select ON phigate.encounters USING (
  (
    clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
    AND CASE (SELECT phigate.ctx_patient_reach())
          WHEN 'clinic' THEN true
          WHEN 'care_team' THEN EXISTS (
            SELECT 1 FROM phigate.care_team ct
            WHERE ct.patient_id = encounters.patient_id AND ct.subject = (SELECT phigate.ctx_actor())
            OFFSET 0
          )
          ELSE false
        END
  )
  OR EXISTS (
    SELECT 1 FROM phigate.break_glass_grants g
    WHERE g.patient_id = encounters.patient_id AND g.clinic_id = encounters.clinic_id
      AND g.actor = (SELECT phigate.ctx_actor()) AND g.revoked_at IS NULL
      AND g.expires_at > clock_timestamp() AND g.role = ANY ((SELECT phigate.ctx_roles_for('breakGlass'))::text[])
      AND (g.cross_clinic OR encounters.clinic_id = ANY (phigate.ctx_clinics()))
  )
);
