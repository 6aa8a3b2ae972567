-- Row security's questions about the request context, asked with fewer function calls (issue #10;
-- bench/README.md, "The by-id request transaction: the context functions"). Same rules, same rows.
--
-- A read's statements run as cached generic plans, and what a read by id pays PostgreSQL for most
-- is starting their executor: every InitPlan, SubPlan and expression of the policies is set up on
-- each execution, whether it runs or not, and every function call in them costs an EXECUTE check
-- (a syscache lookup and an ACL walk) at that set-up.
--
-- 1. ctx_clinics() and ctx_roles() without nullif(): string_to_array() of '' is already the empty
-- array, as nullif() then coalesce() made it, and of NULL (the setting never made) NULL, which
-- coalesce() still makes empty. The same value for every setting, one function call fewer in each
-- of the ten or so places a read's policies ask them.
--
-- 2. How far the request reaches into its clinics, asked without a query of its own.
-- ctx_patient_reach() (035) is asked once per statement by patients_select and encounters_select,
-- as a PL/pgSQL function that ran a query over phigate.role_scopes: an SPI call with its cached
-- plan revalidated, an aggregate started and ended, on every statement that reads patients or
-- encounters (a tenth of a read by id's instructions in PostgreSQL). role_scopes changes only when
-- `npx phigate migrate` writes a policy's row scopes (src/db/row-scopes.ts), so the function is now
-- written from the table whenever the table changes: an SQL function whose body names the roles of
-- each scope, which PostgreSQL inlines into the policy's InitPlan as a plain expression over the
-- request's roles. role_scopes stays the one record of what row security enforces (start-up
-- compares it with the policy); the function is derived from it in the same transaction as every
-- change, by a trigger, so the two cannot disagree once committed. Plans that inlined the old body
-- are invalidated by the function's replacement, as for any function a plan depends on.
--
-- The rule is 035's: 'clinic' when a role has a clinic scope, or a partner_key scope and the key
-- named as the actor is live; else 'care_team' when a role has a care_team scope; else null, and a
-- request without roles (no context, an unknown role) reaches nothing.
--
-- 3. ctx_may(operation) is written from the table the same way: whether one of the request's roles
-- may do the operation, as an overlap of the request's roles with the roles role_scopes lets do it,
-- instead of a PL/pgSQL call of ctx_roles_for() with its query. ctx_reviewer() and
-- ctx_audit_reader() ask it, so they are plain expressions too once inlined.
--
-- 4. grants_select asks the actor and the reviewer inline instead of as InitPlans. Each InitPlan is
-- set up on every execution of every statement that reads grants under row security (a read by id
-- has two of each: the policy's break-glass test and the grant join), ~11 K instructions each,
-- though neither runs unless a grant row is found. Inline, they are asked only of a grant row the
-- statement reads: the actor's own rows (every read's grant probes find them by the actor) answer
-- at the actor's test; a reviewer listing its clinics' grants asks its roles once per row, now an
-- expression and no longer a function with a query.

CREATE OR REPLACE FUNCTION phigate.ctx_clinics() RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce(string_to_array(current_setting('phigate.clinics', true), ','), '{}'::text[])
$$;

CREATE OR REPLACE FUNCTION phigate.ctx_roles() RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce(string_to_array(current_setting('phigate.roles', true), ','), '{}'::text[])
$$;

CREATE FUNCTION phigate.write_scope_functions() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
  clinic text[];
  partner_key text[];
  care_team text[];
  may text;
BEGIN
  SELECT coalesce(array_agg(s.role ORDER BY s.role) FILTER (WHERE s.row_scope = 'clinic'), '{}'),
         coalesce(array_agg(s.role ORDER BY s.role) FILTER (WHERE s.row_scope = 'partner_key'), '{}'),
         coalesce(array_agg(s.role ORDER BY s.role) FILTER (WHERE s.row_scope = 'care_team'), '{}')
    INTO clinic, partner_key, care_team
    FROM phigate.role_scopes s;
  -- No SET and no SECURITY DEFINER on the functions written here: either would keep PostgreSQL
  -- from inlining them, so they run under the caller's search_path: every name and operator in them
  -- is schema-qualified.
  -- Each body is made by format() from a constant template and handed to CREATE FUNCTION as one
  -- quoted literal (%L), so that nothing the table holds can end it early, whatever it contains.
  EXECUTE format(
    'CREATE OR REPLACE FUNCTION phigate.ctx_patient_reach() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS %L',
    format($body$
      SELECT CASE
               WHEN phigate.ctx_roles() OPERATOR(pg_catalog.&&) %L::text[]
                 OR (phigate.ctx_roles() OPERATOR(pg_catalog.&&) %L::text[] AND phigate.ctx_partner_key_live()) THEN 'clinic'
               WHEN phigate.ctx_roles() OPERATOR(pg_catalog.&&) %L::text[] THEN 'care_team'
             END
    $body$, clinic, partner_key, care_team));

  -- One arm per operation some role may do, naming those roles; any other operation: no role.
  SELECT string_agg(format('WHEN p_operation OPERATOR(pg_catalog.=) %L THEN %L::text[]', o.operation, o.roles), ' ' ORDER BY o.operation)
    INTO may
    FROM (SELECT op AS operation, array_agg(s.role ORDER BY s.role) AS roles
            FROM phigate.role_scopes s CROSS JOIN LATERAL unnest(s.operations) AS op
           GROUP BY op) o;
  EXECUTE format(
    'CREATE OR REPLACE FUNCTION phigate.ctx_may(p_operation text) RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS %L',
    format($body$
      SELECT phigate.ctx_roles() OPERATOR(pg_catalog.&&) CASE %s ELSE '{}'::text[] END
    $body$, coalesce(may, 'WHEN NULL THEN ''{}''::text[]')));
END
$$;

CREATE FUNCTION phigate.role_scopes_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  PERFORM phigate.write_scope_functions();
  RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION phigate.write_scope_functions(), phigate.role_scopes_changed() FROM PUBLIC;

CREATE TRIGGER role_scopes_functions AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON phigate.role_scopes
  FOR EACH STATEMENT EXECUTE FUNCTION phigate.role_scopes_changed();

-- The row scopes already in the table: the default policy's (020), or a policy migrate wrote since.
SELECT phigate.write_scope_functions();

-- An actor's own grants, or a reviewer's within the request's clinics (012, 020, 043).
ALTER POLICY grants_select ON phigate.break_glass_grants USING (
  actor = phigate.ctx_actor()
  OR (phigate.ctx_reviewer() AND clinic_id = ANY (phigate.ctx_clinics()))
);
