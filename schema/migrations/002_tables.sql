-- Tables only; who may touch them is in 003_grants.sql and 004_row_security.sql.
-- PHI columns are bytea ciphertext (AES-256-GCM, see src/crypto/envelope.ts); the database never
-- holds a PHI value or a key in plaintext; each ciphertext names its key version in its header, so
-- fields of one row may be under different versions during rotation. mrn and ssn also have HMAC
-- blind indexes for lookup.

CREATE TABLE phigate.clinics (
  id         text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  name       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Wrapped data keys (per clinic) and the wrapped blind-index root key (scope '*').
-- `wrapped` is ciphertext of the KMS; the plaintext key never reaches the database.
CREATE TABLE phigate.keyring (
  purpose    text NOT NULL CHECK (purpose IN ('data', 'index')),
  scope      text NOT NULL,
  version    integer NOT NULL CHECK (version > 0),
  wrapped    bytea NOT NULL,
  provider   text NOT NULL,
  key_ref    text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (purpose, scope, version)
);

CREATE TABLE phigate.patients (
  id          uuid PRIMARY KEY,
  clinic_id   text NOT NULL REFERENCES phigate.clinics (id),
  mrn_bidx    bytea NOT NULL,
  ssn_bidx    bytea,
  mrn         bytea NOT NULL,
  ssn         bytea,
  given_name  bytea,
  family_name bytea,
  birth_date  bytea,
  phone       bytea,
  email       bytea,
  address     bytea,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
-- An MRN identifies one patient within a clinic; the blind index is keyed per clinic, so the
-- same MRN in two clinics does not collide and cannot be linked across clinics.
CREATE UNIQUE INDEX patients_clinic_mrn ON phigate.patients (clinic_id, mrn_bidx);
CREATE INDEX patients_ssn_bidx ON phigate.patients (ssn_bidx) WHERE ssn_bidx IS NOT NULL;
CREATE INDEX patients_clinic_id ON phigate.patients (clinic_id, id);

CREATE TABLE phigate.care_team (
  patient_id uuid NOT NULL REFERENCES phigate.patients (id) ON DELETE CASCADE,
  subject    text NOT NULL,
  clinic_id  text NOT NULL REFERENCES phigate.clinics (id),
  added_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (patient_id, subject)
);
CREATE INDEX care_team_subject ON phigate.care_team (subject, patient_id);

CREATE TABLE phigate.encounters (
  id              uuid PRIMARY KEY,
  patient_id      uuid NOT NULL REFERENCES phigate.patients (id),
  clinic_id       text NOT NULL REFERENCES phigate.clinics (id),
  occurred_at     timestamptz NOT NULL,
  kind            text NOT NULL CHECK (kind ~ '^[a-z][a-z_]{0,31}$'),
  reason          bytea,
  diagnosis_codes bytea,
  notes           bytea,
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX encounters_patient ON phigate.encounters (patient_id, occurred_at DESC);

-- One row per PHI field value resolved or denied, per write, per key event. Append-only: the
-- gateway may only INSERT, and the trigger below refuses UPDATE, DELETE and TRUNCATE to everyone.
CREATE TABLE phigate.audit_events (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  request_id  text NOT NULL,
  actor       text NOT NULL,
  actor_kind  text NOT NULL CHECK (actor_kind IN ('user', 'partner', 'system')),
  role        text,
  purpose     text NOT NULL,
  break_glass boolean NOT NULL DEFAULT false,
  client_addr text,
  action      text NOT NULL CHECK (action IN ('read', 'masked', 'denied', 'create', 'update', 'key')),
  type_name   text NOT NULL,
  field       text,
  patient_id  uuid,
  record_id   uuid
);
CREATE INDEX audit_events_patient ON phigate.audit_events (patient_id, id) WHERE patient_id IS NOT NULL;
CREATE INDEX audit_events_actor ON phigate.audit_events (actor, id);

CREATE FUNCTION phigate.refuse_audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_events is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON phigate.audit_events
  FOR EACH ROW EXECUTE FUNCTION phigate.refuse_audit_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON phigate.audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION phigate.refuse_audit_change();
