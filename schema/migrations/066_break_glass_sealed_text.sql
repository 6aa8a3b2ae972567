-- A break-glass reason and a review comment are PHI ("unconscious, suspected overdose, family says
-- HIV+"): from here they are sealed like every PHI value (src/crypto/envelope.ts), under the key of
-- the grant's patient, bound by AAD to this table, the column (`reason`, `review_comment`), the
-- grant's id, the patient and the key versions. Shredding the patient leaves them unreadable, a
-- ciphertext copied onto another grant does not open, and the gateway decrypts one only for the
-- principals policies/default.yaml names (the grant's actor, the reviewers of its clinic), with an
-- audit row per value shown (src/records/grant-text.ts).
--
-- SQL cannot encrypt: rows written before this migration keep their text in the plaintext columns
-- `reason` and `review_comment`, now legacy, shown through the same rule and audit until
-- `npx phigate keys rotate --clinic C --reencrypt` seals them (src/records/reencrypt-grants.ts)
-- and empties the plaintext column. The gateway's role can no longer write either plaintext column,
-- so gateways older than this migration must be stopped before it runs (README, "Upgrading through 066").
ALTER TABLE phigate.break_glass_grants
  ALTER COLUMN reason DROP NOT NULL,
  ADD COLUMN reason_sealed bytea,
  ADD COLUMN review_comment_sealed bytea,
  -- 1,000 characters of at most 4 bytes, a patient-key header (9), a nonce (12) and a tag (16);
  -- 9 bytes is the shredded marker. Likewise for a comment of 2,000 characters.
  ADD CONSTRAINT break_glass_reason_sealed_size CHECK (octet_length(reason_sealed) BETWEEN 9 AND 4037),
  ADD CONSTRAINT break_glass_comment_sealed_size CHECK (octet_length(review_comment_sealed) BETWEEN 9 AND 8037),
  -- Never both: sealing a legacy text empties its plaintext column in the same update.
  ADD CONSTRAINT break_glass_reason_once CHECK (reason IS NULL OR reason_sealed IS NULL),
  ADD CONSTRAINT break_glass_comment_once CHECK (review_comment IS NULL OR review_comment_sealed IS NULL);

-- Every grant has a reason by the time its transaction commits. The opening request inserts the
-- grant first (the database binds its clinic, whose key seals the reason: 034) and then writes the
-- sealed reason, so the check waits for the commit and reads the row as it is then. As the owner
-- (grants_owner_count shows it every grant): under the caller's row security a grant it could not
-- see would pass unchecked.
CREATE FUNCTION phigate.check_grant_has_reason() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM phigate.break_glass_grants g WHERE g.id = NEW.id AND g.reason IS NULL AND g.reason_sealed IS NULL) THEN
    RAISE EXCEPTION 'a break-glass grant needs a reason' USING ERRCODE = 'check_violation';
  END IF;
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION phigate.check_grant_has_reason() FROM PUBLIC;
CREATE CONSTRAINT TRIGGER break_glass_has_reason AFTER INSERT OR UPDATE OF reason, reason_sealed ON phigate.break_glass_grants
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION phigate.check_grant_has_reason();

-- What may change after the insert (034's rules, plus the texts): the clinic never; the end and the
-- review once each; the sealed reason once, by its opening request; the sealed comment only in
-- the update that records the review. The plaintext columns only ever lose their value. The key role (phigate_keys: sealing
-- legacy rows, re-encryption onto a new key version, shredding) may rewrite the sealed texts and
-- nothing else its column privileges do not already deny.
CREATE OR REPLACE FUNCTION phigate.guard_break_glass_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_keys boolean := pg_has_role(current_user, 'phigate_keys', 'USAGE');
BEGIN
  IF NEW.clinic_id IS DISTINCT FROM OLD.clinic_id THEN
    RAISE EXCEPTION 'a grant''s clinic is its patient''s' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.revoked_at IS NOT NULL AND (NEW.revoked_at IS DISTINCT FROM OLD.revoked_at OR NEW.revoked_by IS DISTINCT FROM OLD.revoked_by) THEN
    RAISE EXCEPTION 'a grant is ended once' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.reviewed_at IS NOT NULL AND (NEW.reviewed_at, NEW.reviewed_by, NEW.review_outcome)
       IS DISTINCT FROM (OLD.reviewed_at, OLD.reviewed_by, OLD.review_outcome) THEN
    RAISE EXCEPTION 'a grant is reviewed once' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF (NEW.reason IS DISTINCT FROM OLD.reason AND NEW.reason IS NOT NULL)
     OR (NEW.review_comment IS DISTINCT FROM OLD.review_comment AND NEW.review_comment IS NOT NULL) THEN
    RAISE EXCEPTION 'a grant''s plaintext is only ever removed' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NOT v_keys AND OLD.reason_sealed IS NOT NULL AND NEW.reason_sealed IS DISTINCT FROM OLD.reason_sealed THEN
    RAISE EXCEPTION 'a grant''s reason is written once' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NOT v_keys AND NEW.review_comment_sealed IS DISTINCT FROM OLD.review_comment_sealed
     AND NOT (OLD.reviewed_at IS NULL AND NEW.reviewed_at IS NOT NULL) THEN
    RAISE EXCEPTION 'a review comment is written with its review, once' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END
$$;

-- The gateway writes ciphertext only; it reads the legacy plaintext to show it (to those allowed).
REVOKE INSERT (reason) ON phigate.break_glass_grants FROM phigate_app;
REVOKE UPDATE (review_comment) ON phigate.break_glass_grants FROM phigate_app;
GRANT UPDATE (reason_sealed, review_comment_sealed) ON phigate.break_glass_grants TO phigate_app;

-- The key role reads what it seals and rewrites the texts of every clinic's grants, nothing else.
GRANT SELECT (id, patient_id, clinic_id, reason, reason_sealed, review_comment, review_comment_sealed),
      UPDATE (reason, reason_sealed, review_comment, review_comment_sealed)
  ON phigate.break_glass_grants TO phigate_keys;
CREATE POLICY grants_keys_select ON phigate.break_glass_grants FOR SELECT TO phigate_keys USING (true);
CREATE POLICY grants_keys_update ON phigate.break_glass_grants FOR UPDATE TO phigate_keys USING (true) WITH CHECK (true);
-- A clinic's grants in id order, as re-encryption walks them (src/records/reencrypt-grants.ts): its
-- test (plaintext left, or sealed under an older key version) is no index's predicate.
CREATE INDEX break_glass_clinic_id ON phigate.break_glass_grants (clinic_id, id);

-- A shredded patient takes no new sealed text (as 027 refuses its PHI): a replica that still has
-- the destroyed patient key cached must not seal a reason or comment under it. Only a text being
-- written counts, so a grant of a shredded patient can still be reviewed (without a comment) or
-- ended. The key role writes the shredded marker itself.
CREATE FUNCTION phigate.refuse_shredded_grant_text() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF ((NEW.reason_sealed IS DISTINCT FROM OLD.reason_sealed AND NEW.reason_sealed IS NOT NULL)
      OR (NEW.review_comment_sealed IS DISTINCT FROM OLD.review_comment_sealed AND NEW.review_comment_sealed IS NOT NULL))
     AND NOT (pg_has_role(current_user, 'phigate_keys', 'USAGE') OR pg_has_role(current_user, 'phigate_owner', 'USAGE'))
     AND EXISTS (SELECT 1 FROM phigate.patient_keys WHERE patient_id = NEW.patient_id AND wrapped IS NULL) THEN
    RAISE EXCEPTION 'the patient''s keys were destroyed' USING ERRCODE = 'PH410';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER break_glass_refuse_shredded BEFORE UPDATE OF reason_sealed, review_comment_sealed ON phigate.break_glass_grants
  FOR EACH ROW EXECUTE FUNCTION phigate.refuse_shredded_grant_text();
