-- An event's grant_id names the break-glass grant it happened under, so every event that carries
-- one is a break-glass event (docs/audit-log.md, "`break_glass` and `grant_id`"). Until now that was
-- the writers' convention only: anything holding the app role's rights could write a grant_id on
-- any event, and `grant_id = G` would no longer be exactly what happened under grant G.
--
-- NOT VALID: events written before the rule (a reason read or a review named its grant with
-- break_glass false) keep their grant_id, since the log is append-only; the rule holds for every row
-- written from here on, and adding it reads no row. Each ALTER takes its table's lock for a moment:
-- bounded, so a busy writer makes the migration fail and be run again rather than stall it.
SET LOCAL lock_timeout = '5s';

ALTER TABLE phigate.audit_events_v1 ADD CONSTRAINT audit_events_v1_grant_is_break_glass CHECK (grant_id IS NULL OR break_glass) NOT VALID;
ALTER TABLE phigate.audit_records ADD CONSTRAINT audit_records_grant_is_break_glass CHECK (grant_id IS NULL OR break_glass) NOT VALID;
ALTER TABLE phigate.audit_records_v3 ADD CONSTRAINT audit_records_v3_grant_is_break_glass CHECK (grant_id IS NULL OR break_glass) NOT VALID;
