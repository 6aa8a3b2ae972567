-- Every break-glass grant in a clinic: the older grants 034 left without one (or in another clinic
-- than their patient's) are filed under their patient's, and the column is NOT NULL.
--
-- Since 034 the database binds a new grant's clinic from its patient and nobody changes it; 034 left
-- older rows as they were. Before it the opening request set the clinic itself after the insert
-- (012: set once, by its actor, to any clinic). The gateway always set the patient's, in the same
-- transaction (a grant it could not file was rolled back), so none it wrote lacks one; but a client
-- holding the gateway role's credentials could leave a grant's clinic null or name another. Such a
-- grant is out of its reviewers' sight (grants_select: the reviewer's clinics) and, with a reason
-- in plaintext from before 066, out of the re-encryption's: `keys rotate --clinic C --reencrypt`
-- seals the grants filed under C (src/records/reencrypt-grants.ts), so a reason with no clinic stayed
-- in the clear after every clinic was done, and one filed elsewhere was sealed under another
-- clinic's key (and its patient given a key wrapped by that clinic).
--
-- Each such grant goes to its patient's clinic (patient_clinics, 015: a patient never changes
-- clinic), as 034 files a new one; its reviewers then see it and that clinic's re-encryption seals
-- it. One filed under another clinic with a sealed text stays where it is, since its ciphertext
-- opens only under the clinic it was sealed for. One with no clinic always moves: what it may hold
-- in a sealed column is tied to no clinic (`keys shred` writes its marker into every grant of the
-- patient, whatever the grant's clinic), so after this every grant has a clinic and every
-- plaintext text is in its patient's.
SET LOCAL lock_timeout = '5s';

-- As 015's backfill: a policy that exists only inside this transaction lets the owner (under FORCE
-- row security) make this one change, and 034's guard, which refuses any change of clinic to
-- everyone, stands aside for it alone.
CREATE POLICY grants_file_under_patient_clinic ON phigate.break_glass_grants FOR UPDATE TO phigate_owner USING (true) WITH CHECK (true);
ALTER TABLE phigate.break_glass_grants DISABLE TRIGGER break_glass_guard;
UPDATE phigate.break_glass_grants g SET clinic_id = pc.clinic_id
FROM phigate.patient_clinics pc
WHERE pc.patient_id = g.patient_id AND g.clinic_id IS DISTINCT FROM pc.clinic_id
  AND (g.clinic_id IS NULL OR (g.reason_sealed IS NULL AND g.review_comment_sealed IS NULL));
ALTER TABLE phigate.break_glass_grants ENABLE TRIGGER break_glass_guard;
DROP POLICY grants_file_under_patient_clinic ON phigate.break_glass_grants;

ALTER TABLE phigate.break_glass_grants ALTER COLUMN clinic_id SET NOT NULL;
