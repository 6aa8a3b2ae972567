-- The audit log as evidence (docs/audit-log.md): every committed audit event becomes a leaf of an
-- RFC 6962 Merkle tree, the tree's heads are signed outside the database (src/audit/log/), and the
-- leaves go to a sink outside it.
--
-- Sealing after commit. Each event records the transaction that inserted it. A sealer takes only
-- events of transactions that have ended (tx below the xmin of its snapshot), in (tx, id) order,
-- after the last leaf. A transaction still in flight has a tx at or above that xmin, so its
-- events, whatever their ids, come after every leaf already sealed: the sealer never hashes past
-- a gap that a running transaction could still fill, and inserts take no global lock.
-- Ordering by transaction first makes the leaf order a function of the rows alone and lets one
-- round stop anywhere (a bounded batch) and the next resume after its last (tx, id).
--
-- Existing rows get the migration's own transaction id: they are sealed first, in id order.
-- The column has no INSERT privilege: the gateway cannot choose it.
ALTER TABLE phigate.audit_events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX audit_events_tx ON phigate.audit_events (tx, id);

-- One row per leaf. leaf_hash = SHA-256(0x00 || canonical v1 bytes of the event) (src/audit/canonical.ts).
-- No foreign key to audit_events: retention removes old events and keeps their leaves' hashes,
-- so that the checkpoints over them still verify.
CREATE TABLE phigate.audit_log (
  leaf_index bigint PRIMARY KEY CHECK (leaf_index >= 0),
  event_id   bigint NOT NULL UNIQUE,
  leaf_hash  bytea NOT NULL CHECK (length(leaf_hash) = 32)
);

-- One row per sealing round: the tree after it. `frontier` holds the roots of the perfect
-- subtrees tree_size decomposes into (one per set bit, largest first), so the next round
-- appends in O(log n) without reading old leaves. (last_tx, last_event_id) is the (tx, id) of
-- leaf tree_size - 1: the next round starts after it.
CREATE TABLE phigate.audit_log_heads (
  tree_size     bigint PRIMARY KEY CHECK (tree_size > 0),
  root          bytea NOT NULL CHECK (length(root) = 32),
  frontier      bytea[] NOT NULL,
  last_tx       xid8 NOT NULL,
  last_event_id bigint NOT NULL,
  sealed_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Signed checkpoints: `note` is the whole C2SP signed note (tlog-checkpoint body: origin, size,
-- base64 root; a blank line; the Ed25519 signature line). origin, tree_size and root repeat the
-- body's values for queries; a verifier trusts the note and the public key only.
CREATE TABLE phigate.audit_checkpoints (
  tree_size bigint PRIMARY KEY CHECK (tree_size >= 0),
  origin    text NOT NULL,
  root      bytea NOT NULL CHECK (length(root) = 32),
  note      text NOT NULL,
  signed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Where a sink that cannot keep its own position (stdout) resumes: the first leaf and the first
-- checkpoint size it has not delivered. A file sink reads its position back from its own files.
-- Not evidence: a lost or moved cursor only means lines delivered twice or again from the start,
-- each recognisable by its leaf index and event id.
CREATE TABLE phigate.audit_sink_cursors (
  sink            text PRIMARY KEY CHECK (sink ~ '^[a-z0-9_.:-]{1,64}$'),
  next_leaf       bigint NOT NULL CHECK (next_leaf >= 0),
  next_checkpoint bigint NOT NULL CHECK (next_checkpoint >= 0),
  updated_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The gateway reads events only through these two functions, which return ids and codes (no PHI
-- values), and only to seal and to deliver them.
--
-- Events of ended transactions after (p_after_tx, p_after_id), in leaf order. STABLE: the whole
-- call sees one snapshot, the one whose xmin bounds it.
CREATE FUNCTION phigate.audit_events_to_seal(p_after_tx xid8, p_after_id bigint, p_limit integer)
RETURNS TABLE (tx xid8, id bigint, occurred_at_us bigint, request_id text, actor text, actor_kind text, role text,
               purpose text, break_glass boolean, client_addr text, action text, type_name text, field text,
               patient_id uuid, record_id uuid, detail text, grant_id uuid, credential_id text, batch_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT e.tx, e.id, (extract(epoch FROM e.occurred_at) * 1000000)::bigint, e.request_id, e.actor, e.actor_kind,
         e.role, e.purpose, e.break_glass, e.client_addr, e.action, e.type_name, e.field, e.patient_id, e.record_id,
         e.detail, e.grant_id, e.credential_id, e.batch_id
  FROM phigate.audit_events e
  WHERE (e.tx, e.id) > (p_after_tx, p_after_id)
    AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
  ORDER BY e.tx, e.id
  LIMIT p_limit
$$;

-- Sealed events from leaf p_from on, in leaf order, for the sink.
CREATE FUNCTION phigate.audit_log_entries(p_from bigint, p_limit integer)
RETURNS TABLE (leaf_index bigint, id bigint, occurred_at_us bigint, request_id text, actor text, actor_kind text, role text,
               purpose text, break_glass boolean, client_addr text, action text, type_name text, field text,
               patient_id uuid, record_id uuid, detail text, grant_id uuid, credential_id text, batch_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT l.leaf_index, e.id, (extract(epoch FROM e.occurred_at) * 1000000)::bigint, e.request_id, e.actor, e.actor_kind,
         e.role, e.purpose, e.break_glass, e.client_addr, e.action, e.type_name, e.field, e.patient_id, e.record_id,
         e.detail, e.grant_id, e.credential_id, e.batch_id
  FROM phigate.audit_log l JOIN phigate.audit_events e ON e.id = l.event_id
  WHERE l.leaf_index >= p_from
  ORDER BY l.leaf_index
  LIMIT p_limit
$$;

REVOKE ALL ON phigate.audit_log, phigate.audit_log_heads, phigate.audit_checkpoints, phigate.audit_sink_cursors FROM PUBLIC;
REVOKE ALL ON FUNCTION phigate.audit_events_to_seal(xid8, bigint, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION phigate.audit_log_entries(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION phigate.audit_events_to_seal(xid8, bigint, integer) TO phigate_app;
GRANT EXECUTE ON FUNCTION phigate.audit_log_entries(bigint, integer) TO phigate_app;

GRANT SELECT, INSERT ON phigate.audit_log, phigate.audit_log_heads, phigate.audit_checkpoints TO phigate_app;
GRANT SELECT, INSERT, UPDATE ON phigate.audit_sink_cursors TO phigate_app;
GRANT SELECT ON phigate.audit_log, phigate.audit_log_heads, phigate.audit_checkpoints, phigate.audit_sink_cursors TO phigate_auditor;
