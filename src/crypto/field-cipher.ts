import { aadColumn, clinicVersionOf, headerBytesOf, openAt, patientVersionOf, sealField, type AadColumn, type FieldAad, type PatientKey } from './envelope.ts';
import type { Keyring, RowKey } from './keys/keyring.ts';

export interface FieldCipherStats {
  encrypts: number;
  decrypts: number;
  /** keyed by 'table.column' */
  readonly decryptsByColumn: Map<string, number>;
}

/** Where a value lives and whose it is: every PHI value belongs to one patient and is sealed under that patient's key. */
export interface PatientFieldAad extends FieldAad {
  readonly patientId: string;
}

export interface FieldCipher {
  encrypt(scope: string, aad: PatientFieldAad, plaintext: string): Promise<Buffer>;
  /** Seals under a key the caller holds (a new patient's, Keyring.firstPatientKey), which names the patient. */
  sealWith(key: PatientKey, aad: FieldAad, plaintext: string): Buffer;
  /**
   * Synchronous when the key is cached (steady state), so a page of values costs no promise each.
   * `row`, the keys of the row the value was loaded with, lets the row's values share one key
   * lookup and a miss open the wrapped key the row's statement brought.
   */
  decrypt(scope: string, aad: PatientFieldAad, ciphertext: Buffer, row?: RowKey): string | Promise<string>;
  /**
   * decrypt() of the value of `table`.`column` in row `rowId` of patient `patientId`, without an
   * AAD object: the page's path (src/records/read-phi.ts), which then makes one object per value, its event.
   */
  decryptAt(scope: string, table: string, column: string, rowId: string, patientId: string, ciphertext: Buffer, row?: RowKey): string | Promise<string>;
  readonly stats: FieldCipherStats;
}

/** A column as one cipher counts and opens it: its decryptions, and the AAD parts its values share. */
interface Column {
  readonly name: string;
  readonly aad: AadColumn;
  decrypts: number;
}

/**
 * Counts per column kept on each column, so that a value costs two lookups (table, column) rather
 * than a name's lookup and a map's update; `decryptsByColumn` brings the map up to date when read.
 */
class Stats implements FieldCipherStats {
  encrypts = 0;
  decrypts = 0;
  readonly #counted = new Map<string, number>();
  readonly columns = new Map<string, Map<string, Column>>();
  get decryptsByColumn(): Map<string, number> {
    for (const byColumn of this.columns.values()) for (const c of byColumn.values()) if (c.decrypts > 0) this.#counted.set(c.name, c.decrypts);
    return this.#counted;
  }
  column(table: string, column: string): Column {
    let byColumn = this.columns.get(table);
    if (byColumn === undefined) this.columns.set(table, (byColumn = new Map()));
    let found = byColumn.get(column);
    if (found === undefined) byColumn.set(column, (found = { name: `${table}.${column}`, aad: aadColumn(table, column), decrypts: 0 }));
    return found;
  }
}

/**
 * Field encryption for resolvers: new values under the patient's key wrapped by the clinic's
 * current key, old values under the versions recorded in their header (values sealed directly
 * under a clinic key, before per-patient keys, still open). Calls are counted on entry, before any key is fetched,
 * so a zero count proves a field was never even attempted.
 */
export function createFieldCipher(keyring: Keyring): FieldCipher {
  const stats = new Stats();
  const decryptAt = (scope: string, table: string, column: string, rowId: string, patientId: string, ciphertext: Buffer, row?: RowKey): string | Promise<string> => {
    stats.decrypts++;
    const counted = stats.column(table, column);
    counted.decrypts++;
    const headerBytes = headerBytesOf(ciphertext);
    const version = clinicVersionOf(ciphertext);
    const patientVersion = patientVersionOf(ciphertext, headerBytes);
    const key =
      patientVersion === null ? keyring.readKey(scope, version)
      : row === undefined ? keyring.patientReadKey(scope, patientId, version, patientVersion)
      : keyring.rowReadKey(row, scope, patientId, version, patientVersion);
    return key instanceof Promise
      ? key.then((k) => openAt(k, counted.aad, rowId, ciphertext, version, patientVersion))
      : openAt(key, counted.aad, rowId, ciphertext, version, patientVersion);
  };
  return {
    stats,
    async encrypt(scope, aad, plaintext) {
      stats.encrypts++;
      return sealField(await keyring.patientWriteKey(scope, aad.patientId), aad, plaintext);
    },
    sealWith(key, aad, plaintext) {
      stats.encrypts++;
      return sealField(key, aad, plaintext);
    },
    decrypt: (scope, aad, ciphertext, row) => decryptAt(scope, aad.table, aad.column, aad.rowId, aad.patientId, ciphertext, row),
    decryptAt,
  };
}
