import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { blindIndex, normaliseSsn } from '../../src/crypto/blind-index.ts';
import { openField } from '../../src/crypto/envelope.ts';
import { openPatientKey } from '../../src/crypto/patient-key.ts';
import { phaseProgressBar, progressBar } from '../../src/cli/progress.ts';
import { generateDataset, patientsOf } from '../../src/seed/dataset.ts';
import { arrayLiteral, sealBatch, type SeedKeys } from '../../src/seed/write.ts';

const clinics = ['c-north', 'c-south', 'c-east'];
const keys: SeedKeys = {
  data: Object.fromEntries(clinics.map((c) => [c, { scope: c, version: 1, key: randomBytes(32) }])),
  mrnIndex: Object.fromEntries(clinics.map((c) => [c, randomBytes(32)])),
  ssnIndex: Object.fromEntries(clinics.map((c) => [c, randomBytes(32)])),
};
/** The elements of an array literal as sealBatch writes them (quoted, NULL, or bytea hex). */
function elements(literal: string): (string | null)[] {
  return [...literal.slice(1, -1).matchAll(/NULL|"((?:[^"\\]|\\.)*)"/g)].map((m) => (m[0] === 'NULL' ? null : m[1]!.replace(/\\(.)/g, '$1')));
}
const bytes = (literal: string) => elements(literal).map((e) => Buffer.from(e!.replace(/^\\x/, ''), 'hex'));

describe('synthetic data set', () => {
  it('streams the same patients generateDataset returns, for the same seed', () => {
    const all = generateDataset({ patients: 50, seed: 7, firstMrn: 3 }).patients;
    expect([...patientsOf({ patients: 50, seed: 7, firstMrn: 3 })]).toEqual(all);
    expect(generateDataset({ patients: 50, seed: 8 }).patients).not.toEqual(generateDataset({ patients: 50, seed: 7 }).patients);
  });
});

describe('sealBatch', () => {
  const patients = generateDataset({ patients: 6, seed: 1 }).patients;
  const batch = sealBatch(keys, patients);

  // Each patient's key, unwrapped from the batch's patient_keys rows with its clinic's key.
  const wrapped = bytes(batch.patientKeyParams[3]!);
  const patientKey = (id: string, clinicId: string) => openPatientKey(keys.data[clinicId]!, id, 1, wrapped[patients.findIndex((x) => x.id === id)]!);

  it('seals every PHI value under its patient key wrapped by the clinic key, bound to its table, column and row', () => {
    const [ids, clinicIds, mrn, ssn, , , , phone] = batch.patientParams;
    const p = patients.map((x, i) => ({ x, i }));
    expect(elements(ids!)).toEqual(patients.map((x) => x.id));
    expect(elements(clinicIds!)).toEqual(patients.map((x) => x.clinicId));
    expect(elements(batch.patientKeyParams[0]!)).toEqual(patients.map((x) => x.id));
    for (const { x, i } of p) {
      const key = patientKey(x.id, x.clinicId);
      // The clinic key alone opens nothing.
      expect(() => openField(keys.data[x.clinicId]!, { table: 'patients', column: 'mrn', rowId: x.id }, bytes(mrn!)[i]!)).toThrow();
      expect(openField(key, { table: 'patients', column: 'mrn', rowId: x.id }, bytes(mrn!)[i]!)).toBe(x.mrn);
      expect(openField(key, { table: 'patients', column: 'ssn', rowId: x.id }, bytes(ssn!)[i]!)).toBe(x.ssn);
      expect(openField(key, { table: 'patients', column: 'phone', rowId: x.id }, bytes(phone!)[i]!)).toBe(x.phone);
      // another row's binding does not open
      expect(() => openField(key, { table: 'patients', column: 'phone', rowId: patients[(i + 1) % 6]!.id }, bytes(phone!)[i]!)).toThrow();
    }
    const encIds = elements(batch.encounterParams[0]!);
    const notes = bytes(batch.encounterParams[7]!);
    const flat = patients.flatMap((x) => x.encounters.map((e) => ({ x, e })));
    expect(encIds).toEqual(flat.map((f) => f.e.id));
    flat.forEach(({ x, e }, i) => expect(openField(patientKey(x.id, x.clinicId), { table: 'encounters', column: 'notes', rowId: e.id }, notes[i]!)).toBe(e.notes));
    // An encounter's kind is PHI: sealed like its notes, nowhere in the batch in plaintext.
    const kinds = bytes(batch.encounterParams[4]!);
    flat.forEach(({ x, e }, i) => expect(openField(patientKey(x.id, x.clinicId), { table: 'encounters', column: 'kind', rowId: e.id }, kinds[i]!)).toBe(e.kind));
    for (const e of flat) expect(batch.encounterParams.join('')).not.toContain(e.e.kind);
  });

  it('gives every patient of a data set its own SSN (a clinic may not hold one twice)', () => {
    const ssns = generateDataset({ patients: 20_000, seed: 3 }).patients.map((x) => x.ssn);
    expect(new Set(ssns).size).toBe(ssns.length);
    for (const ssn of ssns) expect(ssn).toMatch(/^9\d\d-\d\d-\d{4}$/);
  });

  it('writes the SSN blind index lookups compute', () => {
    const ssnBidx = bytes(batch.patientParams.at(-1)!);
    patients.forEach((x, i) => expect(ssnBidx[i]).toEqual(blindIndex(keys.ssnIndex[x.clinicId]!, normaliseSsn(x.ssn))));
  });

  it('refuses a clinic it has no key for', () => {
    expect(() => sealBatch(keys, generateDataset({ patients: 1, seed: 1, clinics: [{ id: 'c-west', name: 'West' }] }).patients)).toThrow(/c-west/);
  });
});

describe('arrayLiteral', () => {
  it('quotes and escapes text as PostgreSQL reads it', () => {
    expect(arrayLiteral.text(['a', 'say "hi"', 'back\\slash', null, ''])).toBe('{"a","say \\"hi\\"","back\\\\slash",NULL,""}');
    expect(arrayLiteral.bytea([Buffer.from([0, 255])])).toBe('{"\\\\x00ff"}');
    expect(arrayLiteral.text([])).toBe('{}');
  });
});

describe('progressBar', () => {
  it('prints the rate and the time left, then the time taken', () => {
    const lines: string[] = [];
    let t = 0;
    const stream = { isTTY: false, write: (s: string) => lines.push(s) } as unknown as NodeJS.WriteStream;
    const bar = progressBar('seeding', stream, () => t);
    t = 10_000;
    bar(1000, 10_000);
    t = 100_000;
    bar(10_000, 10_000);
    expect(lines).toEqual(['seeding: 1000/10000 100/s ETA 1:30\n', 'seeding: 10000/10000 100/s in 1:40\n']);
  });
});

describe('phaseProgressBar', () => {
  it('counts its rate from its first report, not from when it was made', () => {
    const lines: string[] = [];
    let t = 0;
    const stream = { isTTY: false, write: (s: string) => lines.push(s) } as unknown as NodeJS.WriteStream;
    const bar = phaseProgressBar('listing', stream, () => t);
    t = 50_000;
    bar(0, 1000);
    t = 60_000;
    bar(1000, 1000);
    expect(lines).toEqual(['listing: 0/1000 -/s ETA ?\n', 'listing: 1000/1000 100/s in 0:10\n']);
  });
});
