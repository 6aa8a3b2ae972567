import { ENCOUNTER_COLUMNS, PATIENT_COLUMNS } from '../db/patients.ts';
import { PhigateError } from '../errors.ts';
import { GRANT_TEXTS } from './grant-text.ts';
import { inKeyTransaction, type KeyAdmin } from './key-admin.ts';

// A break-glass grant's reason and review comment are sealed under its patient's key as well (066).
const GRANT_SEALED = Object.values(GRANT_TEXTS).map((t) => t.sealed);
const USES = (alias: string, columns: readonly string[]) => columns.map((c) => `phigate.sealed_version(${alias}.${c}) = $2`).join(' OR ');

/**
 * Retires (deletes) version `version` of a clinic's data key, and the patient keys it wraps. Refused
 * while it is the current version, while replicas may still be writing under it (the newer version
 * is younger than `writeBoundMs`, the time within which every replica moves to it), and while any
 * value of the clinic still uses it: retiring then would make those values unreadable for good.
 */
export async function retireDataKey(admin: KeyAdmin, clinicId: string, version: number, writeBoundMs: number): Promise<{ patientKeys: number }> {
  return inKeyTransaction(admin, async (c, record) => {
    const versions = await c.query<{ version: number; age_ms: number }>(
      `SELECT version, (extract(epoch FROM now() - created_at) * 1000)::float8 AS age_ms FROM phigate.keyring
       WHERE purpose = 'data' AND scope = $1 ORDER BY version DESC`,
      [clinicId],
    );
    const current = versions.rows[0];
    if (!versions.rows.some((r) => r.version === version)) throw new PhigateError('BAD_USER_INPUT', `clinic ${clinicId} has no data key version ${version}`);
    if (current!.version === version) throw new PhigateError('BAD_USER_INPUT', `version ${version} is the current data key of ${clinicId}; rotate first`);
    if (current!.age_ms < writeBoundMs) {
      const wait = Math.ceil((writeBoundMs - current!.age_ms) / 1000);
      throw new PhigateError('BAD_USER_INPUT', `replicas may still write under version ${version} for ${wait} s (until every one has picked up version ${current!.version}); retry then`);
    }
    const used = await c.query<{ patients: string; encounters: string; grants: string }>(
      `SELECT (SELECT count(*) FROM phigate.patients p WHERE p.clinic_id = $1 AND (${USES('p', Object.values(PATIENT_COLUMNS))})) AS patients,
              (SELECT count(*) FROM phigate.encounters e WHERE e.clinic_id = $1 AND (${USES('e', Object.values(ENCOUNTER_COLUMNS))})) AS encounters,
              (SELECT count(*) FROM phigate.break_glass_grants g WHERE g.clinic_id = $1 AND (${USES('g', GRANT_SEALED)})) AS grants`,
      [clinicId, version],
    );
    const rows = Number(used.rows[0]!.patients) + Number(used.rows[0]!.encounters) + Number(used.rows[0]!.grants);
    if (rows > 0) {
      throw new PhigateError('BAD_USER_INPUT', `${rows} rows of ${clinicId} still use data key version ${version}; run keys rotate --clinic ${clinicId} --reencrypt first`);
    }
    const deleted = await c.query(`DELETE FROM phigate.patient_keys WHERE clinic_id = $1 AND clinic_version = $2 AND wrapped IS NOT NULL`, [clinicId, version]);
    await c.query(`DELETE FROM phigate.keyring WHERE purpose = 'data' AND scope = $1 AND version = $2`, [clinicId, version]);
    record({ typeName: 'ClinicKey', field: clinicId, patientId: null, recordId: null, detail: `retired:v${version}` });
    return { patientKeys: deleted.rowCount ?? 0 };
  });
}
