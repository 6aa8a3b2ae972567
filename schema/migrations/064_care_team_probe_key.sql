-- The care-team probe by patient first (issue #10; bench/README.md, "PostgreSQL's CPU for the page's
-- read transaction"). Same rows, same names; only what the primary key's index holds changes.
--
-- Row security asks "is the actor on this patient's care team" once per patient row and once per
-- encounter row a physician or nurse reads (patients_select, encounters_select: an EXISTS on
-- (patient_id, subject)), and care_team's own row security asks each care-team row it finds for its
-- clinic. The primary key (patient_id, subject) answered the first but not the second without a
-- visit to the table, so PostgreSQL probed care_team_subject (subject, patient_id) INCLUDE
-- (clinic_id) instead: a descent whose every comparison starts with the subject, a text compared
-- under the database's collation (strcoll for C.UTF-8 and most others), ~300 probes a physician's
-- 100-patient page. The primary key now carries the clinic, so the probe descends by the patient's
-- uuid (a memcmp) and is answered from the index: -10% of a physician's page transaction in
-- PostgreSQL 15, the same rows (PostgreSQL 18's planner still preferred care_team_subject: 065).
-- care_team_subject stays: a care-team page walks it in subject order.
--
-- The key's columns, uniqueness and name are unchanged, so ON CONFLICT and every reader see the same
-- constraint. The index is built beside the key, which is then dropped and replaced by it, in this
-- migration's transaction: a reader never lacks an index; building it reads the table once and
-- blocks writes to care_team meanwhile, and from the DROP to the commit (moments) reads wait too,
-- physicians' and nurses' included (row security reads care_team). The lock is asked for with a
-- bound: behind a long transaction on care_team the DROP would make every new reader queue behind
-- it; instead the migration fails (55P03) and can be run again when the table is quiet.
-- Nothing references care_team's key.
SET LOCAL lock_timeout = '5s';
CREATE UNIQUE INDEX care_team_pkey_next ON phigate.care_team (patient_id, subject) INCLUDE (clinic_id);
ALTER TABLE phigate.care_team DROP CONSTRAINT care_team_pkey;
ALTER INDEX phigate.care_team_pkey_next RENAME TO care_team_pkey;
ALTER TABLE phigate.care_team ADD CONSTRAINT care_team_pkey PRIMARY KEY USING INDEX care_team_pkey;
