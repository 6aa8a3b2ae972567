-- Partner API keys (src/auth/api-key.ts, src/records/api-keys.ts).
--
-- A key is `phg_<id>_<secret>`; only HMAC-SHA256(pepper, id || secret) is stored, under the pepper
-- version that made it. The pepper is a 32-byte key generated and wrapped by the key provider (KMS)
-- and stored here wrapped only: a copy of this database alone cannot test a guessed secret.
CREATE TABLE phigate.api_key_peppers (
  version    integer PRIMARY KEY CHECK (version > 0),
  wrapped    bytea NOT NULL,
  provider   text NOT NULL,
  key_ref    text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE phigate.api_keys (
  id              uuid PRIMARY KEY,
  partner         text NOT NULL CHECK (partner ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
  clinics         text[] NOT NULL CHECK (cardinality(clinics) > 0),
  fields          text[] NOT NULL CHECK (cardinality(fields) > 0),
  purpose         text NOT NULL CHECK (purpose ~ '^[A-Z][A-Z0-9]{1,15}$'),
  secret_hash     bytea NOT NULL CHECK (length(secret_hash) = 32),
  pepper_version  integer NOT NULL REFERENCES phigate.api_key_peppers (version),
  rate_per_minute integer NOT NULL CHECK (rate_per_minute BETWEEN 1 AND 1000000),
  burst           integer NOT NULL CHECK (burst BETWEEN 1 AND 1000000),
  created_by      text NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  expires_at      timestamptz,
  revoked_at      timestamptz,
  -- Rotation: the key this one replaced; the old key's expires_at is cut to the end of the overlap.
  replaces        uuid REFERENCES phigate.api_keys (id),
  last_used_at    timestamptz
);
CREATE INDEX api_keys_replaces ON phigate.api_keys (replaces);

-- Keys are not PHI and the gateway looks one up by id before any request context exists, so the
-- table carries no row security; which keys a clinic_admin may see or change is decided in the
-- statements (src/db/api-keys.ts). The app may never change what a key is bound to: only its end
-- (revocation, expiry cut by a rotation) and when it was last used.
GRANT SELECT, INSERT ON phigate.api_key_peppers TO phigate_app;
GRANT SELECT, INSERT ON phigate.api_keys TO phigate_app;
GRANT UPDATE (expires_at, revoked_at, last_used_at) ON phigate.api_keys TO phigate_app;

-- Whether the partner key named by the request context is live now, by the database's clock: row
-- security asks it on every statement, so a key revoked or expired on any replica shows no row to
-- the very next request everywhere, whatever a replica's cache of keys still believes.
-- The key's clinics must still cover the context's: a key narrowed or replaced never widens.
CREATE FUNCTION phigate.ctx_partner_key_live() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT EXISTS (
    SELECT 1 FROM phigate.api_keys k
    WHERE k.id::text = current_setting('phigate.actor', true)
      AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now())
      AND k.clinics @> phigate.ctx_clinics()
  )
$$;
GRANT EXECUTE ON FUNCTION phigate.ctx_partner_key_live() TO phigate_app;

-- The `partner` row scope (policies/default.yaml: rows: clinic): every patient of the key's
-- clinics, and only while the key is live. A separate permissive policy, so the user policies of
-- 004_row_security.sql stay as they are; the clinics come from the context exactly as a user's do.
-- Encounters and care teams follow through their existing policies.
CREATE POLICY patients_partner_select ON phigate.patients FOR SELECT TO phigate_app USING (
  clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
  AND (SELECT phigate.ctx_roles()) && ARRAY['partner']
  AND (SELECT phigate.ctx_partner_key_live())
);
