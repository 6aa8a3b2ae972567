-- Row scopes and operations from one place, the policy file. Until here the row-security policies
-- named roles (physician, nurse: care team; registrar, billing, clinic_admin: clinic; compliance:
-- reviewer and audit reader; ...), so a policy file that renamed or narrowed a role was silently
-- not what the database enforced. From here the policies name scope kinds and operations only, and
-- look the request's roles up in phigate.role_scopes. `npx phigate migrate` writes that table from
-- the policy file as the migrator (src/db/row-scopes.ts); the gateway compares it with its policy
-- at start-up and refuses to start on any difference. The app role may only read it.

-- The row scopes this SQL implements; a policy asking for any other is refused by migrate and at
-- start-up, naming the role and the scope.
CREATE TABLE phigate.row_scope_kinds (
  kind    text PRIMARY KEY,
  meaning text NOT NULL
);
INSERT INTO phigate.row_scope_kinds (kind, meaning) VALUES
  ('care_team', 'patients of the request''s clinics on whose care team the actor is'),
  ('clinic', 'every patient of the request''s clinics'),
  ('partner_key', 'every patient of the request''s clinics, while the API key named as the actor is live and covers them'),
  ('none', 'no patient');

CREATE TABLE phigate.role_scopes (
  -- The same shape the gateway accepts for a role in the request context (src/db/transaction.ts).
  role       text PRIMARY KEY CHECK (role ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  row_scope  text NOT NULL REFERENCES phigate.row_scope_kinds (kind),
  -- The policy's operations of the role; the policies below enforce those that write patient
  -- rows, care teams and grants, and the audit and review readers.
  operations text[] NOT NULL DEFAULT '{}',
  -- A key's scope belongs to the one role API keys hold (PARTNER_ROLE, src/policy/decide.ts), and
  -- that role sees through a live key or not at all.
  CHECK ((row_scope = 'partner_key') = (role = 'partner') OR (role = 'partner' AND row_scope = 'none'))
);

-- What 004-015 spelt out, so a database migrated without a policy file (tests, a first start)
-- enforces policies/default.yaml; migrate replaces it with the configured policy's.
INSERT INTO phigate.role_scopes (role, row_scope, operations) VALUES
  ('physician', 'care_team', '{addEncounter,updatePatient,breakGlass}'),
  ('nurse', 'care_team', '{addEncounter,breakGlass}'),
  ('registrar', 'clinic', '{createPatient,updatePatient}'),
  ('billing', 'clinic', '{}'),
  ('compliance', 'none', '{reviewBreakGlass,readAuditTrail}'),
  ('clinic_admin', 'clinic', '{setCareTeam,createApiKey,rotateApiKey,revokeApiKey}'),
  ('partner', 'partner_key', '{}');

REVOKE ALL ON phigate.row_scope_kinds, phigate.role_scopes FROM PUBLIC;
GRANT SELECT ON phigate.row_scope_kinds, phigate.role_scopes TO phigate_app, phigate_auditor;

-- PL/pgSQL rather than SQL: a connection plans these lookups once and keeps the plan, where an SQL
-- function that reads a table is planned again in every statement that calls it (measured: about
-- 0.03 ms more per patients query).

-- The request's roles (only those whose MFA is met ever reach phigate.roles) that may do p_operation.
CREATE FUNCTION phigate.ctx_roles_for(p_operation text) RETURNS text[]
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
  RETURN (SELECT coalesce(array_agg(s.role), '{}'::text[]) FROM phigate.role_scopes s
          WHERE s.role = ANY (phigate.ctx_roles()) AND p_operation = ANY (s.operations));
END
$$;

CREATE FUNCTION phigate.ctx_may(p_operation text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT cardinality(phigate.ctx_roles_for(p_operation)) > 0 $$;

-- Whether one of the request's roles has row scope p_kind (and, when p_operation is given, may do it).
CREATE FUNCTION phigate.ctx_has_scope(p_kind text, p_operation text) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
  RETURN EXISTS (
    SELECT 1 FROM phigate.role_scopes s
    WHERE s.role = ANY (phigate.ctx_roles()) AND s.row_scope = p_kind
      AND (p_operation IS NULL OR p_operation = ANY (s.operations))
  );
END
$$;

REVOKE ALL ON FUNCTION phigate.ctx_roles_for(text), phigate.ctx_may(text), phigate.ctx_has_scope(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.ctx_roles_for(text), phigate.ctx_may(text), phigate.ctx_has_scope(text, text) TO phigate_app;

-- Reviewers and audit readers: the roles the policy grants reviewBreakGlass and readAuditTrail.
CREATE OR REPLACE FUNCTION phigate.ctx_reviewer() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT phigate.ctx_may('reviewBreakGlass') $$;
CREATE OR REPLACE FUNCTION phigate.ctx_audit_reader() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT phigate.ctx_may('readAuditTrail') $$;

-- Each function below is wrapped in (SELECT ...) so it is an InitPlan, evaluated once per
-- statement, not once per row (as in 004).

-- Patients: clinic isolation for every scope; a care-team scope only on the care team; a key's
-- scope only while the key is live (replaces 011's patients_partner_select); a live break-glass
-- grant opened in a role the policy lets break the glass.
DROP POLICY patients_partner_select ON phigate.patients;
DROP POLICY patients_select ON phigate.patients;
CREATE POLICY patients_select ON phigate.patients FOR SELECT TO phigate_app USING (
  (
    clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
    AND (
      (SELECT phigate.ctx_has_scope('clinic', NULL))
      OR ((SELECT phigate.ctx_has_scope('partner_key', NULL)) AND (SELECT phigate.ctx_partner_key_live()))
      OR (
        (SELECT phigate.ctx_has_scope('care_team', NULL))
        AND EXISTS (
          SELECT 1 FROM phigate.care_team ct
          WHERE ct.patient_id = patients.id AND ct.subject = (SELECT phigate.ctx_actor())
        )
      )
    )
  )
  OR EXISTS (
    SELECT 1 FROM phigate.break_glass_grants g
    WHERE g.patient_id = patients.id AND g.actor = (SELECT phigate.ctx_actor()) AND g.revoked_at IS NULL
      AND g.expires_at > clock_timestamp() AND g.role = ANY ((SELECT phigate.ctx_roles_for('breakGlass'))::text[])
      AND (g.cross_clinic OR patients.clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[]))
  )
);

-- A new patient has no care team yet: any role that may create patients and sees rows of a
-- clinic (not 'none') creates them in the request's clinics.
DROP POLICY patients_insert ON phigate.patients;
CREATE POLICY patients_insert ON phigate.patients FOR INSERT TO phigate_app WITH CHECK (
  clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
  AND (
    (SELECT phigate.ctx_has_scope('clinic', 'createPatient'))
    OR (SELECT phigate.ctx_has_scope('care_team', 'createPatient'))
    OR ((SELECT phigate.ctx_has_scope('partner_key', 'createPatient')) AND (SELECT phigate.ctx_partner_key_live()))
  )
);

-- Writes stay within the row scope of a role that may do them.
DROP POLICY patients_update ON phigate.patients;
CREATE POLICY patients_update ON phigate.patients FOR UPDATE TO phigate_app
USING (
  clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
  AND (
    (SELECT phigate.ctx_has_scope('clinic', 'updatePatient'))
    OR ((SELECT phigate.ctx_has_scope('partner_key', 'updatePatient')) AND (SELECT phigate.ctx_partner_key_live()))
    OR (
      (SELECT phigate.ctx_has_scope('care_team', 'updatePatient'))
      AND EXISTS (
        SELECT 1 FROM phigate.care_team ct
        WHERE ct.patient_id = patients.id AND ct.subject = (SELECT phigate.ctx_actor())
      )
    )
  )
)
WITH CHECK (clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[]));

DROP POLICY encounters_insert ON phigate.encounters;
CREATE POLICY encounters_insert ON phigate.encounters FOR INSERT TO phigate_app WITH CHECK (
  clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
  AND (
    (SELECT phigate.ctx_has_scope('clinic', 'addEncounter'))
    OR ((SELECT phigate.ctx_has_scope('partner_key', 'addEncounter')) AND (SELECT phigate.ctx_partner_key_live()))
    OR (
      (SELECT phigate.ctx_has_scope('care_team', 'addEncounter'))
      AND EXISTS (
        SELECT 1 FROM phigate.care_team ct
        WHERE ct.patient_id = encounters.patient_id AND ct.subject = (SELECT phigate.ctx_actor())
      )
    )
  )
  AND EXISTS (
    SELECT 1 FROM phigate.patients p
    WHERE p.id = encounters.patient_id AND p.clinic_id = encounters.clinic_id
  )
);

-- Care teams: changed by the roles that may setCareTeam, never naming the actor (010).
DROP POLICY care_team_insert ON phigate.care_team;
CREATE POLICY care_team_insert ON phigate.care_team FOR INSERT TO phigate_app WITH CHECK (
  clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
  AND (SELECT phigate.ctx_may('setCareTeam'))
  AND subject IS DISTINCT FROM (SELECT phigate.ctx_actor())
);
DROP POLICY care_team_delete ON phigate.care_team;
CREATE POLICY care_team_delete ON phigate.care_team FOR DELETE TO phigate_app USING (
  clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
  AND (SELECT phigate.ctx_may('setCareTeam'))
);

-- A grant is opened in a role the policy lets break the glass.
DROP POLICY grants_insert ON phigate.break_glass_grants;
CREATE POLICY grants_insert ON phigate.break_glass_grants FOR INSERT TO phigate_app WITH CHECK (
  actor = (SELECT phigate.ctx_actor())
  AND role = ANY ((SELECT phigate.ctx_roles_for('breakGlass'))::text[])
  AND revoked_at IS NULL AND reviewed_at IS NULL AND clinic_id IS NULL
  AND expires_at <= clock_timestamp() + interval '24 hours'
);
