import { randomBytes } from 'node:crypto';
import { SHREDDED_VALUE } from '../crypto/envelope.ts';
import { ENCOUNTER_COLUMNS, ERASED_TIME, PATIENT_COLUMNS } from '../db/patients.ts';
import { PhigateError } from '../errors.ts';
import { inKeyTransaction, type KeyAdmin } from './key-admin.ts';
import { ERASED_TIMES } from './shred-columns.ts';
import * as v from './validate.ts';

const PATIENT_SEALED = Object.values(PATIENT_COLUMNS);
// The kind is shredded on its own: its legacy plaintext copy goes with it.
const ENCOUNTER_SEALED = Object.values(ENCOUNTER_COLUMNS).filter((column) => column !== 'kind');
const marked = (column: string) => `${column} = CASE WHEN ${column} IS NULL THEN NULL ELSE $2::bytea END`;

/**
 * Crypto-shredding of one patient, in one transaction: every wrapped key of the patient is
 * destroyed and a tombstone version added (no writer can make a new key for it afterwards); the
 * live rows (and the patient's break-glass reasons and review comments) get the shredded marker
 * instead of their ciphertext, so every replica answers
 * KEY_UNAVAILABLE (`shredded`) at once, cached key or not; the blind indexes stop matching; the
 * times held in the clear (visit dates among them) are erased; one `key` event is recorded.
 * Column by column: shred-columns.ts. What copies elsewhere (backups, WAL) keep: docs/shredding.md.
 * Audit rows of past reads are not touched.
 */
export async function shredPatient(admin: KeyAdmin, rawId: string): Promise<'shredded' | 'already_shredded'> {
  const patientId = v.id('--patient', rawId);
  return inKeyTransaction(admin, async (c, record) => {
    const found = await c.query<{ clinic_id: string }>('SELECT clinic_id FROM phigate.patients WHERE id = $1 FOR UPDATE', [patientId]);
    const clinicId = found.rows[0]?.clinic_id;
    if (clinicId === undefined) throw new PhigateError('BAD_USER_INPUT', 'no patient has that id');
    const before = await c.query<{ live: number; shredded: number }>(
      'SELECT count(*) FILTER (WHERE wrapped IS NOT NULL)::int AS live, count(*) FILTER (WHERE wrapped IS NULL)::int AS shredded FROM phigate.patient_keys WHERE patient_id = $1',
      [patientId],
    );
    const already = before.rows[0]!.live === 0 && before.rows[0]!.shredded > 0;
    // The tombstone takes the next version: a writer creating that version at the same time
    // conflicts with it and, looking again, finds the patient shredded. If the writer got there
    // first, its key is destroyed on the next round and the tombstone goes above it.
    for (;;) {
      await c.query('UPDATE phigate.patient_keys SET wrapped = NULL, shredded_at = now() WHERE patient_id = $1 AND wrapped IS NOT NULL', [patientId]);
      const top = await c.query<{ version: number }>('SELECT max(version) AS version FROM phigate.patient_keys WHERE patient_id = $1', [patientId]);
      const inserted = await c.query(
        `INSERT INTO phigate.patient_keys (patient_id, version, clinic_id, clinic_version, wrapped, shredded_at)
         VALUES ($1, $2, $3, 0, NULL, now()) ON CONFLICT DO NOTHING`,
        [patientId, (top.rows[0]?.version ?? 0) + 1, clinicId],
      );
      if (inserted.rowCount === 1) break;
    }
    await c.query(
      `UPDATE phigate.patients SET ${PATIENT_SEALED.map(marked).join(', ')}, mrn_bidx = $3, ssn_bidx = NULL, mrn_bidx_next = NULL, ssn_bidx_next = NULL WHERE id = $1`,
      // A random MRN index: the column is unique per clinic and not null, and random bytes match no lookup.
      [patientId, SHREDDED_VALUE, randomBytes(32)],
    );
    await c.query(
      `UPDATE phigate.encounters SET kind = $2::bytea, kind_legacy = NULL, ${ENCOUNTER_SEALED.map(marked).join(', ')} WHERE patient_id = $1`,
      [patientId, SHREDDED_VALUE],
    );
    // The break-glass texts about the patient are its PHI too (066): marked, legacy plaintext gone.
    await c.query(
      `UPDATE phigate.break_glass_grants SET reason = NULL, reason_sealed = $2::bytea, review_comment = NULL,
         review_comment_sealed = CASE WHEN review_comment IS NULL AND review_comment_sealed IS NULL THEN NULL ELSE $2::bytea END
       WHERE patient_id = $1`,
      [patientId, SHREDDED_VALUE],
    );
    // The times in the clear (an encounter's date is PHI, README "Visit dates and kinds"): no key
    // stands between them and a reader of the table, so destroying one cannot erase them.
    for (const t of ERASED_TIMES) {
      await c.query(`UPDATE phigate.${t.table} SET ${t.columns.map((column) => `${column} = $2::timestamptz`).join(', ')} WHERE ${t.patientColumn} = $1`, [
        patientId,
        ERASED_TIME,
      ]);
    }
    const outcome = already ? 'already_shredded' : 'shredded';
    record({ typeName: 'Patient', field: null, patientId, recordId: null, detail: outcome });
    return outcome;
  });
}
