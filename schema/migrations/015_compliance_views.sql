-- Compliance views over the audit trail (auditEvents, disclosures) and alerts computed from it.
--
-- The gateway role may only insert audit rows. It reads them through the SECURITY DEFINER
-- functions below and nothing else: each checks that the request's context holds a role that may
-- read the audit trail (compliance, as policies/default.yaml grants `readAuditTrail`) and keeps
-- to the request's clinics.
--
-- An event belongs to the clinic of its patient. An event that names no patient (a refused
-- request, a search that found nothing, an alert, a compliance query without a patient filter),
-- or names an id that is no patient, belongs to no clinic: every audit reader sees it. Such rows
-- carry ids and codes only, and a search miss in particular is the one kind of evidence of a
-- probe that no clinic owns.

-- Which clinic a patient is in, for the definer functions only. Row security on patients binds
-- the owner too (FORCE), and a policy letting the owner read patients would let every owner
-- function read them; this table holds two non-PHI columns, nobody but the owner can read it, and
-- a patient never changes clinic (no column privilege on patients.clinic_id).
CREATE TABLE phigate.patient_clinics (
  patient_id uuid PRIMARY KEY,
  clinic_id  text NOT NULL
);
REVOKE ALL ON phigate.patient_clinics FROM PUBLIC;

CREATE FUNCTION phigate.remember_patient_clinic() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  INSERT INTO phigate.patient_clinics (patient_id, clinic_id) VALUES (NEW.id, NEW.clinic_id);
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION phigate.remember_patient_clinic() FROM PUBLIC;
CREATE TRIGGER patients_remember_clinic AFTER INSERT ON phigate.patients
  FOR EACH ROW EXECUTE FUNCTION phigate.remember_patient_clinic();

-- Patients written before this migration: a policy that exists only inside this transaction.
CREATE POLICY patients_backfill_clinics ON phigate.patients FOR SELECT TO phigate_owner USING (true);
INSERT INTO phigate.patient_clinics (patient_id, clinic_id) SELECT id, clinic_id FROM phigate.patients;
DROP POLICY patients_backfill_clinics ON phigate.patients;

-- Mirrors the roles policies/default.yaml grants `readAuditTrail` (test/integration/graphql/compliance-views.test.ts).
CREATE FUNCTION phigate.ctx_audit_reader() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT phigate.ctx_roles() && ARRAY['compliance'] $$;
REVOKE ALL ON FUNCTION phigate.ctx_audit_reader() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.ctx_audit_reader() TO phigate_app;

-- Filters of auditEvents. The patient and actor filters use audit_events_patient and
-- audit_events_actor (002); these cover the others without taxing the rows written most: reads,
-- masked reads and denials are most of the log and stay out of the two partial indexes.
CREATE INDEX audit_events_rare_action ON phigate.audit_events (action, id) WHERE action NOT IN ('read', 'masked', 'denied');
CREATE INDEX audit_events_break_glass ON phigate.audit_events (id) WHERE break_glass;
-- Time ranges (since/until, and the alert sweep below): rows arrive in time order, so a BRIN
-- index of a few pages answers them; it costs an insert almost nothing. Pages not yet summarised
-- always match, so autovacuum summarises each range as soon as the next one starts (autosummarize).
CREATE INDEX audit_events_occurred_brin ON phigate.audit_events USING brin (occurred_at) WITH (pages_per_range = 16, autosummarize = on);

-- One page of events, newest first, keyset on id (p_before: the last id of the previous page).
-- Built as dynamic SQL so each call is planned for the filters it has (a generic plan of
-- "$1 IS NULL OR ..." would use no index).
CREATE FUNCTION phigate.compliance_audit_events(
  p_patient_id uuid, p_actor text, p_action text, p_break_glass_only boolean,
  p_since timestamptz, p_until timestamptz, p_before bigint, p_limit integer)
RETURNS TABLE (id bigint, occurred_at timestamptz, request_id text, actor text, actor_kind text, role text,
               purpose text, break_glass boolean, client_addr text, action text, type_name text, field text,
               patient_id uuid, record_id uuid, detail text, grant_id uuid, credential_id text, clinic_id text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  q text := 'SELECT e.id, e.occurred_at, e.request_id, e.actor, e.actor_kind, e.role, e.purpose, e.break_glass,
                    e.client_addr, e.action, e.type_name, e.field, e.patient_id, e.record_id, e.detail, e.grant_id,
                    e.credential_id, pc.clinic_id
             FROM phigate.audit_events e LEFT JOIN phigate.patient_clinics pc ON pc.patient_id = e.patient_id
             WHERE (pc.clinic_id IS NULL OR pc.clinic_id = ANY ($9))';
BEGIN
  IF NOT phigate.ctx_audit_reader() THEN
    RAISE EXCEPTION 'the request may not read the audit trail' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1001 THEN
    RAISE EXCEPTION 'page size out of range' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_patient_id IS NOT NULL THEN q := q || ' AND e.patient_id = $1'; END IF;
  IF p_actor IS NOT NULL THEN q := q || ' AND e.actor = $2'; END IF;
  IF p_action IS NOT NULL THEN q := q || ' AND e.action = $3'; END IF;
  IF p_break_glass_only THEN q := q || ' AND e.break_glass'; END IF;
  IF p_since IS NOT NULL THEN q := q || ' AND e.occurred_at >= $5'; END IF;
  IF p_until IS NOT NULL THEN q := q || ' AND e.occurred_at < $6'; END IF;
  IF p_before IS NOT NULL THEN q := q || ' AND e.id < $7'; END IF;
  RETURN QUERY EXECUTE q || ' ORDER BY e.id DESC LIMIT $8'
    USING p_patient_id, p_actor, p_action, p_break_glass_only, p_since, p_until, p_before, p_limit, phigate.ctx_clinics();
END
$$;

-- The HIPAA 164.528 accounting of one patient: one row per request that showed something of the
-- patient (values, masked values, a search that found it, a break-glass grant on it), with who,
-- when, which fields, why, and whether under break-glass. No row for a patient outside the
-- request's clinics; compliance_patient_in_scope tells that apart from a patient never disclosed
-- (without aborting the request's transaction, which still has to commit the query's own event).
CREATE FUNCTION phigate.compliance_patient_in_scope(p_patient_id uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT phigate.ctx_audit_reader() AND EXISTS (
    SELECT 1 FROM phigate.patient_clinics pc WHERE pc.patient_id = p_patient_id AND pc.clinic_id = ANY (phigate.ctx_clinics()))
$$;

CREATE FUNCTION phigate.compliance_disclosures(p_patient_id uuid, p_since timestamptz, p_until timestamptz, p_limit integer)
RETURNS TABLE (disclosed_at timestamptz, request_id text, actor text, actor_kind text, credential_id text, role text,
               purpose text, break_glass boolean, grant_id uuid, client_addr text, fields text[], masked_fields text[],
               searches text[], events integer)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  IF NOT phigate.ctx_audit_reader() THEN
    RAISE EXCEPTION 'the request may not read the audit trail' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NOT phigate.compliance_patient_in_scope(p_patient_id) THEN
    RETURN;
  END IF;
  RETURN QUERY
    SELECT min(e.occurred_at), e.request_id, e.actor, e.actor_kind, e.credential_id, e.role, e.purpose, e.break_glass,
           e.grant_id, min(e.client_addr),
           coalesce(array_agg(DISTINCT e.type_name || '.' || e.field) FILTER (WHERE e.action = 'read'), '{}'),
           coalesce(array_agg(DISTINCT e.type_name || '.' || e.field) FILTER (WHERE e.action = 'masked'), '{}'),
           coalesce(array_agg(DISTINCT e.detail) FILTER (WHERE e.action = 'search'), '{}'),
           count(*)::integer
    FROM phigate.audit_events e
    WHERE e.patient_id = p_patient_id
      AND e.action IN ('read', 'masked', 'search', 'break_glass')
      AND (e.action <> 'break_glass' OR e.detail = 'granted')
      AND (p_since IS NULL OR e.occurred_at >= p_since)
      AND (p_until IS NULL OR e.occurred_at < p_until)
    GROUP BY e.request_id, e.actor, e.actor_kind, e.credential_id, e.role, e.purpose, e.break_glass, e.grant_id
    ORDER BY 1 DESC, 2
    LIMIT p_limit;
END
$$;

REVOKE ALL ON FUNCTION phigate.compliance_audit_events(uuid, text, text, boolean, timestamptz, timestamptz, bigint, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION phigate.compliance_disclosures(uuid, timestamptz, timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION phigate.compliance_patient_in_scope(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.compliance_patient_in_scope(uuid) TO phigate_app;
GRANT EXECUTE ON FUNCTION phigate.compliance_audit_events(uuid, text, text, boolean, timestamptz, timestamptz, bigint, integer) TO phigate_app;
GRANT EXECUTE ON FUNCTION phigate.compliance_disclosures(uuid, timestamptz, timestamptz, integer) TO phigate_app;

-- Alerts (src/audit/alert-sweep.ts). Computed here, from committed audit rows, by whichever
-- replica sweeps first (the others skip the locked row): no request pays for them, and every
-- replica's events count toward one window. A sweep looks at events up to a settle time in the
-- past, so that a transaction still in flight cannot add to a window after it was counted, and
-- recounts the current minute from its start, so a threshold crossed across two sweeps is seen.
CREATE TABLE phigate.alert_sweep (
  only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  swept_until timestamptz NOT NULL
);
INSERT INTO phigate.alert_sweep (swept_until) VALUES (clock_timestamp());

-- One row per alert raised: its key makes each alert fire once per actor and window.
CREATE TABLE phigate.alerts_raised (
  kind         text NOT NULL CHECK (kind IN ('bulk_read', 'denied_spike', 'off_hours')),
  actor_kind   text NOT NULL,
  actor        text NOT NULL,
  window_start timestamptz NOT NULL,
  observed     integer NOT NULL,
  raised_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (kind, actor_kind, actor, window_start)
);
REVOKE ALL ON phigate.alert_sweep, phigate.alerts_raised FROM PUBLIC;

-- Thresholds come from the gateway's settings (PHIGATE_ALERT_*). Per actor: more than
-- p_bulk_patients distinct patients read in a minute; more than p_denied denied fields in a minute;
-- any read by a user outside [p_day_start, p_day_end) in p_time_zone (once per local day; a start
-- after the end is a night span). Each alert is also an audit event (action 'alert').
CREATE FUNCTION phigate.sweep_alerts(
  p_bulk_patients integer, p_denied integer, p_day_start time, p_day_end time, p_time_zone text, p_settle_seconds integer)
RETURNS TABLE (kind text, actor_kind text, actor text, window_start timestamptz, observed integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  from_ts timestamptz;
  to_ts timestamptz := clock_timestamp() - make_interval(secs => p_settle_seconds);
  sweep_id text := 'alert-sweep-' || gen_random_uuid();
BEGIN
  SELECT s.swept_until INTO from_ts FROM phigate.alert_sweep s FOR UPDATE SKIP LOCKED;
  IF NOT FOUND OR to_ts <= from_ts THEN
    RETURN;
  END IF;
  RETURN QUERY
  WITH ev AS (
    SELECT e.actor_kind, e.actor, e.action, e.patient_id, e.occurred_at
    FROM phigate.audit_events e
    WHERE e.occurred_at >= date_trunc('minute', from_ts) AND e.occurred_at < to_ts
      AND e.action IN ('read', 'masked', 'denied') AND e.actor_kind IN ('user', 'partner')
  ), found AS (
    SELECT 'bulk_read'::text AS kind, ev.actor_kind, ev.actor, date_trunc('minute', ev.occurred_at) AS window_start,
           count(DISTINCT ev.patient_id)::integer AS observed
    FROM ev WHERE ev.action IN ('read', 'masked') GROUP BY 2, 3, 4 HAVING count(DISTINCT ev.patient_id) > p_bulk_patients
    UNION ALL
    SELECT 'denied_spike', ev.actor_kind, ev.actor, date_trunc('minute', ev.occurred_at), count(*)::integer
    FROM ev WHERE ev.action = 'denied' GROUP BY 2, 3, 4 HAVING count(*) > p_denied
    UNION ALL
    SELECT 'off_hours', ev.actor_kind, ev.actor,
           date_trunc('day', ev.occurred_at AT TIME ZONE p_time_zone) AT TIME ZONE p_time_zone, count(*)::integer
    FROM ev
    WHERE ev.occurred_at >= from_ts AND ev.actor_kind = 'user' AND ev.action IN ('read', 'masked')
      AND NOT CASE WHEN p_day_start <= p_day_end
                   THEN (ev.occurred_at AT TIME ZONE p_time_zone)::time >= p_day_start AND (ev.occurred_at AT TIME ZONE p_time_zone)::time < p_day_end
                   ELSE (ev.occurred_at AT TIME ZONE p_time_zone)::time >= p_day_start OR (ev.occurred_at AT TIME ZONE p_time_zone)::time < p_day_end
              END
    GROUP BY 2, 3, 4
  ), raised AS (
    INSERT INTO phigate.alerts_raised AS r (kind, actor_kind, actor, window_start, observed)
    SELECT f.kind, f.actor_kind, f.actor, f.window_start, f.observed FROM found f
    ON CONFLICT DO NOTHING
    RETURNING r.kind, r.actor_kind, r.actor, r.window_start, r.observed
  ), recorded AS (
    INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name, detail)
    SELECT sweep_id, r.actor, r.actor_kind, 'healthcare_operations', 'alert', 'Alert', r.kind || ':' || r.observed FROM raised r
  )
  SELECT r.kind, r.actor_kind, r.actor, r.window_start, r.observed FROM raised r;
  UPDATE phigate.alert_sweep SET swept_until = to_ts;
END
$$;
REVOKE ALL ON FUNCTION phigate.sweep_alerts(integer, integer, time, time, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.sweep_alerts(integer, integer, time, time, text, integer) TO phigate_app;
