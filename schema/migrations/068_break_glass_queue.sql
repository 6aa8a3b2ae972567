-- The review queue a page at a time (breakGlassGrants(first, after, before), src/db/break-glass.ts).
--
-- A page is read per clinic of the reviewer: each clinic's grants in queue order (unreviewed first,
-- then granted_at, then id), `first` of them from the cursor on, then the pages merged. This index
-- gives each clinic's part in that order from the cursor, so a page costs about the same whatever
-- the queue's length. Measured on PostgreSQL 15 (bench/grant-queue.ts: 200,000 grants in 10 clinics,
-- generic plans as the gateway runs them, the backend's CPU per page of 50, alternated with the
-- former statement, load average 9-12 on 2 cores): a reviewer of a clinic of 20,000 grants
-- 0.3-0.7 ms (the former statement, whose row security (actor OR reviewer's clinics) left only a
-- bitmap scan of the whole clinic and a sort: 54-62 ms), of three such clinics 0.8-1.4 ms
-- (52-148 ms), of a clinic of 5 grants 0.2-0.4 ms (1.0 ms), a clinician with 400 grants of its own
-- 1.2-1.4 ms (15-16 ms). One index over the queue order alone walked every clinic's grants for a
-- reviewer of a small clinic (430 ms for 5 grants among 200,000, by EXPLAIN ANALYZE).
-- The build holds a SHARE lock on break_glass_grants: behind a long transaction that writes grants it
-- would make every new breakGlass, review and revoke queue behind it (emergency access stalled for a
-- deploy); bounded, the migration fails (55P03) instead and can be run again when the table is quiet.
SET LOCAL lock_timeout = '5s';
CREATE INDEX break_glass_queue ON phigate.break_glass_grants (clinic_id, (reviewed_at IS NOT NULL), granted_at, id);
