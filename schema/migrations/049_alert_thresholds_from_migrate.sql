-- What `phigate migrate` last wrote into phigate.alert_settings from its PHIGATE_ALERT_* environment
-- (src/audit/alert-thresholds.ts, applyConfiguredThresholds). Until now every migrate wrote its
-- environment's thresholds again, over a change made since with `phigate alerts thresholds`: the
-- owner's deliberate change was undone by the next deployment whose job still carried the old
-- value. Now migrate writes a threshold only when its environment's value differs from the one it
-- applied last (a new decision in the environment); an unchanged environment leaves the row as the
-- owner last set it. NULL: migrate was not given that threshold last time.
CREATE TABLE phigate.alert_settings_from_migrate (
  id                       boolean PRIMARY KEY DEFAULT true CHECK (id),
  bulk_patients_per_minute integer,
  denied_fields_per_minute integer,
  day_start                time,
  day_end                  time,
  time_zone                text,
  applied_at               timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- The owner's bookkeeping: no gateway role reads or writes it.
REVOKE ALL ON phigate.alert_settings_from_migrate FROM PUBLIC;
