-- The newest patient key of a row, joined to every patient read (src/db/patients.ts, KEY_JOIN), is
-- read from the primary key's index alone (issue #10; bench/README.md, "`patientBySsn` at one
-- connection, second round").
--
-- KEY_JOIN asks for version, clinic_version and wrapped of the patient's highest version. With the
-- primary key on (patient_id, version) only, each lookup read the index leaf and then the table's
-- heap page of that key: two pages per patient, both random, so at 1,000,000 patients (patient_keys
-- 128 MB, its primary key 30 MB) two of the four pages of a by-SSN read that were most often outside
-- shared buffers (bench/README.md, "`patientBySsn` on 1,000,000 patients on PostgreSQL 15"). With
-- clinic_version and wrapped carried in the primary key's index as non-key columns, the join is an
-- index-only scan once the table's pages are all-visible: keys are written once per patient and
-- rotation, and never updated but when re-wrapped or shredded, so vacuum keeps them so.
--
-- The primary key's own index gains the columns, rather than a second index beside it: one index
-- to write per key, and uniqueness still checked on (patient_id, version) alone. The new index is
-- built first (writes to patient_keys wait, reads do not) and then takes the constraint's place
-- (the constraint's name and meaning unchanged; nothing references it).

CREATE UNIQUE INDEX patient_keys_covering ON phigate.patient_keys (patient_id, version) INCLUDE (clinic_version, wrapped);
ALTER TABLE phigate.patient_keys
  DROP CONSTRAINT patient_keys_pkey,
  ADD CONSTRAINT patient_keys_pkey PRIMARY KEY USING INDEX patient_keys_covering;
