-- 072 let the key role set a time in the clear only to '-infinity', but of any patient: it could
-- erase a live patient's visit dates, a loss no shred asked for. A time is now erased only for a
-- shredded patient, known as 027 knows it (a key of the patient destroyed). The shred destroys
-- the keys before it erases the times, in the same transaction (src/records/shred-patient.ts), so
-- its own erasing passes; 072's backfill took only shredded patients.
CREATE OR REPLACE FUNCTION phigate.keys_only_erase_times() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_new jsonb;
  v_old jsonb;
  v_column text;
  v_patient uuid;
BEGIN
  IF pg_has_role(current_user, 'phigate_keys', 'USAGE') AND NOT pg_has_role(current_user, 'phigate_owner', 'USAGE') THEN
    v_new := to_jsonb(NEW);
    v_old := to_jsonb(OLD);
    -- Two statements, not one CASE: a CASE would name NEW.patient_id on patients, which has none.
    IF TG_TABLE_NAME = 'patients' THEN v_patient := NEW.id; ELSE v_patient := NEW.patient_id; END IF;
    FOREACH v_column IN ARRAY TG_ARGV LOOP
      IF v_new -> v_column IS DISTINCT FROM v_old -> v_column THEN
        IF v_new ->> v_column IS DISTINCT FROM '-infinity' THEN
          RAISE EXCEPTION 'the key role only erases %.%', TG_TABLE_NAME, v_column USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM phigate.patient_keys WHERE patient_id = v_patient AND wrapped IS NULL) THEN
          RAISE EXCEPTION 'the key role erases %.% only of a shredded patient', TG_TABLE_NAME, v_column USING ERRCODE = 'insufficient_privilege';
        END IF;
      END IF;
    END LOOP;
  END IF;
  RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION phigate.keys_only_erase_times() FROM PUBLIC;
