-- A key is rotated once (src/records/api-keys.ts): at most one key names it in `replaces`.
--
-- The rotation's check (no key replaces this one yet) was a NOT EXISTS in the UPDATE that cuts the
-- old key's expiry. Under READ COMMITTED a second rotation waits for the first's row lock and then
-- re-checks only the old key's row, its NOT EXISTS still reading the snapshot taken before the first
-- committed: two concurrent rotations both minted a successor, two live keys where the operator
-- asked for one. The statement now locks the row first (cutApiKeyExpiry); this index makes the
-- database refuse a second successor whatever path writes it.
--
-- A database where the race already happened cannot take the index: the migration stops and names
-- the remedy rather than choosing which partner key to end. The build holds a SHARE lock on
-- api_keys, which every key's creation, revocation, rotation and once-a-minute last_used_at
-- touch writes: bounded, behind a long transaction the migration fails (55P03) and can be run
-- again.
SET LOCAL lock_timeout = '5s';

DO $$
DECLARE
  twice integer;
BEGIN
  SELECT count(*) INTO twice
    FROM (SELECT replaces FROM phigate.api_keys WHERE replaces IS NOT NULL GROUP BY replaces HAVING count(*) > 1) d;
  IF twice > 0 THEN
    RAISE EXCEPTION '% API key(s) have more than one successor (concurrent rotations). List them with: SELECT replaces, array_agg(id ORDER BY created_at) FROM phigate.api_keys WHERE replaces IS NOT NULL GROUP BY replaces HAVING count(*) > 1; revoke each successor not to be kept (npx phigate apikey revoke ID), then as the owner: UPDATE phigate.api_keys SET replaces = NULL WHERE id = <that successor>; and migrate again', twice
      USING ERRCODE = 'unique_violation';
  END IF;
END $$;

CREATE UNIQUE INDEX api_keys_one_successor ON phigate.api_keys (replaces) WHERE replaces IS NOT NULL;
-- The unique index answers every lookup by `replaces` the old one did (none asks for NULL).
DROP INDEX phigate.api_keys_replaces;
