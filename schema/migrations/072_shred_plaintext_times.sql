-- phigate:run-as migrator
-- A shred erases the patient's plaintext times too (docs/shredding.md). Until now `keys shred`
-- marked every sealed column and left the columns in the clear as they were: an encounter's date
-- (PHI, kept plaintext so the database can order by it), the encounter's and the patient's row
-- times (when a visit was recorded: the visit date, near enough), when each clinician joined the
-- care team, and when the patient's first key was made (the registration time). The shred now
-- sets each of them to '-infinity': a value no writer can give (the gateway takes ISO dates after
-- 1880), so a reader knows it for an erased one, and one every index and NOT NULL still accepts.

-- The key role erases those columns and writes no other value into them (the trigger below): it
-- still makes no value in the clear.
SET LOCAL ROLE phigate_owner;

GRANT UPDATE (occurred_at, created_at) ON phigate.encounters TO phigate_keys;
GRANT UPDATE (created_at, updated_at) ON phigate.patients TO phigate_keys;
GRANT UPDATE (created_at) ON phigate.patient_keys TO phigate_keys;
GRANT SELECT (patient_id), UPDATE (added_at) ON phigate.care_team TO phigate_keys;
CREATE POLICY care_team_keys_select ON phigate.care_team FOR SELECT TO phigate_keys USING (true);
CREATE POLICY care_team_keys_update ON phigate.care_team FOR UPDATE TO phigate_keys USING (true) WITH CHECK (true);

-- The columns named by the trigger's arguments may change, for the key role, only to '-infinity'.
-- Other roles are bound by their column privileges and 027's refusal as before; the owner (and a
-- superuser migrator) is not held here, as 027 does not hold it.
CREATE FUNCTION phigate.keys_only_erase_times() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  v_new jsonb;
  v_old jsonb;
  v_column text;
BEGIN
  IF pg_has_role(current_user, 'phigate_keys', 'USAGE') AND NOT pg_has_role(current_user, 'phigate_owner', 'USAGE') THEN
    v_new := to_jsonb(NEW);
    v_old := to_jsonb(OLD);
    FOREACH v_column IN ARRAY TG_ARGV LOOP
      IF v_new -> v_column IS DISTINCT FROM v_old -> v_column AND v_new ->> v_column IS DISTINCT FROM '-infinity' THEN
        RAISE EXCEPTION 'the key role only erases %.%', TG_TABLE_NAME, v_column USING ERRCODE = 'insufficient_privilege';
      END IF;
    END LOOP;
  END IF;
  RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION phigate.keys_only_erase_times() FROM PUBLIC;

CREATE TRIGGER encounters_keys_only_erase BEFORE UPDATE OF occurred_at, created_at ON phigate.encounters
  FOR EACH ROW EXECUTE FUNCTION phigate.keys_only_erase_times('occurred_at', 'created_at');
CREATE TRIGGER patients_keys_only_erase BEFORE UPDATE OF created_at, updated_at ON phigate.patients
  FOR EACH ROW EXECUTE FUNCTION phigate.keys_only_erase_times('created_at', 'updated_at');
CREATE TRIGGER patient_keys_keys_only_erase BEFORE UPDATE OF created_at ON phigate.patient_keys
  FOR EACH ROW EXECUTE FUNCTION phigate.keys_only_erase_times('created_at');
CREATE TRIGGER care_team_keys_only_erase BEFORE UPDATE OF added_at ON phigate.care_team
  FOR EACH ROW EXECUTE FUNCTION phigate.keys_only_erase_times('added_at');

-- An erased date is no month: the aggregate leaves shredded encounters out rather than show a
-- '-infinity' month.
CREATE OR REPLACE VIEW phigate.analytics_encounters_by_month WITH (security_barrier) AS
  SELECT clinic_id, date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date AS month,
         count(*)::integer AS encounters, count(DISTINCT patient_id)::integer AS patients
  FROM phigate.encounters
  WHERE occurred_at <> '-infinity'
  GROUP BY 1, 2
  HAVING count(DISTINCT patient_id) >= 11;

-- Patients shredded before this migration: their times are erased now, as the key role would
-- (row security lets it reach every clinic's rows; 027 lets it write to a shredded patient). It
-- may not read the times, so each statement rewrites them all: erasing twice changes nothing.
SET LOCAL ROLE phigate_keys;
UPDATE phigate.encounters SET occurred_at = '-infinity', created_at = '-infinity'
  WHERE patient_id IN (SELECT patient_id FROM phigate.patient_keys WHERE wrapped IS NULL);
UPDATE phigate.patients SET created_at = '-infinity', updated_at = '-infinity'
  WHERE id IN (SELECT patient_id FROM phigate.patient_keys WHERE wrapped IS NULL);
UPDATE phigate.care_team SET added_at = '-infinity'
  WHERE patient_id IN (SELECT patient_id FROM phigate.patient_keys WHERE wrapped IS NULL);
UPDATE phigate.patient_keys SET created_at = '-infinity'
  WHERE patient_id IN (SELECT patient_id FROM phigate.patient_keys WHERE wrapped IS NULL);
RESET ROLE;
