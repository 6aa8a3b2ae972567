-- The alert sweep over a busy log in the narrow layout (issue 10, 2026-12-06): what the page bench
-- writes at 88 pages/s, 132,000 records of 12 events per 15 s (20 actors each paging through
-- 100,000 patients, 100 records a page; one actor also refused 2 fields a record), in chunks of
-- 15 s, one sweep after each, each sweep's backend CPU read from /proc (needs a superuser).
--   psql -d <a migrated database> -v records=132000 -v chunks=5 -f bench/alert-sweep-records.sql
-- Prints per sweep: records read, wall ms, backend CPU ms and us per record; then a digest of the
-- alerts and the sweep's state, equal between two functions that raise the same alerts.
\set ON_ERROR_STOP on
\if :{?records} \else \set records 132000 \endif
\if :{?chunks} \else \set chunks 5 \endif
SET bench.records = :records;
SET bench.chunks = :chunks;
UPDATE phigate.alert_sweep SET swept_until = date_trunc('minute', clock_timestamp()) - interval '5 minutes';
SELECT * FROM phigate.sweep_alerts(50, 20, '06:00', '20:00', 'UTC', 0) \g /dev/null
CREATE TEMP TABLE t (k int, records int, ms float8, cpu_ms float8);
CREATE FUNCTION pg_temp.cpu_ms() RETURNS float8 LANGUAGE sql AS $$
  SELECT (f[12]::float8 + f[13]::float8) * 10
  FROM (SELECT string_to_array(split_part(pg_read_file('/proc/' || pg_backend_pid() || '/stat'), ') ', 2), ' ') AS f) s
$$;
DO $$
DECLARE
  n int := current_setting('bench.records')::int;
  m timestamptz := date_trunc('minute', clock_timestamp()) - interval '3 minutes';
  t0 timestamptz; c0 float8; k int;
BEGIN
  FOR k IN 0..current_setting('bench.chunks')::int - 1 LOOP
    INSERT INTO phigate.audit_records (occurred_at, request_id, actor, actor_kind, role, purpose, patient_id,
                                       actions, type_names, fields, record_ids, details)
    SELECT m + k * interval '15 seconds' + g * interval '15 seconds' / n,
           'p-' || k || '-' || (g / 100), 'reg-' || (g / 100 % 20), 'user', 'registrar', 'healthcare_operations',
           md5('p' || ((g / 100 % 20) * 5000 + ((k * n + g) / 2000) * 100 + g % 100) % 100000)::uuid,
           CASE WHEN g / 100 % 20 = 19
                THEN '{read,read,read,read,denied,read,read,read,denied,read,read,read}'::text[]
                ELSE '{read,read,read,read,masked,read,read,read,read,read,read,read}' END,
           '{Patient,Patient,Patient,Patient,Patient,Patient,Patient,Patient,Encounter,Encounter,Encounter,Encounter}',
           '{id,mrn,givenName,familyName,ssn,birthDate,phone,email,kind,reason,diagnosisCodes,notes}',
           ARRAY[NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, md5('e' || g)::uuid, md5('e' || g)::uuid, md5('e' || g)::uuid, md5('e' || g)::uuid],
           '{NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL}'
    FROM generate_series(0, n - 1) g;
    COMMIT;
    t0 := clock_timestamp();
    c0 := pg_temp.cpu_ms();
    PERFORM * FROM phigate.sweep_alerts(50, 20, '06:00', '20:00', 'UTC', 0);
    INSERT INTO t VALUES (k, n, extract(epoch FROM clock_timestamp() - t0) * 1000, pg_temp.cpu_ms() - c0);
    COMMIT;
  END LOOP;
END $$;
SELECT k, records, round(ms) AS wall_ms, round(cpu_ms) AS cpu_ms, round((cpu_ms * 1000 / records)::numeric, 2) AS cpu_us_per_record FROM t ORDER BY k;
SELECT round(sum(cpu_ms)) AS total_cpu_ms, round((sum(cpu_ms) * 1000 / sum(records))::numeric, 2) AS cpu_us_per_record,
       (SELECT string_agg(round(cpu_ms)::text, ',' ORDER BY k) FROM t) AS per_sweep FROM t;
-- Times relative to the run's first alert, so that runs at different clock times compare.
SELECT min(window_start) AS t0 FROM phigate.alerts_raised \gset
SELECT md5(string_agg(format('%s %s %s %s %s', kind, actor_kind, actor, window_start - :'t0', observed), ';' ORDER BY kind, actor, window_start)) AS raised,
       count(*) AS n FROM phigate.alerts_raised;
SELECT md5(string_agg(format('%s %s %s %s %s', actor_kind, actor, minute - :'t0', patients, denied), ';' ORDER BY actor, minute)) AS minutes FROM phigate.alert_minutes;
SELECT md5(string_agg(format('%s %s %s %s', actor_kind, actor, minute - :'t0', patient_id), ';' ORDER BY actor, minute, patient_id)) AS minute_patients, count(*) FROM phigate.alert_minute_patients;
SELECT md5(string_agg(format('%s %s %s', actor, actor_kind, detail), ';' ORDER BY actor, detail)) AS alert_events FROM phigate.audit_events WHERE action = 'alert';
