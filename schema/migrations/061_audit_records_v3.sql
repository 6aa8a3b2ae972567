-- Fewer, larger audit records for a page (issue 10; bench/README.md, branch rec3).
--
-- A page of 100 patients was a hundred rows of phigate.audit_records (028): one per (request,
-- patient, role, purpose, break-glass, grant), each with its heap tuple, its entries in six
-- indexes and its CHECK, though the patients of a page share every fact and, mostly, every
-- per-event array but the record ids. Patients of one request that share a group and a "shape"
-- (the same actions, type_names, fields and details) are now ONE row of phigate.audit_records_v3:
--
--   patient_ids  the record's 2 to 65,536 patients, in order;
--   actions, type_names, fields, details   the shape, once (L elements);
--   record_ids   one per event, L x patients: event i (from 0) is shape event i % L about
--                patient i / L, with id (id << 16) + i.
--
-- Ids come from audit_records' own sequence, so event ids stay unique and increasing over
-- v1 events, v2 records and v3 records, and a record still holds at most 65,536 events. A record
-- of one patient (a read by id, by SSN, a write) is written as before into audit_records: those
-- batches send the same statement to the same table, with its indexes and CHECK unchanged (a
-- column and a GIN index added to audit_records cost a read by id +7% in PostgreSQL, mostly in
-- what every INSERT compiles: bench/README.md).
--
-- Readers by patient find a v3 record through phigate.audit_record_patients, one row per (patient,
-- record) that a trigger writes beside each v3 record, and its btree (patient_id, record_id): the
-- view's rows by patient_id, an auditor's plain SQL included, are found through it in record
-- order, as audit_records_patient finds v2 records. A GIN index of patient_ids cost 0.7 M
-- instructions a page less, but no condition on patient_id reaches it (bench/README.md).
--
-- record_ids and patient_ids are stored EXTERNAL: a page's record ids are past the TOAST
-- threshold, and pglz, trying to compress random uuids, cost 0.7 M instructions a page batch for
-- nothing (callgrind, bench/README.md).

CREATE TABLE phigate.audit_records_v3 (
  id            bigint PRIMARY KEY DEFAULT nextval('phigate.audit_records_id_seq'),
  occurred_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
  tx            xid8 NOT NULL DEFAULT pg_current_xact_id(),
  batch_id      uuid,
  request_id    text NOT NULL,
  actor         text NOT NULL,
  actor_kind    text NOT NULL,
  client_addr   text,
  credential_id text,
  role          text,
  purpose       text NOT NULL,
  break_glass   boolean NOT NULL DEFAULT false,
  grant_id      uuid,
  patient_ids   uuid[] NOT NULL,
  actions       text[] NOT NULL,
  type_names    text[] NOT NULL,
  fields        text[] NOT NULL,
  record_ids    uuid[] NOT NULL,
  details       text[] NOT NULL,
  -- audit_records' rules (059's domains), with the record ids L per patient.
  CONSTRAINT audit_records_v3_valid CHECK (
    cardinality(actions::phigate.audit_actions)
      = ALL (ARRAY[cardinality(type_names::phigate.audit_type_names), cardinality(fields), cardinality(details::phigate.audit_details)])
    AND cardinality(record_ids) = cardinality(actions) * cardinality(patient_ids) AND cardinality(record_ids) <= 65536
    AND array_ndims(patient_ids) = 1 AND cardinality(patient_ids) >= 2 AND array_position(patient_ids, NULL) IS NULL
    AND num_nonnulls(actor_kind::phigate.audit_actor_kind, credential_id::phigate.audit_credential_id) >= 0
  )
);
ALTER TABLE phigate.audit_records_v3
  ALTER COLUMN record_ids SET STORAGE EXTERNAL,
  ALTER COLUMN patient_ids SET STORAGE EXTERNAL;

-- audit_records' readers' indexes but the patient's (audit_record_patients below).
CREATE INDEX audit_records_v3_actor ON phigate.audit_records_v3 (actor, id);
CREATE INDEX audit_records_v3_tx ON phigate.audit_records_v3 (tx, id);
CREATE INDEX audit_records_v3_rare_action ON phigate.audit_records_v3 (id)
  WHERE NOT (actions <@ ARRAY['read', 'masked', 'denied']::text[]);
CREATE INDEX audit_records_v3_break_glass ON phigate.audit_records_v3 (id) WHERE break_glass;
CREATE INDEX audit_records_v3_occurred_brin ON phigate.audit_records_v3 USING brin (occurred_at)
  WITH (pages_per_range = 16, autosummarize = on);

CREATE TRIGGER audit_records_v3_append_only BEFORE UPDATE OR DELETE ON phigate.audit_records_v3
  FOR EACH ROW EXECUTE FUNCTION phigate.refuse_audit_rewrite();
CREATE TRIGGER audit_records_v3_no_truncate BEFORE TRUNCATE ON phigate.audit_records_v3
  FOR EACH STATEMENT EXECUTE FUNCTION phigate.refuse_audit_rewrite();

-- The patients of each v3 record, written with it by a trigger of the owner (the gateway may not
-- read a record's id back). Its slot is the patient's place in patient_ids (from 1). A BRIN of
-- record_id serves retention, which removes the rows of the records it removes.
CREATE TABLE phigate.audit_record_patients (
  patient_id uuid NOT NULL,
  record_id  bigint NOT NULL,
  slot       integer NOT NULL
);
-- Unique: a record lists a patient once (src/audit/insert.ts starts another record rather than
-- list one twice), so a row added beside the writer's cannot double a patient's events.
CREATE UNIQUE INDEX audit_record_patients_patient ON phigate.audit_record_patients (patient_id, record_id);
CREATE INDEX audit_record_patients_record_brin ON phigate.audit_record_patients USING brin (record_id)
  WITH (pages_per_range = 16, autosummarize = on);

-- The view and the disclosures find a v3 record's events only through these rows, so a row that
-- does not go in (a trigger that drops it) fails the batch as a record that does not (PH500): the
-- writer's count (audit_batch_written_v3) sees the record, not its patients.
CREATE FUNCTION phigate.audit_record_patients_add() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  n bigint;
BEGIN
  INSERT INTO phigate.audit_record_patients (patient_id, record_id, slot)
  SELECT u.patient_id, NEW.id, u.slot FROM unnest(NEW.patient_ids) WITH ORDINALITY AS u(patient_id, slot);
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n IS DISTINCT FROM cardinality(NEW.patient_ids)::bigint THEN
    RAISE EXCEPTION 'audit rows written differ from the events of the batch'
      USING ERRCODE = 'PH500', DETAIL = format('%s of %s patients of a record', n, cardinality(NEW.patient_ids));
  END IF;
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION phigate.audit_record_patients_add() FROM PUBLIC;
CREATE TRIGGER audit_records_v3_patients AFTER INSERT ON phigate.audit_records_v3
  FOR EACH ROW EXECUTE FUNCTION phigate.audit_record_patients_add();

CREATE TRIGGER audit_record_patients_append_only BEFORE UPDATE OR DELETE ON phigate.audit_record_patients
  FOR EACH ROW EXECUTE FUNCTION phigate.refuse_audit_rewrite();
CREATE TRIGGER audit_record_patients_no_truncate BEFORE TRUNCATE ON phigate.audit_record_patients
  FOR EACH STATEMENT EXECUTE FUNCTION phigate.refuse_audit_rewrite();
REVOKE ALL ON phigate.audit_record_patients FROM PUBLIC;
GRANT SELECT ON phigate.audit_record_patients TO phigate_auditor;

REVOKE ALL ON phigate.audit_records_v3 FROM PUBLIC;
-- As for audit_records: the gateway names neither a record's id, time nor transaction. The id's
-- default draws from audit_records' sequence, which an inserting role must be allowed to use.
GRANT INSERT (batch_id, request_id, actor, actor_kind, client_addr, credential_id, role, purpose, break_glass,
              grant_id, patient_ids, actions, type_names, fields, record_ids, details)
  ON phigate.audit_records_v3 TO phigate_app;
GRANT USAGE ON SEQUENCE phigate.audit_records_id_seq TO phigate_app;
GRANT SELECT ON phigate.audit_records_v3 TO phigate_auditor;

-- 030's append-only rule, with v3 records: one leaves only with its retention run, and a row of
-- its patients only once its record has left.
CREATE OR REPLACE FUNCTION phigate.refuse_audit_rewrite() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
BEGIN
  IF TG_OP = 'DELETE' AND TG_WHEN = 'BEFORE' AND TG_LEVEL = 'ROW' AND TG_TABLE_SCHEMA = 'phigate'
     AND TG_TABLE_NAME = 'audit_record_patients' THEN
    IF NOT EXISTS (SELECT 1 FROM phigate.audit_records_v3 r WHERE r.id = OLD.record_id) THEN
      RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
      USING ERRCODE = 'insufficient_privilege', HINT = 'events leave only through phigate audit retain';
  END IF;
  -- Nested: the query is planned only where OLD is an event or record row.
  IF TG_OP = 'DELETE' AND TG_WHEN = 'BEFORE' AND TG_LEVEL = 'ROW' AND TG_TABLE_SCHEMA = 'phigate'
     AND TG_TABLE_NAME IN ('audit_events_v1', 'audit_records', 'audit_records_v3') THEN
    IF EXISTS (
      SELECT 1
      FROM phigate.audit_retention_runs r
      JOIN phigate.audit_log l ON l.event_id = CASE WHEN TG_TABLE_NAME = 'audit_events_v1' THEN OLD.id ELSE OLD.id << 16 END
      WHERE r.tx = pg_current_xact_id() AND l.leaf_index >= r.from_leaf AND l.leaf_index < r.to_leaf AND OLD.occurred_at < r.cutoff
    ) THEN
      RETURN OLD;
    END IF;
  END IF;
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege', HINT = 'events leave only through phigate audit retain';
END
$$;

-- 051's check for a batch that writes v3 records: its events counted over both tables. A batch
-- of v2 records only calls audit_batch_written, which reads audit_records alone, as before.
CREATE FUNCTION phigate.audit_batch_written_v3(p_batch uuid, p_events integer, p_accepted bigint, p_charges integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  n bigint;
BEGIN
  IF p_accepted IS DISTINCT FROM p_charges::bigint THEN
    RAISE EXCEPTION 'a PHI charge of the batch was refused'
      USING ERRCODE = 'PH430', DETAIL = format('%s of %s accepted', p_accepted, p_charges);
  END IF;
  SELECT coalesce((SELECT sum(cardinality(r.actions)) FROM phigate.audit_records r
                   WHERE r.tx = pg_current_xact_id() AND r.batch_id = p_batch), 0)
       + coalesce((SELECT sum(cardinality(r.record_ids)) FROM phigate.audit_records_v3 r
                   WHERE r.tx = pg_current_xact_id() AND r.batch_id = p_batch), 0)
    INTO n;
  IF n IS DISTINCT FROM p_events::bigint THEN
    RAISE EXCEPTION 'audit rows written differ from the events of the batch'
      USING ERRCODE = 'PH500', DETAIL = format('%s of %s', n, p_events);
  END IF;
  RETURN p_events;
END
$$;
REVOKE ALL ON FUNCTION phigate.audit_batch_written_v3(uuid, integer, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.audit_batch_written_v3(uuid, integer, bigint, integer) TO phigate_app;

-- The view, with v3 records patient by patient from audit_record_patients, each patient's slice
-- of record_ids beside the shape: a filter on patient_id is an index condition of
-- audit_record_patients_patient. A slice walks record_ids from its start (it has a NULL
-- bitmap), ~100 slices a page's record, where subscripting it per event walked ~1,200 times.
-- Replacing the view takes its exclusive lock: asked for with a bound, so that behind a long
-- auditor's read the migration fails (55P03, run it again) instead of holding every reader and the
-- key, retention and sweep inserts through the view behind it.
SET LOCAL lock_timeout = '5s';
CREATE OR REPLACE VIEW phigate.audit_events AS
  SELECT v.id, v.occurred_at, v.request_id, v.actor, v.actor_kind, v.role, v.purpose, v.break_glass, v.client_addr,
         v.action, v.type_name, v.field, v.patient_id, v.record_id, v.detail, v.grant_id, v.credential_id,
         v.batch_id, v.tx
  FROM phigate.audit_events_v1 v
  UNION ALL
  SELECT (r.id << 16) + e.n - 1, r.occurred_at, r.request_id, r.actor, r.actor_kind, r.role, r.purpose, r.break_glass,
         r.client_addr, e.action, e.type_name, e.field, r.patient_id, e.record_id, e.detail, r.grant_id,
         r.credential_id, r.batch_id, r.tx
  FROM phigate.audit_records r
  CROSS JOIN LATERAL unnest(r.actions, r.type_names, r.fields, r.record_ids, r.details)
    WITH ORDINALITY AS e(action, type_name, field, record_id, detail, n)
  UNION ALL
  SELECT (r.id << 16) + (p.slot - 1) * cardinality(r.actions) + e.n - 1, r.occurred_at, r.request_id, r.actor, r.actor_kind,
         r.role, r.purpose, r.break_glass, r.client_addr, e.action, e.type_name, e.field, p.patient_id, e.record_id, e.detail,
         r.grant_id, r.credential_id, r.batch_id, r.tx
  FROM phigate.audit_record_patients p
  JOIN phigate.audit_records_v3 r ON r.id = p.record_id AND r.patient_ids[p.slot] = p.patient_id
  CROSS JOIN LATERAL unnest(r.actions, r.type_names, r.fields,
                            r.record_ids[(p.slot - 1) * cardinality(r.actions) + 1 : p.slot * cardinality(r.actions)], r.details)
    WITH ORDINALITY AS e(action, type_name, field, record_id, detail, n);

-- 029's compliance_audit_events with v3 records: the newest matching records of each table,
-- a v3 record found by patient through audit_record_patients and kept when one of its
-- patients (the one asked for, if one is) is in the reader's clinics; it gives only those
-- patients' events.
CREATE OR REPLACE FUNCTION phigate.compliance_audit_events(
  p_patient_id uuid, p_actor text, p_action text, p_break_glass_only boolean,
  p_since timestamptz, p_until timestamptz, p_before bigint, p_limit integer)
RETURNS TABLE (id bigint, occurred_at timestamptz, request_id text, actor text, actor_kind text, role text,
               purpose text, break_glass boolean, client_addr text, action text, type_name text, field text,
               patient_id uuid, record_id uuid, detail text, grant_id uuid, credential_id text, clinic_id text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  filters text := '';
  q text;
  q3 text;
  found_rows bigint;
BEGIN
  IF NOT phigate.ctx_audit_reader() THEN
    RAISE EXCEPTION 'the request may not read the audit trail' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1001 THEN
    RAISE EXCEPTION 'page size out of range' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- Filters of a record's shared facts: the same text serves every table (e names each).
  IF p_actor IS NOT NULL THEN filters := filters || ' AND e.actor = $2'; END IF;
  IF p_break_glass_only THEN filters := filters || ' AND e.break_glass'; END IF;
  IF p_since IS NOT NULL THEN filters := filters || ' AND e.occurred_at >= $5'; END IF;
  IF p_until IS NOT NULL THEN filters := filters || ' AND e.occurred_at < $6'; END IF;
  IF p_action IS NOT NULL THEN
    filters := filters || ' AND $3 = ANY (e.actions)';
    -- The predicate of the rare-action indexes, so that they answer a rare action.
    IF p_action NOT IN ('read', 'masked', 'denied') THEN
      filters := filters || ' AND NOT (e.actions <@ ARRAY[''read'', ''masked'', ''denied'']::text[])';
    END IF;
  END IF;
  IF p_before IS NOT NULL THEN filters := filters || ' AND e.id <= ($7 - 1) >> 16'; END IF;

  -- The newest records that match come first, by themselves: each holds at least one event of the
  -- page (the action filter is also a record's, and a v3 record is kept only with a patient of
  -- the page), but for the record the cursor cuts, whose events may all be past it: hence one
  -- record more than the page, from each table, then from both.
  q := 'SELECT e.id, e.occurred_at, e.request_id, e.actor, e.actor_kind, e.role, e.purpose, e.break_glass,
               e.client_addr, e.patient_id, NULL::uuid[] AS patient_ids, e.grant_id, e.credential_id, e.actions,
               e.type_names, e.fields, e.record_ids, e.details, pc.clinic_id
        FROM phigate.audit_records e LEFT JOIN phigate.patient_clinics pc ON pc.patient_id = e.patient_id
        WHERE (pc.clinic_id IS NULL OR pc.clinic_id = ANY ($9))' || filters;
  IF p_patient_id IS NOT NULL THEN q := q || ' AND e.patient_id = $1'; END IF;
  q3 := 'SELECT e.id, e.occurred_at, e.request_id, e.actor, e.actor_kind, e.role, e.purpose, e.break_glass,
                e.client_addr, NULL::uuid, e.patient_ids, e.grant_id, e.credential_id, e.actions,
                e.type_names, e.fields, e.record_ids, e.details, NULL::text';
  IF p_patient_id IS NULL THEN
    q3 := q3 || ' FROM phigate.audit_records_v3 e
         WHERE EXISTS (SELECT 1 FROM unnest(e.patient_ids) AS u(patient_id)
                       LEFT JOIN phigate.patient_clinics upc ON upc.patient_id = u.patient_id
                       WHERE (upc.clinic_id IS NULL OR upc.clinic_id = ANY ($9)))' || filters || ' ORDER BY e.id DESC';
  ELSE
    -- One patient: its rows of audit_record_patients walked newest first (the index's order), each
    -- record looked up by its key in a subquery the planner may not flatten (OFFSET 0), so a page
    -- costs its own records whatever the trail's size: joined, the planner merged the patient's
    -- rows with a backward walk of the whole v3 key (276 ms for a patient of 3,000 records under
    -- 150,000 newer ones, 2 ms this way). The patient's clinic is asked once (InitPlans).
    q3 := q3 || ' FROM phigate.audit_record_patients ap
         CROSS JOIN LATERAL (SELECT e.* FROM phigate.audit_records_v3 e WHERE e.id = ap.record_id' || filters || ' OFFSET 0) e
         WHERE ap.patient_id = $1
           AND (NOT EXISTS (SELECT 1 FROM phigate.patient_clinics upc WHERE upc.patient_id = $1)
                OR EXISTS (SELECT 1 FROM phigate.patient_clinics upc WHERE upc.patient_id = $1 AND upc.clinic_id = ANY ($9)))'
        || CASE WHEN p_before IS NOT NULL THEN ' AND ap.record_id <= ($7 - 1) >> 16' ELSE '' END
        || ' ORDER BY ap.record_id DESC';
  END IF;
  -- A v2 record's events unnested; a v3 record's patient by patient (each one's clinic looked up
  -- once), its shape for each: event (k - 1) x L + n.
  q := 'SELECT (r.id << 16) + v.n - 1, r.occurred_at, r.request_id, r.actor, r.actor_kind, r.role, r.purpose,
               r.break_glass, r.client_addr, v.action, v.type_name, v.field, v.patient_id, v.record_id, v.detail,
               r.grant_id, r.credential_id, v.clinic_id
        FROM ((' || q || ' ORDER BY e.id DESC LIMIT $8 + 1) UNION ALL (' || q3 || ' LIMIT $8 + 1)
              ORDER BY id DESC LIMIT $8 + 1) r
        CROSS JOIN LATERAL (
          SELECT u.action, u.type_name, u.field, r.patient_id, u.record_id, u.detail, r.clinic_id, u.n
          FROM unnest(r.actions, r.type_names, r.fields, r.record_ids, r.details)
            WITH ORDINALITY AS u(action, type_name, field, record_id, detail, n)
          WHERE r.patient_ids IS NULL
          UNION ALL
          SELECT s.action, s.type_name, s.field, p.patient_id, r.record_ids[(p.k - 1) * cardinality(r.actions) + s.n],
                 s.detail, upc.clinic_id, (p.k - 1) * cardinality(r.actions) + s.n
          FROM unnest(r.patient_ids) WITH ORDINALITY AS p(patient_id, k)
          LEFT JOIN phigate.patient_clinics upc ON upc.patient_id = p.patient_id
          CROSS JOIN LATERAL unnest(r.actions, r.type_names, r.fields, r.details)
            WITH ORDINALITY AS s(action, type_name, field, detail, n)
          WHERE r.patient_ids IS NOT NULL AND (upc.clinic_id IS NULL OR upc.clinic_id = ANY ($9))
        ) v
        WHERE true';
  IF p_patient_id IS NOT NULL THEN q := q || ' AND v.patient_id = $1'; END IF;
  IF p_action IS NOT NULL THEN q := q || ' AND v.action = $3'; END IF;
  IF p_before IS NOT NULL THEN q := q || ' AND (r.id << 16) + v.n - 1 < $7'; END IF;
  RETURN QUERY EXECUTE q || ' ORDER BY r.id DESC, v.n DESC LIMIT $8'
    USING p_patient_id, p_actor, p_action, p_break_glass_only, p_since, p_until, p_before, p_limit, phigate.ctx_clinics();
  GET DIAGNOSTICS found_rows = ROW_COUNT;
  IF found_rows >= p_limit THEN
    RETURN;
  END IF;

  -- Not the records' action and cursor filters: the v1 event's own.
  filters := '';
  IF p_patient_id IS NOT NULL THEN filters := filters || ' AND e.patient_id = $1'; END IF;
  IF p_actor IS NOT NULL THEN filters := filters || ' AND e.actor = $2'; END IF;
  IF p_break_glass_only THEN filters := filters || ' AND e.break_glass'; END IF;
  IF p_since IS NOT NULL THEN filters := filters || ' AND e.occurred_at >= $5'; END IF;
  IF p_until IS NOT NULL THEN filters := filters || ' AND e.occurred_at < $6'; END IF;
  q := 'SELECT e.id, e.occurred_at, e.request_id, e.actor, e.actor_kind, e.role, e.purpose, e.break_glass,
               e.client_addr, e.action, e.type_name, e.field, e.patient_id, e.record_id, e.detail, e.grant_id,
               e.credential_id, pc.clinic_id
        FROM phigate.audit_events_v1 e LEFT JOIN phigate.patient_clinics pc ON pc.patient_id = e.patient_id
        WHERE (pc.clinic_id IS NULL OR pc.clinic_id = ANY ($9))' || filters;
  IF p_action IS NOT NULL THEN q := q || ' AND e.action = $3'; END IF;
  IF p_before IS NOT NULL THEN q := q || ' AND e.id < $7'; END IF;
  RETURN QUERY EXECUTE q || ' ORDER BY e.id DESC LIMIT $8'
    USING p_patient_id, p_actor, p_action, p_break_glass_only, p_since, p_until, p_before, p_limit - found_rows,
          phigate.ctx_clinics();
END
$$;

-- The log's leaf rows (030) with v3 records: version 3, patient_id NULL, the patients in a last
-- column patient_ids (src/audit/canonical.ts). The result's type changes, so the functions are
-- made again, with 030's grants. Each table's branch walks its own (tx, id) index.
DROP FUNCTION phigate.audit_leaves_to_seal(xid8, bigint, integer);
DROP FUNCTION phigate.audit_log_leaves(bigint, integer);

CREATE FUNCTION phigate.audit_leaves_to_seal(p_after_tx xid8, p_after_key bigint, p_limit integer)
RETURNS TABLE (tx xid8, key bigint, version smallint, occurred_at_us bigint, batch_id uuid, request_id text, actor text,
               actor_kind text, client_addr text, credential_id text, role text, purpose text, break_glass boolean,
               grant_id uuid, patient_id uuid, actions text[], type_names text[], fields text[], record_ids uuid[],
               details text[], patient_ids uuid[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT s.* FROM (
    (SELECT e.tx, e.id, 1::smallint, (extract(epoch FROM e.occurred_at) * 1000000)::bigint, e.batch_id, e.request_id,
            e.actor, e.actor_kind, e.client_addr, e.credential_id, e.role, e.purpose, e.break_glass, e.grant_id,
            e.patient_id, ARRAY[e.action], ARRAY[e.type_name], ARRAY[e.field], ARRAY[e.record_id], ARRAY[e.detail],
            NULL::uuid[]
     FROM phigate.audit_events_v1 e
     WHERE (e.tx, e.id) > (p_after_tx, p_after_key) AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY e.tx, e.id
     LIMIT p_limit)
    UNION ALL
    -- (r.tx, r.id << 16) > (after_tx, after_key) is (r.tx, r.id) > (after_tx, after_key >> 16): the index's terms.
    (SELECT r.tx, r.id << 16, 2::smallint, (extract(epoch FROM r.occurred_at) * 1000000)::bigint, r.batch_id, r.request_id,
            r.actor, r.actor_kind, r.client_addr, r.credential_id, r.role, r.purpose, r.break_glass, r.grant_id,
            r.patient_id, r.actions, r.type_names, r.fields, r.record_ids, r.details, NULL::uuid[]
     FROM phigate.audit_records r
     WHERE (r.tx, r.id) > (p_after_tx, p_after_key >> 16) AND r.tx < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY r.tx, r.id
     LIMIT p_limit)
    UNION ALL
    (SELECT r.tx, r.id << 16, 3::smallint, (extract(epoch FROM r.occurred_at) * 1000000)::bigint, r.batch_id, r.request_id,
            r.actor, r.actor_kind, r.client_addr, r.credential_id, r.role, r.purpose, r.break_glass, r.grant_id,
            NULL::uuid, r.actions, r.type_names, r.fields, r.record_ids, r.details, r.patient_ids
     FROM phigate.audit_records_v3 r
     WHERE (r.tx, r.id) > (p_after_tx, p_after_key >> 16) AND r.tx < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY r.tx, r.id
     LIMIT p_limit)
  ) s
  ORDER BY 1, 2
  LIMIT p_limit
$$;

CREATE FUNCTION phigate.audit_log_leaves(p_from bigint, p_limit integer)
RETURNS TABLE (leaf_index bigint, key bigint, version smallint, occurred_at_us bigint, batch_id uuid, request_id text,
               actor text, actor_kind text, client_addr text, credential_id text, role text, purpose text,
               break_glass boolean, grant_id uuid, patient_id uuid, actions text[], type_names text[], fields text[],
               record_ids uuid[], details text[], patient_ids uuid[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT l.leaf_index, l.event_id, x.*
  FROM (SELECT a.leaf_index, a.event_id FROM phigate.audit_log a WHERE a.leaf_index >= p_from ORDER BY a.leaf_index LIMIT p_limit) l
  CROSS JOIN LATERAL (
    SELECT 1::smallint, (extract(epoch FROM e.occurred_at) * 1000000)::bigint, e.batch_id, e.request_id, e.actor,
           e.actor_kind, e.client_addr, e.credential_id, e.role, e.purpose, e.break_glass, e.grant_id, e.patient_id,
           ARRAY[e.action], ARRAY[e.type_name], ARRAY[e.field], ARRAY[e.record_id], ARRAY[e.detail], NULL::uuid[]
    FROM phigate.audit_events_v1 e WHERE e.id = l.event_id
    UNION ALL
    SELECT 2::smallint, (extract(epoch FROM r.occurred_at) * 1000000)::bigint, r.batch_id, r.request_id, r.actor,
           r.actor_kind, r.client_addr, r.credential_id, r.role, r.purpose, r.break_glass, r.grant_id, r.patient_id,
           r.actions, r.type_names, r.fields, r.record_ids, r.details, NULL::uuid[]
    FROM phigate.audit_records r WHERE r.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    UNION ALL
    SELECT 3::smallint, (extract(epoch FROM r.occurred_at) * 1000000)::bigint, r.batch_id, r.request_id, r.actor,
           r.actor_kind, r.client_addr, r.credential_id, r.role, r.purpose, r.break_glass, r.grant_id, NULL::uuid,
           r.actions, r.type_names, r.fields, r.record_ids, r.details, r.patient_ids
    FROM phigate.audit_records_v3 r WHERE r.id = l.event_id >> 16 AND l.event_id & 65535 = 0
  ) x
  ORDER BY l.leaf_index
$$;
REVOKE ALL ON FUNCTION phigate.audit_leaves_to_seal(xid8, bigint, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION phigate.audit_log_leaves(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.audit_leaves_to_seal(xid8, bigint, integer) TO phigate_app;
GRANT EXECUTE ON FUNCTION phigate.audit_log_leaves(bigint, integer) TO phigate_app;

-- 036's retention, with v3 records: removed by leaf as records are, their events counted as their record ids.
CREATE OR REPLACE FUNCTION phigate.retain_audit_events(p_before timestamptz, p_request_id text, p_sink_bound bigint)
RETURNS TABLE (run_id bigint, from_leaf bigint, to_leaf bigint, events bigint, event_id bigint, held_back bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  v_from bigint;
  v_to bigint;
  v_unbounded bigint;
  v_signed bigint;
  v_run bigint;
  v_events bigint;
  v_event bigint;
  v_v1 bigint;
  v_records bigint;
  v_records3 bigint;
  v_first3 bigint;
  v_last3 bigint;
BEGIN
  IF p_before IS NULL OR p_before > clock_timestamp() THEN
    RAISE EXCEPTION 'retention cutoff must be in the past' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF p_sink_bound < 0 THEN
    RAISE EXCEPTION 'retention sink bound must not be negative' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- One run at a time: the next starts where the last ended.
  PERFORM pg_advisory_xact_lock(7340217017);
  SELECT coalesce(max(r.to_leaf), 0) INTO v_from FROM phigate.audit_retention_runs r;
  SELECT coalesce(max(c.tree_size), 0) INTO v_signed FROM phigate.audit_checkpoints c;
  SELECT l.leaf_index INTO v_unbounded
    FROM phigate.audit_log l
    LEFT JOIN phigate.audit_events_v1 e ON e.id = l.event_id
    LEFT JOIN phigate.audit_records r ON r.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    LEFT JOIN phigate.audit_records_v3 r3 ON r3.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    WHERE l.leaf_index >= v_from AND l.leaf_index < v_signed
      AND NOT coalesce(coalesce(e.occurred_at, r.occurred_at, r3.occurred_at) < p_before, false)
    ORDER BY l.leaf_index LIMIT 1;
  v_unbounded := coalesce(v_unbounded, greatest(v_signed, v_from));
  -- A sink behind the previous run (added since, or a run before this bound existed) removes nothing.
  v_to := CASE WHEN p_sink_bound IS NULL THEN v_unbounded ELSE least(v_unbounded, greatest(p_sink_bound, v_from)) END;
  SELECT count(e.id) + coalesce(sum(cardinality(r.actions)), 0) + coalesce(sum(cardinality(r3.record_ids)), 0) INTO v_events
    FROM phigate.audit_log l
    LEFT JOIN phigate.audit_events_v1 e ON e.id = l.event_id
    LEFT JOIN phigate.audit_records r ON r.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    LEFT JOIN phigate.audit_records_v3 r3 ON r3.id = l.event_id >> 16 AND l.event_id & 65535 = 0
    WHERE l.leaf_index >= v_from AND l.leaf_index < v_to;
  INSERT INTO phigate.audit_events (request_id, actor, actor_kind, purpose, action, type_name, detail)
    VALUES (p_request_id, session_user, 'system', 'HSYSADMIN', 'retention', 'AuditLog',
            format('leaves:%s-%s', v_from, v_to) || CASE WHEN p_sink_bound IS NULL THEN '' ELSE format(':sink:%s', p_sink_bound) END)
    RETURNING id INTO v_event;
  INSERT INTO phigate.audit_retention_runs (cutoff, from_leaf, to_leaf, events, event_id, sink_bound)
    VALUES (p_before, v_from, v_to, v_events, v_event, p_sink_bound) RETURNING id INTO v_run;
  DELETE FROM phigate.audit_events_v1 e USING phigate.audit_log l
    WHERE l.event_id = e.id AND l.leaf_index >= v_from AND l.leaf_index < v_to;
  GET DIAGNOSTICS v_v1 = ROW_COUNT;
  DELETE FROM phigate.audit_records r USING phigate.audit_log l
    WHERE r.id = l.event_id >> 16 AND l.event_id & 65535 = 0 AND l.leaf_index >= v_from AND l.leaf_index < v_to;
  GET DIAGNOSTICS v_records = ROW_COUNT;
  WITH gone AS (
    DELETE FROM phigate.audit_records_v3 r USING phigate.audit_log l
      WHERE r.id = l.event_id >> 16 AND l.event_id & 65535 = 0 AND l.leaf_index >= v_from AND l.leaf_index < v_to
      RETURNING r.id
  )
  SELECT count(*), min(g.id), max(g.id) INTO v_records3, v_first3, v_last3 FROM gone g;
  -- Their patients' rows, which may leave once their records have (refuse_audit_rewrite).
  DELETE FROM phigate.audit_record_patients ap
    WHERE ap.record_id BETWEEN v_first3 AND v_last3
      AND NOT EXISTS (SELECT 1 FROM phigate.audit_records_v3 r WHERE r.id = ap.record_id);
  -- Every leaf of the range has its event or record (a missing one ends the range above).
  IF v_v1 + v_records + v_records3 <> v_to - v_from THEN
    RAISE EXCEPTION 'retention found % events and % records for % leaves', v_v1, v_records + v_records3, v_to - v_from
      USING ERRCODE = 'data_corrupted';
  END IF;
  RETURN QUERY SELECT v_run, v_from, v_to, v_events, v_event, v_unbounded - v_to;
END
$$;

-- 040's sweep (the body of sweep_alerts_unchecked since 042), with v3 records: one row per patient.
CREATE OR REPLACE FUNCTION phigate.sweep_alerts_unchecked(
  p_bulk_patients integer, p_denied integer, p_day_start time, p_day_end time, p_time_zone text, p_settle_seconds integer)
RETURNS TABLE (kind text, actor_kind text, actor text, window_start timestamptz, observed integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog SET work_mem = '64MB' SET enable_nestloop = off SET enable_sort = off AS $$
DECLARE
  s record;
  from_tx xid8;
  floor_ts timestamptz;
  sweep_id text := 'alert-sweep-' || gen_random_uuid();
BEGIN
  SELECT a.swept_until, a.seen INTO s FROM phigate.alert_sweep a FOR UPDATE SKIP LOCKED;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  floor_ts := date_trunc('minute', greatest(s.swept_until, clock_timestamp() - interval '1 hour'));
  from_tx := pg_snapshot_xmin(s.seen);
  RETURN QUERY
  WITH ev AS MATERIALIZED (
    -- Per record, its reads (read or masked) and denials; an event of audit_events_v1 is a record of one.
    SELECT e.actor_kind, e.actor, e.patient_id, e.occurred_at, date_trunc('minute', e.occurred_at) AS minute,
           CASE WHEN e.plain THEN cardinality(e.actions)
                ELSE cardinality(e.actions) - cardinality(array_remove(array_remove(e.actions, 'read'), 'masked')) END AS reads,
           CASE WHEN e.plain THEN 0
                ELSE cardinality(e.actions) - cardinality(array_remove(e.actions, 'denied')) END AS denied
    FROM (
      -- OFFSET 0 keeps the test a column computed once per record, not an expression copied into
      -- each of the three places that read it.
      SELECT r.actor_kind, r.actor, r.patient_id, r.occurred_at, r.actions, r.actions <@ '{read,masked}'::text[] AS plain
      FROM phigate.audit_records r
      WHERE r.tx >= from_tx AND r.tx < pg_snapshot_xmax(pg_current_snapshot()) AND NOT pg_visible_in_snapshot(r.tx, s.seen)
        AND r.occurred_at >= floor_ts AND r.actor_kind IN ('user', 'partner')
      UNION ALL
      -- A v3 record (061) is its shape's events about each of its patients: a row per patient,
      -- unnest in the select list (a lateral join would be a nested loop, which this function
      -- turns off).
      SELECT r.actor_kind, r.actor, unnest(r.patient_ids), r.occurred_at, r.actions, r.actions <@ '{read,masked}'::text[]
      FROM phigate.audit_records_v3 r
      WHERE r.tx >= from_tx AND r.tx < pg_snapshot_xmax(pg_current_snapshot()) AND NOT pg_visible_in_snapshot(r.tx, s.seen)
        AND r.occurred_at >= floor_ts AND r.actor_kind IN ('user', 'partner')
      OFFSET 0
    ) e
    WHERE e.plain OR e.actions && '{read,masked,denied}'::text[]
    UNION ALL
    SELECT e.actor_kind, e.actor, e.patient_id, e.occurred_at, date_trunc('minute', e.occurred_at),
           (e.action IN ('read', 'masked'))::integer, (e.action = 'denied')::integer
    FROM phigate.audit_events_v1 e
    WHERE e.tx >= from_tx AND e.tx < pg_snapshot_xmax(pg_current_snapshot()) AND NOT pg_visible_in_snapshot(e.tx, s.seen)
      AND e.occurred_at >= floor_ts
      AND e.action IN ('read', 'masked', 'denied') AND e.actor_kind IN ('user', 'partner')
  ), moved AS (
    -- The snapshot of this statement, the one ev was read in.
    UPDATE phigate.alert_sweep SET seen = pg_current_snapshot(), swept_until = floor_ts
  ), groups AS MATERIALIZED (
    SELECT ev.actor_kind, ev.actor, ev.minute, sum(ev.denied) AS denied,
           bool_or(ev.reads > 0) AS reads, bool_or(ev.reads > 0 AND ev.patient_id IS NOT NULL) AS reads_patients,
           min(ev.occurred_at) AS first_at, max(ev.occurred_at) AS last_at
    FROM ev GROUP BY 1, 2, 3
  ), open AS MATERIALIZED (
    -- Minutes that read patients and whose bulk read has not fired: only theirs are counted.
    SELECT g.actor_kind, g.actor, g.minute FROM groups g
    WHERE g.reads_patients
      AND NOT EXISTS (SELECT 1 FROM phigate.alerts_raised r
                      WHERE r.kind = 'bulk_read' AND r.actor_kind = g.actor_kind AND r.actor = g.actor AND r.window_start = g.minute)
  ), fresh AS MATERIALIZED (
    -- Patients this sweep read that the minute had not counted yet.
    SELECT DISTINCT ev.actor_kind, ev.actor, ev.minute, ev.patient_id
    FROM ev JOIN open o ON o.actor_kind = ev.actor_kind AND o.actor = ev.actor AND o.minute = ev.minute
    WHERE EXISTS (SELECT 1 FROM open) AND ev.reads > 0 AND ev.patient_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM phigate.alert_minute_patients p
                      WHERE p.actor_kind = ev.actor_kind AND p.actor = ev.actor AND p.minute = ev.minute AND p.patient_id = ev.patient_id)
  ), added AS (
    SELECT g.actor_kind, g.actor, g.minute, coalesce(f.patients, 0)::integer AS patients, g.denied::integer AS denied
    FROM groups g
    LEFT JOIN (SELECT f.actor_kind, f.actor, f.minute, count(*) AS patients FROM fresh f GROUP BY 1, 2, 3) f
      ON f.actor_kind = g.actor_kind AND f.actor = g.actor AND f.minute = g.minute
  ), totals AS (
    INSERT INTO phigate.alert_minutes AS m (actor_kind, actor, minute, patients, denied)
    SELECT a.actor_kind, a.actor, a.minute, a.patients, a.denied FROM added a
    ON CONFLICT ON CONSTRAINT alert_minutes_pkey DO UPDATE SET patients = m.patients + excluded.patients, denied = m.denied + excluded.denied
    RETURNING m.actor_kind, m.actor, m.minute, m.patients, m.denied
  ), kept AS (
    -- Only a minute still within the threshold keeps its patients: past it, the count is exact
    -- now and the alert fires, so at most the threshold's worth is ever stored per actor and minute.
    INSERT INTO phigate.alert_minute_patients (actor_kind, actor, minute, patient_id)
    SELECT f.actor_kind, f.actor, f.minute, f.patient_id FROM fresh f
    JOIN totals t ON t.actor_kind = f.actor_kind AND t.actor = f.actor AND t.minute = f.minute
    WHERE t.patients <= p_bulk_patients
    ON CONFLICT DO NOTHING
  ), local AS (
    SELECT g.actor_kind, g.actor, g.minute, g.first_at, g.last_at,
           g.first_at AT TIME ZONE p_time_zone AS first_local, g.last_at AT TIME ZONE p_time_zone AS last_local
    FROM groups g WHERE g.actor_kind = 'user' AND g.reads
  ), unsure AS MATERIALIZED (
    -- Minutes that may hold a read outside working hours: all but those spent wholly inside them.
    SELECT l.actor_kind, l.actor, l.minute FROM local l
    WHERE NOT (l.last_local - l.first_local = l.last_at - l.first_at
               AND l.first_local::date = l.last_local::date
               AND CASE WHEN p_day_start <= p_day_end
                        THEN l.first_local::time >= p_day_start AND l.last_local::time < p_day_end
                        ELSE l.first_local::time >= p_day_start OR l.last_local::time < p_day_end
                   END)
  ), found AS (
    SELECT 'bulk_read'::text AS kind, t.actor_kind, t.actor, t.minute AS window_start, t.patients AS observed
    FROM totals t WHERE t.patients > p_bulk_patients
    UNION ALL
    SELECT 'denied_spike', t.actor_kind, t.actor, t.minute, t.denied FROM totals t WHERE t.denied > p_denied
    UNION ALL
    SELECT 'off_hours', ev.actor_kind, ev.actor,
           date_trunc('day', ev.occurred_at AT TIME ZONE p_time_zone) AT TIME ZONE p_time_zone, sum(ev.reads)::integer
    FROM ev JOIN unsure u ON u.actor_kind = ev.actor_kind AND u.actor = ev.actor AND u.minute = ev.minute
    WHERE EXISTS (SELECT 1 FROM unsure) AND ev.actor_kind = 'user' AND ev.reads > 0
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
  DELETE FROM phigate.alert_minutes m WHERE m.minute < floor_ts;
  DELETE FROM phigate.alert_minute_patients p WHERE p.minute < floor_ts;
END
$$;
