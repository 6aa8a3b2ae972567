-- Blind-index key rotation (issue 14, item 4; src/records/index-rotation.ts, README "Rotating the
-- blind-index keys").
--
-- Version 1 of a clinic's index keys is the one every deployment has: derived from the shared root
-- key (keyring purpose 'index', scope '*'). Version 2 and later are keys of the clinic's own
-- (keyring purpose 'index', scope = the clinic id), fresh from the KMS, not derived from the root.
--
-- mrn_bidx / ssn_bidx hold the digests under the clinic's `version`. While a rotation is under
-- way (`next_version` set) the *_next columns hold the digests under `next_version`: every write
-- fills both, the backfill fills the rows written before, lookups try both, and finishing moves
-- the new digests into mrn_bidx / ssn_bidx and empties the *_next columns. A clinic without a row
-- here is at version 1 with no rotation.
CREATE TABLE phigate.blind_index_versions (
  clinic_id           text PRIMARY KEY REFERENCES phigate.clinics (id),
  version             integer NOT NULL CHECK (version >= 1),
  next_version        integer CHECK (next_version = version + 1),
  rotation_started_at timestamptz,
  CHECK ((next_version IS NULL) = (rotation_started_at IS NULL))
);

ALTER TABLE phigate.patients ADD COLUMN mrn_bidx_next bytea, ADD COLUMN ssn_bidx_next bytea;
ALTER TABLE phigate.patients ADD CONSTRAINT patients_ssn_next_with_ssn CHECK (ssn_bidx_next IS NULL OR ssn_bidx IS NOT NULL);

-- One MRN and one SSN per clinic hold across versions: a write during a rotation carries both
-- digests, so a value another patient holds collides under the old version (every row has it) and
-- under the new one (once backfilled). Partial: empty outside a rotation, so they cost nothing then.
CREATE UNIQUE INDEX patients_clinic_mrn_next ON phigate.patients (clinic_id, mrn_bidx_next) WHERE mrn_bidx_next IS NOT NULL;
CREATE UNIQUE INDEX patients_clinic_ssn_next ON phigate.patients (clinic_id, ssn_bidx_next) WHERE ssn_bidx_next IS NOT NULL;

GRANT SELECT ON phigate.blind_index_versions TO phigate_app;
GRANT UPDATE (mrn_bidx_next, ssn_bidx_next) ON phigate.patients TO phigate_app;

-- The versions a write must compute, read under a shared lock held to the end of the writer's
-- transaction: starting or finishing a rotation takes the lock exclusively, so it waits for every
-- writer that read the versions before it, and every writer after it reads the new ones. Nothing
-- is cached, so no replica can write digests of a version that is gone. VOLATILE: the SELECT takes
-- its snapshot after the lock is granted. Transaction-scoped lock, so PgBouncer-safe.
CREATE FUNCTION phigate.blind_index_versions_for_write(p_clinic text, OUT version integer, OUT next_version integer)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(hashtextextended('phigate.blind_index:' || p_clinic, 0));
  SELECT v.version, v.next_version INTO version, next_version
    FROM phigate.blind_index_versions v WHERE v.clinic_id = p_clinic;
  IF NOT FOUND THEN
    version := 1;
  END IF;
END
$$;
REVOKE ALL ON FUNCTION phigate.blind_index_versions_for_write(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.blind_index_versions_for_write(text) TO phigate_app;

-- The rotation job runs as the migrator. Where that is the owner rather than a superuser, FORCE
-- row security binds it, and it would see no patient: a backfill that sees nothing would report
-- nothing left to do. This lets the owner's connection see and re-index the rows, and only in a
-- transaction that declares itself the job (the owner could disable row security anyway).
CREATE POLICY patients_blind_index_job ON phigate.patients FOR ALL TO phigate_owner
  USING (current_setting('phigate.job', true) = 'blind_index_rotation')
  WITH CHECK (current_setting('phigate.job', true) = 'blind_index_rotation');
