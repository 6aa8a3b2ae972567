import type pg from 'pg';
import { blindIndex, normaliseMrn, normaliseSsn } from '../crypto/blind-index.ts';
import { sealField, type DataKey } from '../crypto/envelope.ts';
import { newPatientKey } from '../crypto/patient-key.ts';
import type { Keyring } from '../crypto/keys/keyring.ts';
import { PHI_CATALOGUE } from '../policy/phi-fields.ts';
import type { Dataset, SeedEncounter, SeedPatient } from './dataset.ts';

/**
 * The keys a data set is sealed with, resolved once per clinic instead of once per value: each
 * clinic's current data key and its two blind-index keys. Plain buffers, so they can be handed
 * to a worker thread (bench/seed-worker.ts) that seals while the main thread writes.
 */
export interface SeedKeys {
  readonly data: Readonly<Record<string, DataKey>>;
  readonly mrnIndex: Readonly<Record<string, Buffer>>;
  readonly ssnIndex: Readonly<Record<string, Buffer>>;
}

export async function seedKeys(keyring: Keyring, clinicIds: readonly string[]): Promise<SeedKeys> {
  const data: Record<string, DataKey> = {};
  const mrnIndex: Record<string, Buffer> = {};
  const ssnIndex: Record<string, Buffer> = {};
  for (const id of clinicIds) {
    // A copy: the keyring zero-fills its cached key when it evicts it, and a seed may outlast that.
    const key = await keyring.writeKey(id);
    data[id] = { ...key, key: Buffer.from(key.key) };
    mrnIndex[id] = await keyring.blindIndexKey('patients.mrn', id);
    ssnIndex[id] = await keyring.blindIndexKey('patients.ssn', id);
  }
  return { data, mrnIndex, ssnIndex };
}

/**
 * One batch, sealed and encoded as the parameters of the three INSERTs of `insertSealed`: every
 * parameter is a PostgreSQL array literal (what node-postgres itself sends for a JS array), so a
 * batch is a handful of strings, cheap to pass between threads.
 */
export interface SealedBatch {
  readonly patients: number;
  readonly patientParams: readonly string[];
  readonly encounterParams: readonly string[];
  readonly careTeamParams: readonly string[];
  /** Each patient's key (version 1), wrapped by its clinic's data key. */
  readonly patientKeyParams: readonly string[];
}

type Spec = (typeof PHI_CATALOGUE)[number];
type PlaintextColumn = Extract<Spec, { encrypted: false }>['column'];
/** The SQL type of each column the catalogue keeps in plaintext; a new one does not compile until it is named here. */
const PLAINTEXT_TYPES: Readonly<Record<PlaintextColumn, string>> = { occurred_at: 'timestamptz' };

/** One PHI column a seed writes: its value in a seed row, and the SQL type of that value in plaintext. */
export interface SeedColumn<Row> {
  readonly column: string;
  readonly encrypted: boolean;
  readonly plainType: string;
  readonly value: (row: Row) => string;
}

// Values as their columns hold them once opened: text, the diagnosis codes as a JSON array (as addEncounter writes them).
const asText = (v: string | readonly string[]): string => (typeof v === 'string' ? v : JSON.stringify(v));
const plainType = (s: Spec): string => (s.encrypted ? 'text' : PLAINTEXT_TYPES[s.column as PlaintextColumn]);

/**
 * The PHI columns of each table in catalogue order (src/policy/phi-fields.ts), with the seed value
 * each takes: the one list the seed and the bench's plaintext copy (bench/seed-worker.ts,
 * bench/setup-db.ts) iterate. A catalogue field the seed types lack does not compile.
 */
export const SEED_PHI: { readonly patients: readonly SeedColumn<SeedPatient>[]; readonly encounters: readonly SeedColumn<SeedEncounter>[] } = {
  patients: PHI_CATALOGUE.filter((s): s is Extract<Spec, { type: 'Patient' }> => s.type === 'Patient').map((s) => ({
    column: s.column,
    encrypted: s.encrypted,
    plainType: plainType(s),
    value: (p: SeedPatient) => asText(p[s.field]),
  })),
  encounters: PHI_CATALOGUE.filter((s): s is Extract<Spec, { type: 'Encounter' }> => s.type === 'Encounter').map((s) => ({
    column: s.column,
    encrypted: s.encrypted,
    plainType: plainType(s),
    value: (e: SeedEncounter) => asText(e[s.field]),
  })),
};

/** `INSERT INTO table (leading..., PHI columns..., trailing...) SELECT * FROM unnest(...)`, one array parameter per column. */
export function unnestInsert(table: string, leading: readonly [string, string][], phi: readonly SeedColumn<never>[], phiType: (c: SeedColumn<never>) => string, trailing: readonly [string, string][] = []): string {
  const columns: [string, string][] = [...leading, ...phi.map((c): [string, string] => [c.column, phiType(c)]), ...trailing];
  return `INSERT INTO ${table} (${columns.map(([c]) => c).join(', ')})
  SELECT * FROM unnest(${columns.map(([, type], i) => `$${i + 1}::${type}[]`).join(', ')})`;
}

const sealedType = (c: SeedColumn<never>): string => (c.encrypted ? 'bytea' : c.plainType);
const PATIENT_INSERT_SQL = unnestInsert('phigate.patients', [['id', 'uuid'], ['clinic_id', 'text']], SEED_PHI.patients, sealedType, [['mrn_bidx', 'bytea'], ['ssn_bidx', 'bytea']]);
const ENCOUNTER_INSERT_SQL = unnestInsert('phigate.encounters', [['id', 'uuid'], ['patient_id', 'uuid'], ['clinic_id', 'text']], SEED_PHI.encounters, sealedType);
const PATIENT_KEY_INSERT_SQL = `INSERT INTO phigate.patient_keys (patient_id, version, clinic_id, clinic_version, wrapped)
  SELECT p, 1, c, v, w FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::bytea[]) AS t(p, c, v, w)`;
const CARE_TEAM_INSERT_SQL = 'INSERT INTO phigate.care_team (patient_id, subject, clinic_id) SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[])';

/** Elements of a PostgreSQL array literal, as node-postgres writes them (lib/utils.js arrayString). */
export const arrayLiteral = {
  text(values: readonly (string | null)[]): string {
    let out = '{';
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (i) out += ',';
      out += v === null || v === undefined ? 'NULL' : `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
    }
    return `${out}}`;
  },
  bytea(values: readonly Buffer[]): string {
    let out = '{';
    for (let i = 0; i < values.length; i++) out += `${i ? ',' : ''}"\\\\x${values[i]!.toString('hex')}"`;
    return `${out}}`;
  },
};

/**
 * Seals a batch: every PHI value with AES-256-GCM under a new key of its patient (wrapped by the
 * clinic's current data key), bound to its table, column, row and both key versions (`sealField`,
 * which is what FieldCipher.encrypt calls), and the MRN and SSN
 * blind indexes (`blindIndex` over the normalised value, as lookups compute them). Synchronous and
 * free of I/O, so it runs as well in a worker thread as inline.
 */
export function sealBatch(keys: SeedKeys, batch: readonly SeedPatient[]): SealedBatch {
  const ids: string[] = [];
  const clinicIds: string[] = [];
  const mrnBidx: Buffer[] = [];
  const ssnBidx: Buffer[] = [];
  const phi: (Buffer | string)[][] = SEED_PHI.patients.map(() => []);
  const enc = { id: [] as string[], patientId: [] as string[], clinicId: [] as string[], phi: SEED_PHI.encounters.map((): (Buffer | string)[] => []) };
  const team = { patientId: [] as string[], subject: [] as string[], clinicId: [] as string[] };
  const wrappedKeys: Buffer[] = [];
  const clinicVersions: string[] = [];
  for (const p of batch) {
    const clinicKey = keys.data[p.clinicId];
    const mrnKey = keys.mrnIndex[p.clinicId];
    const ssnKey = keys.ssnIndex[p.clinicId];
    if (!clinicKey || !mrnKey || !ssnKey) throw new Error(`no seed keys for clinic ${p.clinicId}`);
    const { key, wrapped } = newPatientKey(clinicKey, p.id, 1);
    wrappedKeys.push(wrapped);
    clinicVersions.push(String(clinicKey.version));
    ids.push(p.id);
    clinicIds.push(p.clinicId);
    mrnBidx.push(blindIndex(mrnKey, normaliseMrn(p.mrn)));
    ssnBidx.push(blindIndex(ssnKey, normaliseSsn(p.ssn)));
    SEED_PHI.patients.forEach((c, i) => {
      const value = c.value(p);
      phi[i]!.push(c.encrypted ? sealField(key, { table: 'patients', column: c.column, rowId: p.id }, value) : value);
    });
    for (const e of p.encounters) {
      enc.id.push(e.id);
      enc.patientId.push(p.id);
      enc.clinicId.push(p.clinicId);
      SEED_PHI.encounters.forEach((c, i) => {
        const value = c.value(e);
        enc.phi[i]!.push(c.encrypted ? sealField(key, { table: 'encounters', column: c.column, rowId: e.id }, value) : value);
      });
    }
    for (const s of p.careTeam) {
      team.patientId.push(p.id);
      team.subject.push(s);
      team.clinicId.push(p.clinicId);
    }
    key.key.fill(0);
  }
  const { text, bytea } = arrayLiteral;
  // A column's values are all ciphertext or all plaintext, as its catalogue entry says.
  const column = (c: SeedColumn<never>, values: (Buffer | string)[]) => (c.encrypted ? bytea(values as Buffer[]) : text(values as string[]));
  return {
    patients: batch.length,
    patientParams: [text(ids), text(clinicIds), ...SEED_PHI.patients.map((c, i) => column(c, phi[i]!)), bytea(mrnBidx), bytea(ssnBidx)],
    encounterParams: [text(enc.id), text(enc.patientId), text(enc.clinicId), ...SEED_PHI.encounters.map((c, i) => column(c, enc.phi[i]!))],
    careTeamParams: [text(team.patientId), text(team.subject), text(team.clinicId)],
    patientKeyParams: [text(ids), text(clinicIds), text(clinicVersions), bytea(wrappedKeys)],
  };
}

/** Writes a sealed batch: one INSERT ... SELECT FROM unnest(...) per table. */
export async function insertSealed(client: pg.ClientBase, batch: SealedBatch): Promise<void> {
  await client.query(PATIENT_KEY_INSERT_SQL, batch.patientKeyParams as string[]);
  await client.query(PATIENT_INSERT_SQL, batch.patientParams as string[]);
  await client.query(ENCOUNTER_INSERT_SQL, batch.encounterParams as string[]);
  await client.query(CARE_TEAM_INSERT_SQL, batch.careTeamParams as string[]);
}

export async function insertClinics(client: pg.ClientBase, clinics: Dataset['clinics']): Promise<void> {
  await client.query(
    'INSERT INTO phigate.clinics (id, name) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (id) DO NOTHING',
    [clinics.map((c) => c.id), clinics.map((c) => c.name)],
  );
}

/**
 * Writes a data set with the migrator's connection in batches (one statement per table per batch).
 * The migrator of development is a superuser, which row security does not bind; the gateway
 * itself never connects that way. Values are sealed by `sealBatch` under the keyring's current
 * keys, as FieldCipher.encrypt would. The bench (bench/setup-db.ts, bench/seed-worker.ts) writes
 * large data sets with the same `sealBatch` and `insertSealed`, sealing in worker threads.
 */
export async function writeDataset(
  client: pg.ClientBase,
  keyring: Keyring,
  data: Dataset,
  opts: { batchSize?: number; onProgress?: (done: number, total: number) => void } = {},
): Promise<void> {
  const batchSize = opts.batchSize ?? 500;
  await insertClinics(client, data.clinics);
  await refuseRotatedIndexes(client, data.clinics.map((c) => c.id));
  const keys = await seedKeys(keyring, [...new Set(data.patients.map((p) => p.clinicId))]);
  const total = data.patients.length;
  for (let start = 0; start < total; start += batchSize) {
    await insertSealed(client, sealBatch(keys, data.patients.slice(start, start + batchSize)));
    opts.onProgress?.(Math.min(start + batchSize, total), total);
  }
}

/**
 * The seed computes blind indexes under version 1 (the root-derived keys) only: in a clinic whose
 * index keys have been rotated, or are rotating, its rows would not be found by lookups.
 */
async function refuseRotatedIndexes(client: pg.ClientBase, clinicIds: readonly string[]): Promise<void> {
  const { rows } = await client.query<{ clinic_id: string }>(
    'SELECT clinic_id FROM phigate.blind_index_versions WHERE clinic_id = ANY ($1::text[]) ORDER BY clinic_id LIMIT 1',
    [clinicIds],
  );
  if (rows[0]) throw new Error(`cannot seed clinic ${rows[0].clinic_id}: its blind-index keys have been rotated (keys rotate-index)`);
}
