-- The audit writer's fixed cost per batch in PostgreSQL (issue #10; src/audit/insert.ts).
--
-- PostgreSQL reads a table's CHECK constraints back from their stored node text (stringToNode of
-- pg_constraint.conbin), simplifies and compiles them for every statement that writes the table:
-- for a batch of one read this was a quarter of the writer backend's instructions, the largest
-- fixed cost of a batch (audit_records_valid's 8.2 KB of node text, phi_usage_valid's 2.0 KB).
-- A domain's CHECK is read, simplified and kept once per connection (the type cache), and only
-- compiled per statement. So the rules that look at one column move into domains, and the
-- tables' CHECKs coerce their columns to them: the same rules, still enforced by the database for
-- every insert and update, whoever makes it. Only the rules that compare columns stay in the
-- tables' CHECKs. Measured with callgrind in bench/README.md (branch writer, session 13).
--
-- A CHECK or a domain's CHECK fails only on false; NULL passes, as before (credential_id).
-- Violations keep SQLSTATE 23514; the message names the domain's constraint instead of the table's.

-- A detail's shape without a regular expression: PostgreSQL's regex engine set up and ran its
-- automaton for every detail (~30,000 instructions for one `ssn:hit`, 2% of a by-SSN batch).
-- Between 1 and 64 characters, each one of [a-z0-9_:.-]: ltrim with that set leaves
-- nothing exactly when every character is in it (characters, not bytes, as the regex counted), the
-- same rule as 035's `~ '^[a-z0-9_:.-]{1,64}$'` (the test compares both over every
-- character of the Basic Multilingual Plane and a sample of the others).
-- Operators and functions named with their schema, as in 035, instead of a SET search_path.
CREATE OR REPLACE FUNCTION phigate.audit_details_valid(details text[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
  d text;
BEGIN
  FOREACH d IN ARRAY details LOOP
    IF d IS NOT NULL AND NOT (
      pg_catalog.char_length(d) OPERATOR(pg_catalog.<=) 64 AND d OPERATOR(pg_catalog.<>) ''
      AND pg_catalog.ltrim(d, 'abcdefghijklmnopqrstuvwxyz0123456789_:.-') OPERATOR(pg_catalog.=) ''
    ) THEN
      RETURN false;
    END IF;
  END LOOP;
  RETURN true;
END
$$;

CREATE DOMAIN phigate.audit_actor_kind AS text
  CHECK (VALUE = ANY ('{user,partner,system,anonymous}'::text[]));
-- 028's `credential_id ~ '^[A-Za-z0-9_-]{1,64}$'` without a regular expression, as details above:
-- a partner's every record carried one, so every record of a partner's page ran the regex engine.
CREATE DOMAIN phigate.audit_credential_id AS text
  CHECK (char_length(VALUE) BETWEEN 1 AND 64 AND ltrim(VALUE, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-') = '');
CREATE DOMAIN phigate.audit_actions AS text[]
  CHECK (
    array_ndims(VALUE) = 1 AND cardinality(VALUE) BETWEEN 1 AND 65536 AND array_position(VALUE, NULL) IS NULL
    AND VALUE <@ '{read,masked,denied,create,update,key,limited,search,refused,break_glass,review,api_key,alert,view,retention}'::text[]
  );
CREATE DOMAIN phigate.audit_type_names AS text[]
  CHECK (array_position(VALUE, NULL) IS NULL);
CREATE DOMAIN phigate.audit_details AS text[]
  CHECK (num_nonnulls(VARIADIC VALUE) = 0 OR phigate.audit_details_valid(VALUE));

-- 054's rule, term for term: the per-column terms through the domains above, the arrays' equal
-- lengths here. num_nonnulls evaluates each of its arguments, so each coercion checks its domain;
-- the count itself decides nothing. Added NOT VALID: new rows are checked from this commit on, and
-- the stored ones by 060's VALIDATE CONSTRAINT, which holds a lock that lets the audit writer go on
-- inserting (SHARE UPDATE EXCLUSIVE), instead of this ALTER's ACCESS EXCLUSIVE held over a scan of
-- the whole trail, during which every PHI read would wait for its audit rows.
ALTER TABLE phigate.audit_records
  DROP CONSTRAINT audit_records_valid,
  ADD CONSTRAINT audit_records_valid CHECK (
    cardinality(actions::phigate.audit_actions)
      = ALL (ARRAY[cardinality(type_names::phigate.audit_type_names), cardinality(fields), cardinality(record_ids), cardinality(details::phigate.audit_details)])
    AND num_nonnulls(actor_kind::phigate.audit_actor_kind, credential_id::phigate.audit_credential_id) >= 0
  ) NOT VALID;

-- phi_usage's rule (051) as one domain over its row's four checked columns: a batch writes one row
-- per principal, so reading the fields from the composite costs little, and the table's CHECK is
-- one coercion.
CREATE TYPE phigate.phi_usage_facts AS (actor_kind text, minute timestamptz, rows_used integer, values_used integer);
CREATE DOMAIN phigate.phi_usage_valid AS phigate.phi_usage_facts
  CHECK (
    (VALUE).actor_kind = ANY ('{user,partner}'::text[]) AND (VALUE).minute = date_trunc('minute', (VALUE).minute)
    AND (VALUE).rows_used >= 0 AND (VALUE).values_used >= 0
  );

ALTER TABLE phigate.phi_usage
  DROP CONSTRAINT phi_usage_valid,
  ADD CONSTRAINT phi_usage_valid CHECK (num_nonnulls(ROW(actor_kind, minute, rows_used, values_used)::phigate.phi_usage_valid) = 1) NOT VALID;
