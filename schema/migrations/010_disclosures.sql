-- Disclosures the outside review found (issue 11, items 1, 2 and 8).

-- 1. Searches by identifier, counted per principal and minute (PHIGATE_SEARCHES_PER_MINUTE), so an
-- enumeration of SSNs is slowed whatever the replica, the alias or the outcome. Counts only, no
-- identifier. The count is taken in the request's transaction before the blind index is read: a
-- request that rolls back (and so shows nothing) gives its count back with everything else.
CREATE TABLE phigate.search_usage (
  actor_kind text NOT NULL CHECK (actor_kind IN ('user', 'partner')),
  actor      text NOT NULL,
  minute     timestamptz NOT NULL CHECK (minute = date_trunc('minute', minute)),
  searches   integer NOT NULL CHECK (searches >= 0),
  PRIMARY KEY (actor_kind, actor, minute)
);

-- One statement: counts the search and answers whether it is within the cap, and if not how many
-- seconds are left of the minute (by the database clock, which every replica shares). The row
-- lock serialises only the principal's own concurrent searches, until their requests commit.
CREATE FUNCTION phigate.take_search(p_actor_kind text, p_actor text, cap integer, OUT allowed boolean, OUT retry_after_seconds integer)
LANGUAGE plpgsql AS $$
DECLARE
  window_minute timestamptz := date_trunc('minute', clock_timestamp());
  used integer;
BEGIN
  UPDATE phigate.search_usage u SET searches = u.searches + 1
    WHERE u.actor_kind = p_actor_kind AND u.actor = p_actor AND u.minute = window_minute
    RETURNING u.searches INTO used;
  IF NOT FOUND THEN
    DELETE FROM phigate.search_usage u WHERE u.actor_kind = p_actor_kind AND u.actor = p_actor AND u.minute < window_minute;
    INSERT INTO phigate.search_usage AS u (actor_kind, actor, minute, searches)
      VALUES (p_actor_kind, p_actor, window_minute, 1)
      ON CONFLICT (actor_kind, actor, minute) DO UPDATE SET searches = u.searches + 1
      RETURNING u.searches INTO used;
  END IF;
  allowed := used <= cap;
  retry_after_seconds := greatest(1, ceil(extract(epoch FROM window_minute + interval '1 minute' - clock_timestamp())))::integer;
END
$$;

REVOKE ALL ON phigate.search_usage FROM PUBLIC;
REVOKE ALL ON FUNCTION phigate.take_search(text, text, integer) FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON phigate.search_usage TO phigate_app;
GRANT EXECUTE ON FUNCTION phigate.take_search(text, text, integer) TO phigate_app;

-- 2. An encounter's kind is PHI and is stored encrypted like reason and notes (AAD column `kind`).
-- SQL cannot encrypt, so rows written before this migration keep their value in `kind_legacy`
-- (served through the same policy, caps and audit as the ciphertext, see src/graphql/types/encounter.ts)
-- until they are re-sealed; every new row has ciphertext only, and the app role cannot write the
-- plaintext column at all. Exactly one of the two is set.
ALTER TABLE phigate.encounters RENAME COLUMN kind TO kind_legacy;
ALTER TABLE phigate.encounters ALTER COLUMN kind_legacy DROP NOT NULL;
ALTER TABLE phigate.encounters ADD COLUMN kind bytea;
ALTER TABLE phigate.encounters ADD CONSTRAINT encounters_kind_once CHECK ((kind IS NULL) <> (kind_legacy IS NULL));
REVOKE INSERT ON phigate.encounters FROM phigate_app;
GRANT INSERT (id, patient_id, clinic_id, occurred_at, kind, reason, diagnosis_codes, notes) ON phigate.encounters TO phigate_app;
-- occurred_at stays plaintext: encounters are listed newest first through encounters_patient, and
-- an encrypted timestamp cannot be ordered by the database (README, "Visit dates"). What protects
-- it: row security as for every PHI column, the field policy, the per-request and per-minute caps
-- and an audit row per value shown, and no reader outside the gateway (analytics below).

-- 8. An SSN identifies one person: a second patient of the same clinic with it is refused, so a
-- lookup by it keeps finding the real one. A deployment that already holds such a pair stops here
-- (23505 naming this index) until a person decides which record is the patient's.
CREATE UNIQUE INDEX patients_clinic_ssn ON phigate.patients (clinic_id, ssn_bidx) WHERE ssn_bidx IS NOT NULL;

-- 8. Separation of duties: nobody puts themselves on a care team (that is how a clinic admin who is
-- also a physician would grant itself the notes); another admin must. The gateway refuses first
-- with FORBIDDEN (src/records/set-care-team.ts); this is the same rule below it.
DROP POLICY care_team_insert ON phigate.care_team;
CREATE POLICY care_team_insert ON phigate.care_team FOR INSERT TO phigate_app WITH CHECK (
  clinic_id = ANY ((SELECT phigate.ctx_clinics())::text[])
  AND (SELECT phigate.ctx_roles()) && ARRAY['clinic_admin']
  AND subject IS DISTINCT FROM (SELECT phigate.ctx_actor())
);

-- 8. Analytics gets aggregates, not patients: no patient-level row, no date finer than a month, and
-- no cell small enough to point at a person (fewer than 11 patients, the usual small-cell rule).
-- The views run as their owner, so analytics needs no privilege on the tables at all. Through a
-- view, row security applies the owner's policies (FORCE binds the owner too) while current_user is
-- still the caller: the policies below let the owner's views read the rows only when an analytics
-- login is the one asking, so the owner itself, and everyone else, still sees no row.
DROP POLICY patients_analytics ON phigate.patients;
DROP POLICY encounters_analytics ON phigate.encounters;
REVOKE ALL ON phigate.patients, phigate.encounters FROM phigate_analytics;

CREATE POLICY encounters_aggregates ON phigate.encounters FOR SELECT TO phigate_owner
  USING ((SELECT pg_has_role(current_user, 'phigate_analytics', 'MEMBER')));
CREATE POLICY patients_aggregates ON phigate.patients FOR SELECT TO phigate_owner
  USING ((SELECT pg_has_role(current_user, 'phigate_analytics', 'MEMBER')));

CREATE VIEW phigate.analytics_encounters_by_month WITH (security_barrier) AS
  SELECT clinic_id, date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date AS month,
         count(*)::integer AS encounters, count(DISTINCT patient_id)::integer AS patients
  FROM phigate.encounters
  GROUP BY 1, 2
  HAVING count(DISTINCT patient_id) >= 11;

CREATE VIEW phigate.analytics_patients_by_clinic WITH (security_barrier) AS
  SELECT clinic_id, count(*)::integer AS patients
  FROM phigate.patients
  GROUP BY 1
  HAVING count(*) >= 11;

REVOKE ALL ON phigate.analytics_encounters_by_month, phigate.analytics_patients_by_clinic FROM PUBLIC;
GRANT SELECT ON phigate.analytics_encounters_by_month, phigate.analytics_patients_by_clinic TO phigate_analytics;
