-- A shredded patient takes no new PHI. The gateway's keyring refuses when it asks the store, but a
-- replica that wrote to the patient shortly before keeps its write key cached for up to a minute:
-- without this, it would seal new values under the destroyed key and write fresh blind indexes,
-- making the patient findable again. The database refuses instead, for every writer but the key
-- role (the shredding itself, re-encryption) and the owner (the blind-index backfill, which gives a
-- shredded patient digests that match nothing); the gateway's role is neither.
CREATE FUNCTION phigate.refuse_shredded_patient_write() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_patient uuid;
BEGIN
  -- Two statements, not one CASE: a CASE would name NEW.patient_id on patients, which has none.
  IF TG_TABLE_NAME = 'patients' THEN v_patient := NEW.id; ELSE v_patient := NEW.patient_id; END IF;
  IF NOT (pg_has_role(current_user, 'phigate_keys', 'USAGE') OR pg_has_role(current_user, 'phigate_owner', 'USAGE'))
     AND EXISTS (SELECT 1 FROM phigate.patient_keys WHERE patient_id = v_patient AND wrapped IS NULL) THEN
    RAISE EXCEPTION 'the patient''s keys were destroyed' USING ERRCODE = 'PH410';
  END IF;
  RETURN NEW;
END $$;

CREATE TRIGGER patients_refuse_shredded BEFORE INSERT OR UPDATE ON phigate.patients
  FOR EACH ROW EXECUTE FUNCTION phigate.refuse_shredded_patient_write();
CREATE TRIGGER encounters_refuse_shredded BEFORE INSERT OR UPDATE ON phigate.encounters
  FOR EACH ROW EXECUTE FUNCTION phigate.refuse_shredded_patient_write();
