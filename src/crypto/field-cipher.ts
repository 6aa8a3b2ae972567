import { openField, sealField, sealedUnder } from './envelope.ts';
import type { FieldAad } from './envelope.ts';
import type { Keyring, RowKey } from './keys/keyring.ts';

export interface FieldCipherStats {
  encrypts: number;
  decrypts: number;
  /** keyed by 'table.column' */
  decryptsByColumn: Map<string, number>;
}

/** Where a value lives and whose it is: every PHI value belongs to one patient and is sealed under that patient's key. */
export interface PatientFieldAad extends FieldAad {
  readonly patientId: string;
}

export interface FieldCipher {
  encrypt(scope: string, aad: PatientFieldAad, plaintext: string): Promise<Buffer>;
  /**
   * Synchronous when the key is cached (steady state), so a page of values costs no promise each.
   * `row`, the keys of the row the value was loaded with, lets the row's values share one key
   * lookup and a miss open the wrapped key the row's statement brought.
   */
  decrypt(scope: string, aad: PatientFieldAad, ciphertext: Buffer, row?: RowKey): string | Promise<string>;
  readonly stats: FieldCipherStats;
}

// The 'table.column' key of each column, made once per column rather than once per decryption.
const columnKeys = new Map<string, Map<string, string>>();
function columnKey(aad: FieldAad): string {
  let byColumn = columnKeys.get(aad.table);
  if (byColumn === undefined) columnKeys.set(aad.table, (byColumn = new Map()));
  let key = byColumn.get(aad.column);
  if (key === undefined) byColumn.set(aad.column, (key = `${aad.table}.${aad.column}`));
  return key;
}

/**
 * Field encryption for resolvers: new values under the patient's key wrapped by the clinic's
 * current key, old values under the versions recorded in their header (values sealed directly
 * under a clinic key, before per-patient keys, still open). Calls are counted on entry, before any key is fetched,
 * so a zero count proves a field was never even attempted.
 */
export function createFieldCipher(keyring: Keyring): FieldCipher {
  const stats: FieldCipherStats = { encrypts: 0, decrypts: 0, decryptsByColumn: new Map() };
  return {
    stats,
    async encrypt(scope, aad, plaintext) {
      stats.encrypts++;
      return sealField(await keyring.patientWriteKey(scope, aad.patientId), aad, plaintext);
    },
    decrypt(scope, aad, ciphertext, row) {
      stats.decrypts++;
      const column = columnKey(aad);
      stats.decryptsByColumn.set(column, (stats.decryptsByColumn.get(column) ?? 0) + 1);
      const under = sealedUnder(ciphertext);
      const key =
        under.patientVersion === null ? keyring.readKey(scope, under.version)
        : row === undefined ? keyring.patientReadKey(scope, aad.patientId, under.version, under.patientVersion)
        : keyring.rowReadKey(row, scope, aad.patientId, under.version, under.patientVersion);
      return key instanceof Promise ? key.then((k) => openField(k, aad, ciphertext, under)) : openField(key, aad, ciphertext, under);
    },
  };
}
