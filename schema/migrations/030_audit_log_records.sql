-- The Merkle log over the narrow audit layout (issue #10; docs/audit-log.md).
--
-- Since 028 the audit is stored as one row of phigate.audit_records per (request, patient, ...),
-- its events in parallel arrays. The log follows the storage: ONE leaf per record (canonical v2,
-- src/audit/canonical.ts), not one per event, so a page of 100 patients costs the sealer about a
-- hundred leaf rows and hashes instead of 800. The events written before 028
-- (phigate.audit_events_v1) stay leaves of their own (canonical v1), sealed and verified as before.
--
-- A leaf's key, stored in audit_log.event_id, is the id of its first event: a v1 event's id, or
-- a record's (id << 16). Record ids start above every v1 id >> 16 (028), so the keys of both kinds
-- never meet, and the event with id N lives in the leaf keyed N (v1) or (N >> 16) << 16 (record).
-- Leaves stay in (tx, key) order below the snapshot's xmin, exactly as 016 sealed events.

-- The leaf rows, one shape for both kinds: a v1 event reads as a record of one event.
-- Each branch walks its own (tx, id) index and stops at p_limit; the merge keeps the first p_limit.
CREATE FUNCTION phigate.audit_leaves_to_seal(p_after_tx xid8, p_after_key bigint, p_limit integer)
RETURNS TABLE (tx xid8, key bigint, version smallint, occurred_at_us bigint, batch_id uuid, request_id text, actor text,
               actor_kind text, client_addr text, credential_id text, role text, purpose text, break_glass boolean,
               grant_id uuid, patient_id uuid, actions text[], type_names text[], fields text[], record_ids uuid[],
               details text[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT s.* FROM (
    (SELECT e.tx, e.id, 1::smallint, (extract(epoch FROM e.occurred_at) * 1000000)::bigint, e.batch_id, e.request_id,
            e.actor, e.actor_kind, e.client_addr, e.credential_id, e.role, e.purpose, e.break_glass, e.grant_id,
            e.patient_id, ARRAY[e.action], ARRAY[e.type_name], ARRAY[e.field], ARRAY[e.record_id], ARRAY[e.detail]
     FROM phigate.audit_events_v1 e
     WHERE (e.tx, e.id) > (p_after_tx, p_after_key) AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY e.tx, e.id
     LIMIT p_limit)
    UNION ALL
    -- (r.tx, r.id << 16) > (after_tx, after_key) is (r.tx, r.id) > (after_tx, after_key >> 16): the index's terms.
    (SELECT r.tx, r.id << 16, 2::smallint, (extract(epoch FROM r.occurred_at) * 1000000)::bigint, r.batch_id, r.request_id,
            r.actor, r.actor_kind, r.client_addr, r.credential_id, r.role, r.purpose, r.break_glass, r.grant_id,
            r.patient_id, r.actions, r.type_names, r.fields, r.record_ids, r.details
     FROM phigate.audit_records r
     WHERE (r.tx, r.id) > (p_after_tx, p_after_key >> 16) AND r.tx < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY r.tx, r.id
     LIMIT p_limit)
  ) s
  ORDER BY 1, 2
  LIMIT p_limit
$$;

-- Sealed leaves from leaf p_from on, in leaf order, with what each was made from, for the sink.
CREATE FUNCTION phigate.audit_log_leaves(p_from bigint, p_limit integer)
RETURNS TABLE (leaf_index bigint, key bigint, version smallint, occurred_at_us bigint, batch_id uuid, request_id text,
               actor text, actor_kind text, client_addr text, credential_id text, role text, purpose text,
               break_glass boolean, grant_id uuid, patient_id uuid, actions text[], type_names text[], fields text[],
               record_ids uuid[], details text[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT l.leaf_index, l.event_id, x.*
  FROM (SELECT a.leaf_index, a.event_id FROM phigate.audit_log a WHERE a.leaf_index >= p_from ORDER BY a.leaf_index LIMIT p_limit) l
  CROSS JOIN LATERAL (
    SELECT 1::smallint, (extract(epoch FROM e.occurred_at) * 1000000)::bigint, e.batch_id, e.request_id, e.actor,
           e.actor_kind, e.client_addr, e.credential_id, e.role, e.purpose, e.break_glass, e.grant_id, e.patient_id,
           ARRAY[e.action], ARRAY[e.type_name], ARRAY[e.field], ARRAY[e.record_id], ARRAY[e.detail]
    FROM phigate.audit_events_v1 e WHERE e.id = l.event_id
    UNION ALL
    SELECT 2::smallint, (extract(epoch FROM r.occurred_at) * 1000000)::bigint, r.batch_id, r.request_id, r.actor,
           r.actor_kind, r.client_addr, r.credential_id, r.role, r.purpose, r.break_glass, r.grant_id, r.patient_id,
           r.actions, r.type_names, r.fields, r.record_ids, r.details
    FROM phigate.audit_records r WHERE r.id = l.event_id >> 16 AND l.event_id & 65535 = 0
  ) x
  ORDER BY l.leaf_index
$$;

DROP FUNCTION phigate.audit_events_to_seal(xid8, bigint, integer);
DROP FUNCTION phigate.audit_log_entries(bigint, integer);
REVOKE ALL ON FUNCTION phigate.audit_leaves_to_seal(xid8, bigint, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION phigate.audit_log_leaves(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.audit_leaves_to_seal(xid8, bigint, integer) TO phigate_app;
GRANT EXECUTE ON FUNCTION phigate.audit_log_leaves(bigint, integer) TO phigate_app;
