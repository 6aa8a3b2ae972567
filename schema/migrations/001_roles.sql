-- phigate:run-as migrator
-- Group roles. Login roles are members of exactly one of these; nothing logs in as a group role.
--   phigate_owner      owns every object; bound by row security like everyone else (FORCE)
--   phigate_app        the gateway: reads and writes PHI under row security, may only INSERT audit rows
--   phigate_auditor    reads the audit trail, nothing else
--   phigate_analytics  reads non-PHI columns (ids, clinics, dates of service, kinds) for reporting
DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['phigate_owner', 'phigate_app', 'phigate_auditor', 'phigate_analytics'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT', r);
    END IF;
  END LOOP;
END
$$;

DO $$
BEGIN
  EXECUTE format('GRANT CONNECT, CREATE ON DATABASE %I TO phigate_owner', current_database());
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO phigate_app, phigate_auditor, phigate_analytics', current_database());
  -- Nobody but the owner creates objects, so nothing can shadow ours through search_path.
  EXECUTE format('REVOKE CREATE, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END
$$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA IF NOT EXISTS phigate AUTHORIZATION phigate_owner;
REVOKE ALL ON SCHEMA phigate FROM PUBLIC;
