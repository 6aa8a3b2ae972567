-- Every sink the gateways deliver to leaves its position in audit_sink_cursors, the file sink too
-- (docs/audit-log.md, "Append-only and retention"). The file sink's files stay its own cursor;
-- its row is a report for retention, so that a job run without PHIGATE_AUDIT_SINK_DIR in its
-- environment still stays behind it. The row is named as the deliverer names the sink,
-- 'file:<absolute directory>', which 016's check (64 characters, no '/') refused: a path may be
-- as long as PATH_MAX and hold any character but a control character (the name is printed to
-- operators).

ALTER TABLE phigate.audit_sink_cursors DROP CONSTRAINT audit_sink_cursors_sink_check;
ALTER TABLE phigate.audit_sink_cursors ADD CONSTRAINT audit_sink_cursors_sink_check
  CHECK (sink ~ '^[a-z0-9_.:-]{1,64}$' OR (sink ~ '^file:/[^[:cntrl:]]*$' AND length(sink) <= 4101));
