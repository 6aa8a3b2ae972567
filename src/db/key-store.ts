import type { KeyPurpose, KeyStore, PatientKeyRecord, WrappedKeyRecord } from '../crypto/keys/keyring.ts';
import type { Pool } from './pool.ts';

interface Row {
  purpose: KeyPurpose;
  scope: string;
  version: number;
  wrapped: Buffer;
  provider: string;
  key_ref: string;
}

const toRecord = (r: Row): WrappedKeyRecord => ({
  purpose: r.purpose,
  scope: r.scope,
  version: r.version,
  wrapped: r.wrapped,
  provider: r.provider,
  keyRef: r.key_ref,
});

const COLUMNS = 'purpose, scope, version, wrapped, provider, key_ref';

interface PatientRow {
  patient_id: string;
  version: number;
  clinic_id: string;
  clinic_version: number;
  wrapped: Buffer | null;
}

const toPatientRecord = (r: PatientRow): PatientKeyRecord => ({
  patientId: r.patient_id,
  version: r.version,
  clinicId: r.clinic_id,
  clinicVersion: r.clinic_version,
  wrapped: r.wrapped,
});

const PATIENT_COLUMNS = 'patient_id, version, clinic_id, clinic_version, wrapped';

/**
 * Wrapped keys live in phigate.keyring and phigate.patient_keys, outside any request transaction: a key created for a new
 * clinic must survive the request that needed it, even when that request rolls back. The one exception is a new
 * patient's first key, which the request writes with the patient (insertPatient, src/db/patients.ts), so that a
 * rollback leaves no key of a patient who does not exist.
 */
export function createPgKeyStore(pool: Pool): KeyStore {
  return {
    async latest(purpose, scope) {
      const { rows } = await pool.query<Row>(
        `SELECT ${COLUMNS} FROM phigate.keyring WHERE purpose = $1 AND scope = $2 ORDER BY version DESC LIMIT 1`,
        [purpose, scope],
      );
      return rows[0] ? toRecord(rows[0]) : null;
    },
    async get(purpose, scope, version) {
      const { rows } = await pool.query<Row>(
        `SELECT ${COLUMNS} FROM phigate.keyring WHERE purpose = $1 AND scope = $2 AND version = $3`,
        [purpose, scope, version],
      );
      return rows[0] ? toRecord(rows[0]) : null;
    },
    async latestPatientKey(patientId) {
      const { rows } = await pool.query<PatientRow>(
        `SELECT ${PATIENT_COLUMNS} FROM phigate.patient_keys WHERE patient_id = $1 ORDER BY version DESC LIMIT 1`,
        [patientId],
      );
      return rows[0] ? toPatientRecord(rows[0]) : null;
    },
    async patientKeys(refs) {
      if (refs.length === 0) return [];
      const { rows } = await pool.query<PatientRow>(
        `SELECT ${PATIENT_COLUMNS} FROM phigate.patient_keys
         WHERE (patient_id, version) IN (SELECT * FROM unnest($1::uuid[], $2::integer[]))`,
        [refs.map((r) => r.patientId), refs.map((r) => r.version)],
      );
      return rows.map(toPatientRecord);
    },
    async insertPatientKey(rec) {
      const res = await pool.query(
        `INSERT INTO phigate.patient_keys (${PATIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
        [rec.patientId, rec.version, rec.clinicId, rec.clinicVersion, rec.wrapped],
      );
      return res.rowCount === 1;
    },
    async latestPatientKeys(patientIds) {
      if (patientIds.length === 0) return [];
      const { rows } = await pool.query<PatientRow>(
        `SELECT DISTINCT ON (patient_id) ${PATIENT_COLUMNS} FROM phigate.patient_keys
         WHERE patient_id = ANY($1::uuid[]) ORDER BY patient_id, version DESC`,
        [patientIds],
      );
      return rows.map(toPatientRecord);
    },
    async insertPatientKeys(records) {
      if (records.length === 0) return new Set();
      const { rows } = await pool.query<{ patient_id: string }>(
        `INSERT INTO phigate.patient_keys (${PATIENT_COLUMNS})
         SELECT * FROM unnest($1::uuid[], $2::integer[], $3::text[], $4::integer[], $5::bytea[])
         ON CONFLICT DO NOTHING RETURNING patient_id`,
        [records.map((r) => r.patientId), records.map((r) => r.version), records.map((r) => r.clinicId), records.map((r) => r.clinicVersion), records.map((r) => r.wrapped)],
      );
      return new Set(rows.map((r) => r.patient_id));
    },
    async insert(rec) {
      const res = await pool.query(
        `INSERT INTO phigate.keyring (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
        [rec.purpose, rec.scope, rec.version, rec.wrapped, rec.provider, rec.keyRef],
      );
      return res.rowCount === 1;
    },
  };
}
