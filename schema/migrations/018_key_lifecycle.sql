-- phigate:run-as migrator
-- Key lifecycle (issue 14): per-patient data keys, crypto-shredding, rotation with online
-- re-encryption and retirement of old versions. See README, "Keys".

-- The operator's key commands (phigate keys rotate | shred | retire) act over every clinic, so
-- they cannot run under the gateway's row security. They run as this group role, taken with
-- SET LOCAL ROLE inside each of their transactions by a member (the migrator): it may read and
-- rewrite ciphertext and blind indexes, never the columns in the clear, and writes audit rows as
-- the gateway does (it inherits phigate_app). It cannot log in.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'phigate_keys') THEN
    CREATE ROLE phigate_keys NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS INHERIT;
  END IF;
END
$$;
GRANT phigate_app TO phigate_keys;
GRANT phigate_keys TO CURRENT_USER;

SET LOCAL ROLE phigate_owner;

-- One key per patient (and per version of it), wrapped by one version of the clinic's data key
-- (AES-256-GCM, src/crypto/patient-key.ts). Every PHI value of the patient, in patients and
-- encounters, is sealed under it. Shredding sets `wrapped` to NULL for every version and adds a
-- tombstone version, so no writer can create a new key for the patient afterwards.
-- No foreign key to patients: a key is created (and committed, outside the request) before the
-- row of a new patient exists, and a request that then rolls back leaves an unused wrapped key.
CREATE TABLE phigate.patient_keys (
  patient_id     uuid NOT NULL,
  version        integer NOT NULL CHECK (version > 0),
  clinic_id      text NOT NULL,
  clinic_version integer NOT NULL CHECK (clinic_version >= 0),
  wrapped        bytea,
  created_at     timestamptz NOT NULL DEFAULT now(),
  shredded_at    timestamptz,
  PRIMARY KEY (patient_id, version),
  CHECK ((wrapped IS NULL) = (shredded_at IS NOT NULL))
);
CREATE INDEX patient_keys_clinic_version ON phigate.patient_keys (clinic_id, clinic_version);

GRANT SELECT, INSERT ON phigate.patient_keys TO phigate_app;
GRANT SELECT, UPDATE (wrapped, shredded_at), INSERT, DELETE ON phigate.patient_keys TO phigate_keys;
GRANT SELECT, DELETE, UPDATE (wrapped, provider, key_ref) ON phigate.keyring TO phigate_keys;
-- Master-key rotation re-wraps the partner-key peppers as well: they are wrapped by the same master key.
GRANT SELECT, UPDATE (wrapped, provider, key_ref) ON phigate.api_key_peppers TO phigate_keys;

GRANT SELECT (id, clinic_id, mrn_bidx, ssn_bidx, mrn, ssn, given_name, family_name, birth_date, phone, email, address),
      UPDATE (mrn_bidx, ssn_bidx, mrn, ssn, given_name, family_name, birth_date, phone, email, address)
  ON phigate.patients TO phigate_keys;
GRANT SELECT (id, patient_id, clinic_id, kind, kind_legacy, reason, diagnosis_codes, notes),
      UPDATE (kind, kind_legacy, reason, diagnosis_codes, notes)
  ON phigate.encounters TO phigate_keys;
CREATE POLICY patients_keys_select ON phigate.patients FOR SELECT TO phigate_keys USING (true);
CREATE POLICY patients_keys_update ON phigate.patients FOR UPDATE TO phigate_keys USING (true) WITH CHECK (true);
CREATE POLICY encounters_keys_select ON phigate.encounters FOR SELECT TO phigate_keys USING (true);
CREATE POLICY encounters_keys_update ON phigate.encounters FOR UPDATE TO phigate_keys USING (true) WITH CHECK (true);

-- The clinic key version of a ciphertext's header (src/crypto/envelope.ts: format 1 or 2, then
-- the version as 4 bytes big-endian); NULL for NULL, a shredded value or anything else.
CREATE FUNCTION phigate.sealed_version(b bytea) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN length(b) >= 5 AND get_byte(b, 0) IN (1, 2)
    THEN (get_byte(b, 1) << 24) | (get_byte(b, 2) << 16) | (get_byte(b, 3) << 8) | get_byte(b, 4) END
$$;

-- Whether re-encryption still has to rewrite a value to put it under clinic key `target` and a
-- patient key: sealed directly under a clinic key (format 1), or under an older clinic version.
CREATE FUNCTION phigate.sealed_stale(b bytea, target integer) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(length(b) >= 5 AND (get_byte(b, 0) = 1 OR (get_byte(b, 0) = 2 AND phigate.sealed_version(b) < target)), false)
$$;
GRANT EXECUTE ON FUNCTION phigate.sealed_version(bytea), phigate.sealed_stale(bytea, integer) TO phigate_keys;

RESET ROLE;
