/**
 * What per-patient keys cost, per field, in this process (no database): `npx tsx bench/key-costs.ts`.
 * Before: a value sealed directly under the clinic's data key. After: under the patient's key,
 * itself wrapped by the clinic key; warm (patient key cached, the steady state) and cold (the
 * patient key unwrapped first: one AES-GCM open, plus its share of one batched database lookup,
 * not measured here). Median of 5 runs of N operations each.
 */
import { randomBytes } from 'node:crypto';
import { openField, sealField, type DataKey } from '../src/crypto/envelope.ts';
import { createFieldCipher } from '../src/crypto/field-cipher.ts';
import { createKeyring } from '../src/crypto/keys/keyring.ts';
import { createLocalKeyProvider } from '../src/crypto/keys/local.ts';
import { newPatientKey, openPatientKey } from '../src/crypto/patient-key.ts';
import type { PatientKeyRecord, WrappedKeyRecord } from '../src/crypto/keys/keyring.ts';

const N = 200_000;
const VALUE = 'Harper Quinn-Oakley, 42 Elm St'; // about 30 bytes, like most PHI fields
const PATIENT = '7f9c1e4a-0000-4000-8000-000000000001';
const aad = { table: 'patients', column: 'address', rowId: PATIENT, patientId: PATIENT };

function median(fn: () => void): number {
  const runs: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t = process.hrtime.bigint();
    fn();
    runs.push(Number(process.hrtime.bigint() - t) / 1000 / N);
  }
  return runs.sort((a, b) => a - b)[2]!;
}

// An in-memory key store: the keyring's own cache is what is measured, not a database.
const rows: WrappedKeyRecord[] = [];
const patientRows: PatientKeyRecord[] = [];
// Uses unbounded here: a million decryptions would otherwise (rightly) evict the key mid-measurement.
const keyring = createKeyring({
  cache: { maxUses: 4_000_000_000 },
  provider: createLocalKeyProvider(randomBytes(32)),
  store: {
    latest: async (purpose, scope) => rows.filter((r) => r.purpose === purpose && r.scope === scope).sort((a, b) => b.version - a.version)[0] ?? null,
    get: async (purpose, scope, version) => rows.find((r) => r.purpose === purpose && r.scope === scope && r.version === version) ?? null,
    insert: async (r) => (rows.push(r), true),
    latestPatientKey: async (id) => patientRows.filter((r) => r.patientId === id).sort((a, b) => b.version - a.version)[0] ?? null,
    patientKeys: async (refs) => patientRows.filter((r) => refs.some((x) => x.patientId === r.patientId && x.version === r.version)),
    insertPatientKey: async (r) => (patientRows.push(r), true),
    latestPatientKeys: async (ids) => ids.flatMap((id) => patientRows.filter((r) => r.patientId === id).sort((a, b) => b.version - a.version).slice(0, 1)),
    insertPatientKeys: async (rs) => (patientRows.push(...rs), new Set(rs.map((r) => r.patientId))),
  },
});
const cipher = createFieldCipher(keyring);

const cached = await keyring.writeKey('c-north');
const clinicKey: DataKey = { ...cached, key: Buffer.from(cached.key) };
const before = sealField(clinicKey, aad, VALUE);
const after = await cipher.encrypt('c-north', aad, VALUE);
const { wrapped } = newPatientKey(clinicKey, PATIENT, 1);

const decryptBefore = median(() => {
  for (let i = 0; i < N; i++) cipher.decrypt('c-north', aad, before);
});
const decryptAfter = median(() => {
  for (let i = 0; i < N; i++) cipher.decrypt('c-north', aad, after);
});
const openKey = median(() => {
  for (let i = 0; i < N; i++) openPatientKey(clinicKey, PATIENT, 1, wrapped);
});
const newKey = median(() => {
  for (let i = 0; i < N; i++) newPatientKey(clinicKey, PATIENT, 1);
});
const sealBefore = median(() => {
  for (let i = 0; i < N; i++) sealField(clinicKey, aad, VALUE);
});
const patientKey = await keyring.patientWriteKey('c-north', PATIENT);
const sealAfter = median(() => {
  for (let i = 0; i < N; i++) sealField(patientKey, aad, VALUE);
});
if (openField(patientKey, aad, after) !== VALUE) throw new Error('round trip failed');

const us = (x: number) => `${x.toFixed(2)} µs`;
console.log(`decrypt, clinic key (before)         ${us(decryptBefore)}`);
console.log(`decrypt, patient key cached (after)  ${us(decryptAfter)}`);
console.log(`unwrap a patient key (cold, once)    ${us(openKey)}`);
console.log(`encrypt, clinic key (before)         ${us(sealBefore)}`);
console.log(`encrypt, patient key (after)         ${us(sealAfter)}`);
console.log(`new patient key + wrap (per patient) ${us(newKey)}`);
