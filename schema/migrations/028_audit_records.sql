-- The narrow audit layout (issue #10, "The audit writer", item 5).
--
-- A page of 100 patients is about 800 audit events, and one row per event (a heap tuple, four
-- btree entries, ~470 bytes of WAL, then a leaf row of the Merkle log) made the audit writer the
-- largest cost of a read. Events of one request about one patient share every fact but the field:
-- they are now stored as ONE row of phigate.audit_records, with the per-event facts in parallel
-- arrays (element i of actions, type_names, fields, record_ids and details is event i).
--
-- phigate.audit_events stays what the contract names: a relation with one row per event and the
-- contract's columns. It is now a view: the events written before this migration (the frozen table
-- phigate.audit_events_v1) followed by every record's events unnested.
--
-- Event ids. Event i (from 0) of record r has id (r.id << 16) + i, so a record holds at most 65,536
-- events, an event's record is id >> 16, and the record sequence starts above the last v1 id >> 16:
-- every new id is above every old one, and ids keep the order of insertion across both.

ALTER TABLE phigate.audit_events RENAME TO audit_events_v1;
-- Frozen: nothing but retention touches the old events again.
REVOKE INSERT ON phigate.audit_events_v1 FROM phigate_app;

CREATE FUNCTION phigate.audit_details_valid(details text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog AS $$
  SELECT coalesce(bool_and(d IS NULL OR d ~ '^[a-z0-9_:.-]{1,64}$'), true) FROM unnest(details) AS d
$$;

CREATE TABLE phigate.audit_records (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  occurred_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
  tx            xid8 NOT NULL DEFAULT pg_current_xact_id(),
  batch_id      uuid,
  request_id    text NOT NULL,
  actor         text NOT NULL,
  actor_kind    text NOT NULL CHECK (actor_kind IN ('user', 'partner', 'system', 'anonymous')),
  client_addr   text,
  credential_id text CHECK (credential_id ~ '^[A-Za-z0-9_-]{1,64}$'),
  role          text,
  purpose       text NOT NULL,
  break_glass   boolean NOT NULL DEFAULT false,
  grant_id      uuid,
  patient_id    uuid,
  actions       text[] NOT NULL,
  type_names    text[] NOT NULL,
  fields        text[] NOT NULL,
  record_ids    uuid[] NOT NULL,
  details       text[] NOT NULL,
  CHECK (array_ndims(actions) = 1 AND cardinality(actions) BETWEEN 1 AND 65536),
  CHECK (cardinality(type_names) = cardinality(actions) AND cardinality(fields) = cardinality(actions)
         AND cardinality(record_ids) = cardinality(actions) AND cardinality(details) = cardinality(actions)),
  CHECK (array_position(actions, NULL) IS NULL AND array_position(type_names, NULL) IS NULL),
  CHECK (actions <@ ARRAY['read', 'masked', 'denied', 'create', 'update', 'key', 'limited', 'search', 'refused',
                          'break_glass', 'review', 'api_key', 'alert', 'view', 'retention']::text[]),
  CHECK (phigate.audit_details_valid(details))
);

SELECT setval(pg_get_serial_sequence('phigate.audit_records', 'id'),
              coalesce((SELECT max(id) FROM phigate.audit_events_v1) >> 16, 0) + 1, false);

CREATE INDEX audit_records_patient ON phigate.audit_records (patient_id, id) WHERE patient_id IS NOT NULL;
CREATE INDEX audit_records_actor ON phigate.audit_records (actor, id);
CREATE INDEX audit_records_tx ON phigate.audit_records (tx, id);
CREATE INDEX audit_records_rare_action ON phigate.audit_records (id)
  WHERE NOT (actions <@ ARRAY['read', 'masked', 'denied']::text[]);
CREATE INDEX audit_records_break_glass ON phigate.audit_records (id) WHERE break_glass;
CREATE INDEX audit_records_occurred_brin ON phigate.audit_records USING brin (occurred_at)
  WITH (pages_per_range = 16, autosummarize = on);

CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON phigate.audit_records
  FOR EACH ROW EXECUTE FUNCTION phigate.refuse_audit_rewrite();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON phigate.audit_records
  FOR EACH STATEMENT EXECUTE FUNCTION phigate.refuse_audit_rewrite();

CREATE VIEW phigate.audit_events AS
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
    WITH ORDINALITY AS e(action, type_name, field, record_id, detail, n);

-- One event written through the view (the request transaction of a write, the CLI's key and
-- retention events, the alert sweep) becomes a record of one event. The writer's batches insert
-- records directly.
CREATE FUNCTION phigate.insert_audit_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  v_id bigint;
BEGIN
  INSERT INTO phigate.audit_records
    (batch_id, request_id, actor, actor_kind, client_addr, credential_id, role, purpose, break_glass, grant_id,
     patient_id, actions, type_names, fields, record_ids, details)
  VALUES (NEW.batch_id, NEW.request_id, NEW.actor, NEW.actor_kind, NEW.client_addr, NEW.credential_id, NEW.role,
          NEW.purpose, coalesce(NEW.break_glass, false), NEW.grant_id, NEW.patient_id, ARRAY[NEW.action],
          ARRAY[NEW.type_name], ARRAY[NEW.field], ARRAY[NEW.record_id], ARRAY[NEW.detail])
  RETURNING id, occurred_at, tx INTO v_id, NEW.occurred_at, NEW.tx;
  NEW.id := v_id << 16;
  NEW.break_glass := coalesce(NEW.break_glass, false);
  RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION phigate.insert_audit_event() FROM PUBLIC;
CREATE TRIGGER audit_events_insert INSTEAD OF INSERT ON phigate.audit_events
  FOR EACH ROW EXECUTE FUNCTION phigate.insert_audit_event();

REVOKE ALL ON phigate.audit_records, phigate.audit_events FROM PUBLIC;
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON phigate.audit_records
  FROM PUBLIC, phigate_app, phigate_auditor, phigate_analytics;
-- As before: the gateway names neither an event's id, time nor transaction.
GRANT INSERT (request_id, actor, actor_kind, role, purpose, break_glass, client_addr, action, type_name, field,
              patient_id, record_id, detail, grant_id, credential_id, batch_id)
  ON phigate.audit_events TO phigate_app;
GRANT INSERT (batch_id, request_id, actor, actor_kind, client_addr, credential_id, role, purpose, break_glass,
              grant_id, patient_id, actions, type_names, fields, record_ids, details)
  ON phigate.audit_records TO phigate_app;
GRANT SELECT ON phigate.audit_events, phigate.audit_records TO phigate_auditor;

-- Changing or removing an event through the view is refused like on the tables (the owner too).
CREATE TRIGGER audit_events_append_only INSTEAD OF UPDATE OR DELETE ON phigate.audit_events
  FOR EACH ROW EXECUTE FUNCTION phigate.refuse_audit_rewrite();
