-- The alert sweep over a busy log (issue 10): four minutes of 40,000 audit events per 15 s
-- (9 actors' pages of 100 patients x 8 fields, about 12 pages a second), one sweep after each
-- 15 s, each sweep timed. `psql -d <a migrated database> -f bench/alert-sweep.sql`, with
-- PGOPTIONS='-c bench.sweep_015=on' when the database has 015's sweep_alerts instead of 026's: 015 counts
-- by time, so each sweep is told the time the previous one would have run at (its swept_until).
UPDATE phigate.alert_sweep SET swept_until = date_trunc('minute', clock_timestamp()) - interval '5 minutes';
SELECT * FROM phigate.sweep_alerts(50, 20, '06:00', '20:00', 'UTC', 0) \g /dev/null
ANALYZE phigate.audit_events;
CREATE TEMP TABLE t (k int, ms float8);
DO $$
DECLARE m timestamptz := date_trunc('minute', clock_timestamp()) - interval '4 minutes'; t0 timestamptz; k int;
BEGIN
  FOR k IN 0..15 LOOP
    -- 40,000 events per 15 s: 9 actors' pages of 100 patients x 8 fields (about 12 pages a second).
    INSERT INTO phigate.audit_events (occurred_at, request_id, actor, actor_kind, role, purpose, action, type_name, field, patient_id)
      SELECT m + (k * interval '15 seconds') + (g * interval '15 seconds' / 40000), 'p-' || k || '-' || (g / 800), 'reg-' || (g / 800 % 9), 'user', 'registrar', 'healthcare_operations',
             CASE WHEN g % 8 = 7 THEN 'masked' ELSE 'read' END, 'Patient', 'f' || (g % 8), md5('p' || ((g / 8) % 2000))::uuid
      FROM generate_series(0, 39999) g;
    COMMIT;
    IF current_setting('bench.sweep_015', true) = 'on' AND k > 0 THEN
      UPDATE phigate.alert_sweep SET swept_until = m + ((k - 1) * interval '15 seconds');
    END IF;
    t0 := clock_timestamp();
    PERFORM * FROM phigate.sweep_alerts(50, 20, '06:00', '20:00', 'UTC', 0);
    INSERT INTO t VALUES (k, extract(epoch FROM clock_timestamp() - t0) * 1000);
    COMMIT;
  END LOOP;
END $$;
SELECT round(sum(ms)) AS total_ms, round(avg(ms)::numeric, 1) AS avg_ms, round(max(ms)::numeric,1) AS max_ms, string_agg(round(ms)::text, ',' ORDER BY k) FROM t;
