-- Least privilege per group role. Column lists are deliberate: the gateway can never change a
-- row's id or clinic (no moving a patient to another clinic), and analytics never sees a PHI column.
REVOKE ALL ON ALL TABLES IN SCHEMA phigate FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA phigate FROM PUBLIC;

GRANT USAGE ON SCHEMA phigate TO phigate_app, phigate_auditor, phigate_analytics;

GRANT SELECT ON phigate.clinics TO phigate_app, phigate_analytics;
GRANT SELECT, INSERT ON phigate.keyring TO phigate_app;

GRANT SELECT, INSERT ON phigate.patients TO phigate_app;
GRANT UPDATE (mrn_bidx, ssn_bidx, mrn, ssn, given_name, family_name, birth_date, phone, email, address, updated_at)
  ON phigate.patients TO phigate_app;
GRANT SELECT, INSERT, DELETE ON phigate.care_team TO phigate_app;
GRANT SELECT, INSERT ON phigate.encounters TO phigate_app;
GRANT INSERT ON phigate.audit_events TO phigate_app;

GRANT SELECT ON phigate.audit_events TO phigate_auditor;

GRANT SELECT (id, clinic_id, created_at) ON phigate.patients TO phigate_analytics;
GRANT SELECT (id, patient_id, clinic_id, occurred_at, kind) ON phigate.encounters TO phigate_analytics;
