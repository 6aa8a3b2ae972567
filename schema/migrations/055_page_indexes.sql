-- A page's request transaction in PostgreSQL, its indexes (issue #10; bench/README.md, "The page's
-- request transaction in PostgreSQL"). Same rows, same names; only what each index holds changes.
--
-- encounters_patient gains the encounter's id after its time: a page's encounters are asked in the
-- order (patient_id, occurred_at DESC, id) (src/db/patients.ts, encountersByPatientIds), which the
-- index now holds whole, so PostgreSQL 17 and later return them from the scan of the page's ids in
-- that order instead of sorting them again (6% of a registrar's page transaction with the next).
--
-- care_team_subject carries the row's clinic: care_team's row security (care_team_select) asks
-- every care-team row read for its clinic, and every read of a physician's or nurse's asks the care
-- team by (subject, patient_id), the patients and encounters policies per row. With the clinic in
-- the index those reads are answered from it, without a visit to the table for each.
--
-- Each is built beside the index it replaces, which is then dropped and its name taken, so a read
-- never lacks one; building reads the existing rows once and blocks writes to the table meanwhile.
CREATE INDEX encounters_patient_next ON phigate.encounters (patient_id, occurred_at DESC, id);
DROP INDEX phigate.encounters_patient;
ALTER INDEX phigate.encounters_patient_next RENAME TO encounters_patient;

CREATE INDEX care_team_subject_next ON phigate.care_team (subject, patient_id) INCLUDE (clinic_id);
DROP INDEX phigate.care_team_subject;
ALTER INDEX phigate.care_team_subject_next RENAME TO care_team_subject;
