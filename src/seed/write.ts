import type pg from 'pg';
import type { FieldCipher } from '../crypto/field-cipher.ts';
import type { Keyring } from '../crypto/keys/keyring.ts';
import { PATIENT_COLUMNS } from '../db/patients.ts';
import { identifierIndex, normaliseMrn, normaliseSsn } from '../records/identifiers.ts';
import type { Dataset } from './dataset.ts';

/**
 * Writes a data set with the migrator's connection in batches (one statement per table per batch).
 * The migrator of development is a superuser, which row security does not bind; the gateway
 * itself never connects that way.
 */
export async function writeDataset(
  client: pg.ClientBase,
  keyring: Keyring,
  cipher: FieldCipher,
  data: Dataset,
  opts: { batchSize?: number; onProgress?: (done: number, total: number) => void } = {},
): Promise<void> {
  const batchSize = opts.batchSize ?? 500;
  await client.query(
    'INSERT INTO phigate.clinics (id, name) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (id) DO NOTHING',
    [data.clinics.map((c) => c.id), data.clinics.map((c) => c.name)],
  );
  const total = data.patients.length;
  for (let start = 0; start < total; start += batchSize) {
    const batch = data.patients.slice(start, start + batchSize);
    const cols: Record<string, (Buffer | string | null)[]> = { id: [], clinic_id: [], mrn_bidx: [], ssn_bidx: [] };
    for (const c of Object.values(PATIENT_COLUMNS)) cols[c] = [];
    const enc: Record<string, (Buffer | string | null)[]> = { id: [], patient_id: [], clinic_id: [], occurred_at: [], kind: [], reason: [], diagnosis_codes: [], notes: [] };
    const team: Record<string, string[]> = { patient_id: [], subject: [], clinic_id: [] };
    for (const p of batch) {
      cols.id!.push(p.id);
      cols.clinic_id!.push(p.clinicId);
      cols.mrn_bidx!.push(await identifierIndex(keyring, 'patients.mrn', p.clinicId, normaliseMrn(p.mrn)));
      cols.ssn_bidx!.push(await identifierIndex(keyring, 'patients.ssn', p.clinicId, normaliseSsn(p.ssn)));
      for (const [field, column] of Object.entries(PATIENT_COLUMNS)) {
        const plain = p[field as keyof typeof PATIENT_COLUMNS];
        cols[column]!.push(await cipher.encrypt(p.clinicId, { table: 'patients', column, rowId: p.id }, plain));
      }
      for (const e of p.encounters) {
        const seal = (column: string, v: string) => cipher.encrypt(p.clinicId, { table: 'encounters', column, rowId: e.id }, v);
        enc.id!.push(e.id);
        enc.patient_id!.push(p.id);
        enc.clinic_id!.push(p.clinicId);
        enc.occurred_at!.push(e.occurredAt);
        enc.kind!.push(e.kind);
        enc.reason!.push(await seal('reason', e.reason));
        enc.diagnosis_codes!.push(await seal('diagnosis_codes', JSON.stringify(e.diagnosisCodes)));
        enc.notes!.push(await seal('notes', e.notes));
      }
      for (const s of p.careTeam) {
        team.patient_id!.push(p.id);
        team.subject!.push(s);
        team.clinic_id!.push(p.clinicId);
      }
    }
    const pNames = Object.keys(cols);
    await client.query(
      `INSERT INTO phigate.patients (${pNames.join(', ')}) SELECT * FROM unnest($1::uuid[], $2::text[], ${pNames
        .slice(2)
        .map((_, i) => `$${i + 3}::bytea[]`)
        .join(', ')})`,
      pNames.map((n) => cols[n]),
    );
    await client.query(
      `INSERT INTO phigate.encounters (id, patient_id, clinic_id, occurred_at, kind, reason, diagnosis_codes, notes)
       SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[], $6::bytea[], $7::bytea[], $8::bytea[])`,
      Object.values(enc),
    );
    await client.query(
      'INSERT INTO phigate.care_team (patient_id, subject, clinic_id) SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[])',
      Object.values(team),
    );
    opts.onProgress?.(Math.min(start + batchSize, total), total);
  }
}
