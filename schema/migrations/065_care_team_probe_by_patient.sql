-- The policies' care-team probe asks care_team by the patient alone (issue #10; bench/README.md,
-- "PostgreSQL's CPU for the page's read transaction"). Same rules, same rows.
--
-- patients_select and encounters_select ask, of every row a physician's or nurse's statement reads,
-- whether a care_team row holds (the row's patient, the actor). Two indexes answer that from the
-- index alone since 064: care_team_pkey (patient_id, subject) and care_team_subject (subject,
-- patient_id), both carrying the clinic that care_team's own row security asks for. Their costs are
-- nearly equal, and which one a generic plan takes differed by version: PostgreSQL 15 probed the key,
-- PostgreSQL 18 care_team_subject, whose descent compares the subject first, a text compared under
-- the database's collation (strcoll for C.UTF-8 and most others) at every step: ~300 probes a
-- physician's 100-patient page, a tenth of its instructions.
--
-- The actor is now compared under COLLATE "C": byte equality, which is what equality under any
-- deterministic collation (every collation this database can be created with by default) already
-- is, so the same care_team rows match. A comparison under another collation than an index's
-- cannot be that index's condition, so neither index is searched by the subject: the probe
-- descends care_team_pkey by the patient's uuid (a memcmp) to the patient's few care-team rows and
-- checks their subject and clinic from the index. care_team_subject still serves every read by the
-- actor (a care-team page's walk, encounters' care-team facts), which compare under the column's
-- collation as before.
--
-- encounters_select stays patients_select with the encounter's patient and clinic in place of the
-- patient's id and clinic (053; test/integration/encounter-row-security.test.ts).

ALTER POLICY patients_select ON phigate.patients USING (
  (
    clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
    AND CASE (SELECT phigate.ctx_patient_reach())
          WHEN 'clinic' THEN true
          WHEN 'care_team' THEN EXISTS (
            SELECT 1 FROM phigate.care_team ct
            WHERE ct.patient_id = patients.id AND ct.subject = (SELECT phigate.ctx_actor()) COLLATE "C"
            OFFSET 0
          )
          ELSE false
        END
  )
  OR EXISTS (
    SELECT 1 FROM phigate.break_glass_grants g
    WHERE g.patient_id = patients.id AND g.clinic_id = patients.clinic_id
      AND g.actor = (SELECT phigate.ctx_actor()) AND g.revoked_at IS NULL
      AND g.expires_at > clock_timestamp() AND g.role = ANY ((SELECT phigate.ctx_roles_for('breakGlass'))::text[])
      AND (g.cross_clinic OR patients.clinic_id = ANY (phigate.ctx_clinics()))
  )
);

ALTER POLICY encounters_select ON phigate.encounters USING (
  (
    clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
    AND CASE (SELECT phigate.ctx_patient_reach())
          WHEN 'clinic' THEN true
          WHEN 'care_team' THEN EXISTS (
            SELECT 1 FROM phigate.care_team ct
            WHERE ct.patient_id = encounters.patient_id AND ct.subject = (SELECT phigate.ctx_actor()) COLLATE "C"
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
