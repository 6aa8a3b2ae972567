-- The facts an audit row needs beyond field reads: searches and their outcome, refusals before any
-- record was touched, break-glass grants and reviews, partner keys, alerts and compliance queries.
--   detail         a code from a closed vocabulary (src/audit/event.ts), never a value a client sent
--   grant_id       the break-glass grant under which the event happened
--   credential_id  the partner API key id of the request (the partner is the actor)
-- actor_kind 'anonymous': a refused authentication whose token named no readable subject.
ALTER TABLE phigate.audit_events
  ADD COLUMN detail text CHECK (detail ~ '^[a-z0-9_:.-]{1,64}$'),
  ADD COLUMN grant_id uuid,
  ADD COLUMN credential_id text CHECK (credential_id ~ '^[A-Za-z0-9_-]{1,64}$');

ALTER TABLE phigate.audit_events DROP CONSTRAINT audit_events_action_check;
ALTER TABLE phigate.audit_events ADD CONSTRAINT audit_events_action_check
  CHECK (action IN ('read', 'masked', 'denied', 'create', 'update', 'key', 'limited',
                    'search', 'refused', 'break_glass', 'review', 'api_key', 'alert', 'view'));

ALTER TABLE phigate.audit_events DROP CONSTRAINT audit_events_actor_kind_check;
ALTER TABLE phigate.audit_events ADD CONSTRAINT audit_events_actor_kind_check
  CHECK (actor_kind IN ('user', 'partner', 'system', 'anonymous'));
