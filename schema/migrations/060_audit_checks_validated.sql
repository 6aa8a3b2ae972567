-- 059's two constraints, added NOT VALID, checked against the rows stored before it. Its own
-- migration (its own transaction, src/db/migrate.ts), so that 059's ACCESS EXCLUSIVE lock ends at
-- 059's commit: VALIDATE CONSTRAINT scans under SHARE UPDATE EXCLUSIVE, which lets the audit
-- writer and the PHI-minute charges go on inserting and updating meanwhile. A stored row that
-- breaks the rule stops the migration here, as the ALTER in 059 would have, and names the
-- constraint.
ALTER TABLE phigate.audit_records VALIDATE CONSTRAINT audit_records_valid;
ALTER TABLE phigate.phi_usage VALIDATE CONSTRAINT phi_usage_valid;
