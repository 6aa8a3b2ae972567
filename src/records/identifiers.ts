import { normaliseMrn, normaliseSsn, type BlindIndexColumn } from '../crypto/blind-index.ts';
import type { Keyring } from '../crypto/keys/keyring.ts';

const NORMALISE: Record<BlindIndexColumn, (v: string) => string> = {
  'patients.ssn': normaliseSsn,
  'patients.mrn': normaliseMrn,
};

/** The canonical form of an identifier; BAD_USER_INPUT naming the argument when it is not one. */
export const normaliseIdentifier = (column: BlindIndexColumn, raw: string): string => NORMALISE[column](raw);

/** The blind index of an identifier in one clinic under one index key version. */
export async function identifierIndex(keyring: Keyring, column: BlindIndexColumn, clinicId: string, normalised: string, version: number): Promise<Buffer> {
  return keyring.blindIndexAt(column, clinicId, version, normalised);
}

/**
 * Indexes of one normalised identifier across clinics, for lookups: the database compares, nothing
 * is decrypted. Per clinic under its newest index key version and the one before: mrn_bidx and
 * ssn_bidx hold the older one's digest while a rotation runs and the newer one's once it has
 * finished, so one query over both finds the row in every phase, whichever of the two this
 * replica has yet learnt of (src/records/index-rotation.ts).
 */
export async function identifierIndexes(keyring: Keyring, column: BlindIndexColumn, clinics: readonly string[], normalised: string): Promise<Buffer[]> {
  const perClinic = await Promise.all(
    clinics.map(async (c) => {
      const latest = await keyring.latestIndexVersion(c);
      const versions = latest > 1 ? [latest, latest - 1] : [latest];
      return Promise.all(versions.map((v) => identifierIndex(keyring, column, c, normalised, v)));
    }),
  );
  return perClinic.flat();
}

export { normaliseMrn, normaliseSsn };
