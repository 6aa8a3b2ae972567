import { blindIndex, normaliseMrn, normaliseSsn, type BlindIndexColumn } from '../crypto/blind-index.ts';
import type { Keyring } from '../crypto/keys/keyring.ts';

const NORMALISE: Record<BlindIndexColumn, (v: string) => string> = {
  'patients.ssn': normaliseSsn,
  'patients.mrn': normaliseMrn,
};

/** The canonical form of an identifier; BAD_USER_INPUT naming the argument when it is not one. */
export const normaliseIdentifier = (column: BlindIndexColumn, raw: string): string => NORMALISE[column](raw);

/** The blind index of an identifier in one clinic (keys are per clinic, so one per clinic asked). */
export async function identifierIndex(keyring: Keyring, column: BlindIndexColumn, clinicId: string, normalised: string): Promise<Buffer> {
  return blindIndex(await keyring.blindIndexKey(column, clinicId), normalised);
}

/** Indexes of one normalised identifier across clinics, for lookups: the database compares, nothing is decrypted. */
export async function identifierIndexes(keyring: Keyring, column: BlindIndexColumn, clinics: readonly string[], normalised: string): Promise<Buffer[]> {
  return Promise.all(clinics.map((c) => identifierIndex(keyring, column, c, normalised)));
}

export { normaliseMrn, normaliseSsn };
